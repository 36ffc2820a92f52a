"""The audit trail: who changed what, when and from where.

Every config change (with the diff between versions), token change, opt-out, consent and
identity write, replay and campaign submission is one entry of an append-only Redis stream
(trimmed only by age of position, past ``audit_maxlen`` entries). Records carry names, counts
and diffs of public views, never a secret: config diffs are computed on the documents as the
API shows them (keys and tokens hashed, signing secrets redacted).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import redis

from runtime import keys
from runtime.errors import InputError
from runtime.security.tokens import Principal

MAX_DIFF_CHANGES = 200  # a diff longer than this is summarised (the history keeps the versions)
ACTIONS = (
    "config.put",
    "config.delete",
    "token.create",
    "token.revoke",
    "optout.put",
    "optout.delete",
    "consent.put",
    "identity.put",
    "profile.put",
    "quarantine.replay",
    "deadletter.replay",
    "campaign.submit",
)


class AuditLog:
    def __init__(self, client: redis.Redis, *, maxlen: int = 1_000_000) -> None:
        self._redis = client
        self._maxlen = maxlen

    def record(
        self, who: Principal, action: str, target: str, *, remote: str | None = None, detail: Any = None
    ) -> None:
        """Append one record; ``detail`` must be JSON-serialisable and hold no secret."""
        assert action in ACTIONS, action
        fields = {
            "who": who.name,
            "role": who.role,
            "action": action,
            "target": target,
            "remote": remote or "",
            "detail": _text(json.dumps(detail, sort_keys=True, default=str, ensure_ascii=False)),
        }
        self._redis.xadd(keys.AUDIT, fields, maxlen=self._maxlen, approximate=True)

    def list(
        self,
        *,
        action: str | None = None,
        who: str | None = None,
        target: str | None = None,
        since_ms: int | None = None,
        limit: int = 100,
        before: str | None = None,
    ) -> dict[str, Any]:
        """Newest first, filtered; ``next`` is the ``before`` of the following page."""
        items: list[dict[str, Any]] = []
        cursor = before
        for entry_id, fields in self._scan(before):
            cursor = entry_id
            if since_ms is not None and int(entry_id.split("-")[0]) < since_ms:
                cursor = None
                break
            item = _item(entry_id, fields)
            if _wanted(item, action=action, who=who, target=target):
                items.append(item)
                if len(items) >= limit:
                    break
        else:
            cursor = None
        return {"items": items, "next": cursor}

    def _scan(self, before: str | None) -> Iterator[tuple[str, dict[bytes, bytes]]]:
        top = f"({before}" if before else "+"
        if before and not _valid_id(before):
            raise InputError(f"before {before!r} is not an audit record id ('<ms>-<seq>')", reason="invalid_cursor")
        while True:
            page = self._redis.xrevrange(keys.AUDIT, max=top, min="-", count=500)
            if not page:
                return
            for raw_id, fields in page:
                yield raw_id.decode(), fields
            top = f"({page[-1][0].decode()}"


def _valid_id(value: str) -> bool:
    """A stream entry id Redis accepts: both parts decimal and below 2^64 (past that, Redis
    refuses the command, which would read as the store being down)."""
    ms, _, seq = value.partition("-")
    return ms.isascii() and ms.isdigit() and seq.isascii() and seq.isdigit() and max(int(ms), int(seq)) < 2**64


def _item(entry_id: str, fields: dict[bytes, bytes]) -> dict[str, Any]:
    text = {k.decode(): v.decode() for k, v in fields.items()}
    return {
        "id": entry_id,
        "at": int(entry_id.split("-")[0]),
        "who": text["who"],
        "role": text["role"],
        "action": text["action"],
        "target": text["target"],
        "remote": text["remote"] or None,
        "detail": json.loads(text["detail"]),
    }


def _wanted(item: dict[str, Any], *, action: str | None, who: str | None, target: str | None) -> bool:
    return (
        (action is None or item["action"] == action or item["action"].startswith(f"{action}."))
        and (who is None or item["who"] == who)
        and (target is None or item["target"] == target or item["target"].startswith(f"{target}/"))
    )


def diff(before: Any, after: Any, path: str = "") -> list[dict[str, Any]]:
    """The leaf-level changes from ``before`` to ``after`` (``{path, from, to}``; a missing side
    is absent), in path order; bounded to :data:`MAX_DIFF_CHANGES`."""
    changes: list[dict[str, Any]] = []
    _diff(before, after, path, changes)
    if len(changes) > MAX_DIFF_CHANGES:
        return [*changes[:MAX_DIFF_CHANGES], {"path": "…", "omitted": len(changes) - MAX_DIFF_CHANGES}]
    return changes


_MISSING = object()


def _diff(before: Any, after: Any, path: str, out: list[dict[str, Any]]) -> None:
    if isinstance(before, dict) and isinstance(after, dict):
        for key in sorted(set(before) | set(after), key=str):
            _diff(before.get(key, _MISSING), after.get(key, _MISSING), f"{path}.{key}" if path else str(key), out)
        return
    if before == after:
        return
    change: dict[str, Any] = {"path": path or "."}
    if before is not _MISSING:
        change["from"] = before
    if after is not _MISSING:
        change["to"] = after
    out.append(change)


def _text(encoded: str) -> str:
    """The detail as valid Unicode: a lone surrogate that reached a request's body (and so the
    record) becomes '?', so that reading the log back can never fail on it."""
    return encoded.encode("utf-8", "replace").decode("utf-8")
