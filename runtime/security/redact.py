"""URLs as they may be shown: credentials replaced by ``***``. Used wherever a URL is printed,
logged or put in an error message, so a Redis password never reaches a terminal or a log."""

from __future__ import annotations

import re

# scheme://userinfo@ — greedy up to the last '@' of the authority, as a password may hold '@'
_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)([^/?#\s]*)@")
_SECRET_PARAMETER = re.compile(r"([?&](?:password|passwd|pass|token|secret|api_key|key)=)[^&#]*", re.IGNORECASE)


def redact_url(url: str) -> str:
    """``redis://:secret@host:6379/0`` becomes ``redis://:***@host:6379/0``; a user name stays,
    a lone credential (``https://token@host``) and secret query parameters are hidden too.
    Works on a text that holds URLs as well (an error message), hiding each one's secret."""

    def hide(match: re.Match[str]) -> str:
        user, colon, _ = match.group(2).partition(":")
        return f"{match.group(1)}{user}:***@" if colon else f"{match.group(1)}***@"

    return _SECRET_PARAMETER.sub(r"\1***", _USERINFO.sub(hide, url))
