"""Signed console session cookies: who signed in, with which role, until when.

A cookie reads ``<base64url(json)>.<hex HMAC-SHA256>``, keyed by a key derived from the
server secret, so it cannot be forged or altered without it. It never holds the token itself:
only the token's id, so the server can refuse the session as soon as the token is revoked.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass

COOKIE = "esp_console"
LANG_COOKIE = "esp_lang"
TTL_S = 8 * 3600


@dataclass(frozen=True, slots=True)
class Session:
    name: str
    role: str
    token_id: str
    expires_ms: int


def _key(secret: bytes) -> bytes:
    return hmac.new(secret, b"esp-console-session", hashlib.sha256).digest()


def _mac(secret: bytes, text: str) -> str:
    return hmac.new(_key(secret), text.encode(), hashlib.sha256).hexdigest()


def sign(secret: bytes, session: Session) -> str:
    body = json.dumps(
        {"n": session.name, "r": session.role, "t": session.token_id, "e": session.expires_ms}, separators=(",", ":")
    )
    text = base64.urlsafe_b64encode(body.encode()).decode().rstrip("=")
    return f"{text}.{_mac(secret, text)}"


def verify(secret: bytes, cookie: str | None, now_ms: int) -> Session | None:
    """The session of a genuine, unexpired cookie, else None."""
    if not cookie or cookie.count(".") != 1:
        return None
    text, mac = cookie.split(".")
    if not hmac.compare_digest(mac, _mac(secret, text)):
        return None
    try:
        body = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        session = Session(str(body["n"]), str(body["r"]), str(body["t"]), int(body["e"]))
    except (ValueError, KeyError, TypeError):
        return None
    return session if session.expires_ms > now_ms else None


def csrf_token(secret: bytes, cookie: str) -> str:
    """The token every console form carries, bound to the session cookie."""
    return _mac(secret, "csrf:" + cookie)[:32]


def token_id(token: str) -> str:
    """The id part of an operator token ``esp_<id>_<secret>`` (empty if it has no such shape)."""
    parts = token.split("_")
    return parts[1] if len(parts) >= 3 and parts[0] == "esp" else ""
