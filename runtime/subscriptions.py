"""Pull delivery: a subscription is a Redis stream with one consumer group.

``pull`` first re-delivers events that were handed out but not acknowledged within the
visibility timeout (XAUTOCLAIM), then reads new ones, waiting up to ``wait_ms``. Acks are
idempotent: acking twice, or acking an unknown id, changes nothing.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import orjson
import redis

from runtime import keys
from runtime.errors import InputError, NotFound
from runtime.streams import entry_id_key, text


def _valid_id(entry_id: str) -> bool:
    head, _, tail = entry_id.partition("-")
    return head.isdigit() and tail.isdigit()


class SubscriptionReader:
    def __init__(self, client: redis.Redis, *, visibility_timeout_ms: int) -> None:
        self._redis = client
        self._visibility_ms = visibility_timeout_ms

    def pull(self, name: str, *, max_events: int, wait_ms: int, consumer: str = "default") -> dict[str, Any]:
        stream = keys.subscription_stream(name)
        _, claimed, _ = self._redis.xautoclaim(
            stream, keys.SUBSCRIPTION_GROUP, consumer, self._visibility_ms, start_id="0-0", count=max_events
        )
        items = [(eid, f) for eid, f in claimed if f]
        if len(items) < max_events:
            reply = self._redis.xreadgroup(
                keys.SUBSCRIPTION_GROUP,
                consumer,
                {stream: ">"},
                count=max_events - len(items),
                block=None if items or wait_ms <= 0 else wait_ms,
            )
            for _, fresh in reply or []:
                items += [(eid, f) for eid, f in fresh if f]
        events = []
        for entry_id, fields in items:
            event = orjson.loads(fields[b"e"])
            event["ack_id"] = text(entry_id)
            events.append(event)
        cursor = max((e["ack_id"] for e in events), key=entry_id_key, default=None)
        return {"events": events, "cursor": cursor}

    def ack(self, name: str, *, ack_ids: list[str] | None = None, cursor: str | None = None) -> int:
        """Acknowledge ids, or everything delivered up to and including ``cursor``."""
        stream = keys.subscription_stream(name)
        ids = list(ack_ids or [])
        for entry_id in ids + ([cursor] if cursor else []):
            if not _valid_id(entry_id):
                raise InputError(f"ack id {entry_id!r} is not of the form '<ms>-<seq>'", reason="invalid_ack_id")
        if cursor:
            pending = self._redis.xpending_range(stream, keys.SUBSCRIPTION_GROUP, min="-", max=cursor, count=100_000)
            ids += [text(p["message_id"]) for p in pending]
        if not ids:
            return 0
        return int(self._redis.xack(stream, keys.SUBSCRIPTION_GROUP, *ids))

    def backlog(self, name: str) -> dict[str, int]:
        groups = self._redis.xinfo_groups(keys.subscription_stream(name))
        group = next((g for g in groups if text(g["name"]) == keys.SUBSCRIPTION_GROUP), None)
        if group is None:
            return {"pending": 0, "lag": 0}
        return {"pending": int(group["pending"]), "lag": int(group.get("lag") or 0)}


def authorize(doc: dict[str, Any], authorization: str | None) -> None:
    """A subscription with a token answers only to it; any other caller (no token, another
    subscriber's) is told the subscription does not exist, as if it did not (404)."""
    expected = doc.get("token_sha256")
    if expected is None:
        return
    scheme, _, token = (authorization or "").partition(" ")
    given = hashlib.sha256(token.strip().encode()).hexdigest() if scheme.lower() == "bearer" and token else ""
    if not hmac.compare_digest(given, expected):
        raise NotFound(f"no subscription named {doc.get('name')!r}")


def project(event: dict[str, Any], fields: list[str] | tuple[str, ...] | None) -> dict[str, Any]:
    """Only the listed dotted paths of ``event`` (missing ones are left out): a subscription's
    ``fields``."""
    if not fields:
        return event
    out: dict[str, Any] = {}
    for path in fields:
        value: Any = event
        parts = path.split(".")
        for part in parts:
            if not isinstance(value, dict) or part not in value:
                break
            value = value[part]
        else:
            node = out
            for part in parts[:-1]:
                node = node.setdefault(part, {})
            node[parts[-1]] = value
    return out


def check_entry_id(entry_id: str, what: str) -> str:
    if not _valid_id(entry_id):
        raise InputError(f"{what} {entry_id!r} is not of the form '<ms>-<seq>'", reason="invalid_event_id")
    return entry_id
