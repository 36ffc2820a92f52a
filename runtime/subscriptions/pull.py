"""Pull delivery: a subscription is a Redis stream with one consumer group.

``pull`` first re-delivers events that were handed out but not acknowledged within the
visibility timeout (XAUTOCLAIM), then reads new ones, waiting up to ``wait_ms``. Acks are
idempotent: acking twice, or acking an unknown id, changes nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import Any

import orjson
import redis
import redis.asyncio as aioredis

from runtime import keys
from runtime.errors import InputError
from runtime.log.streams import entry_id_key, text

MAX_ACK_IDS = 10_000  # ids in one ack
_ENTRY_ID = re.compile(r"^[0-9]{1,20}-[0-9]{1,20}$")
_U64 = 2**64 - 1


def _valid_id(entry_id: object) -> bool:
    """A Redis stream entry id ``<ms>-<seq>``, each part within 64 bits: anything else (a
    number, a list, 10,000 digits) is the caller's mistake, never a Redis error."""
    if not isinstance(entry_id, str) or _ENTRY_ID.match(entry_id) is None:
        return False
    head, _, tail = entry_id.partition("-")
    return int(head) <= _U64 and int(tail) <= _U64


class SubscriptionReader:
    def __init__(self, client: redis.Redis, *, visibility_timeout_ms: int) -> None:
        self._redis = client
        self._visibility_ms = visibility_timeout_ms

    def pull(self, name: str, *, max_events: int, wait_ms: int, consumer: str = "default") -> dict[str, Any]:
        stream = keys.subscription_stream(name)
        _, claimed, _ = self._redis.xautoclaim(*self._claim_args(stream, consumer, max_events))
        items = _entries(claimed)
        if len(items) < max_events:
            reply = self._redis.xreadgroup(*_read_args(stream, consumer, max_events - len(items), items, wait_ms))
            items += [item for _, fresh in reply or [] for item in _entries(fresh)]
        return _answer(items)

    async def pull_async(
        self, client: aioredis.Redis, name: str, *, max_events: int, wait_ms: int, consumer: str = "default"
    ) -> dict[str, Any]:
        """:meth:`pull` on an asyncio client: a long poll waits on the event loop, not in a
        thread, so waiting subscribers cannot take the threads ingestion needs."""
        stream = keys.subscription_stream(name)
        _, claimed, _ = await client.xautoclaim(*self._claim_args(stream, consumer, max_events))
        items = _entries(claimed)
        if len(items) < max_events:
            reply = await client.xreadgroup(*_read_args(stream, consumer, max_events - len(items), items, wait_ms))
            items += [item for _, fresh in reply or [] for item in _entries(fresh)]
        return _answer(items)

    def _claim_args(self, stream: str, consumer: str, count: int) -> tuple[Any, ...]:
        return stream, keys.SUBSCRIPTION_GROUP, consumer, self._visibility_ms, "0-0", count

    def ack(self, name: str, *, ack_ids: list[str] | None = None, cursor: str | None = None) -> int:
        """Acknowledge ids, or everything delivered up to and including ``cursor``."""
        stream = keys.subscription_stream(name)
        if ack_ids is not None and (not isinstance(ack_ids, list) or len(ack_ids) > MAX_ACK_IDS):
            raise InputError(f"ack_ids must be a list of at most {MAX_ACK_IDS} ack ids", reason="invalid_ack_ids")
        ids = list(ack_ids or [])
        for entry_id in ids + ([cursor] if cursor is not None else []):
            if not _valid_id(entry_id):
                raise InputError(f"ack id {entry_id!r:.60} is not of the form '<ms>-<seq>'", reason="invalid_ack_id")
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


def _entries(raw: list[Any]) -> list[tuple[Any, Any]]:
    return [(entry_id, fields) for entry_id, fields in raw if fields]  # trimmed entries come back empty


def _read_args(stream: str, consumer: str, count: int, have: list[Any], wait_ms: int) -> tuple[Any, ...]:
    block = None if have or wait_ms <= 0 else wait_ms
    return keys.SUBSCRIPTION_GROUP, consumer, {stream: ">"}, count, block


def _answer(items: list[tuple[Any, Any]]) -> dict[str, Any]:
    events = []
    for entry_id, fields in items:
        event = orjson.loads(fields[b"e"])
        event["ack_id"] = text(entry_id)
        events.append(event)
    cursor = max((e["ack_id"] for e in events), key=entry_id_key, default=None)
    return {"events": events, "cursor": cursor}


def token_matches(doc: dict[str, Any], credential: str) -> bool:
    """Whether ``credential`` is the subscription's own subscriber token (constant time)."""
    expected = doc.get("token_sha256")
    given = hashlib.sha256(credential.encode()).hexdigest()
    return expected is not None and hmac.compare_digest(given, expected)


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


def check_entry_id(entry_id: object, what: str) -> str:
    """``entry_id`` if it is a stream entry id, else InputError (``invalid_event_id``)."""
    if not _valid_id(entry_id):
        raise InputError(f"{what} {entry_id!r:.60} is not of the form '<ms>-<seq>'", reason="invalid_event_id")
    return entry_id  # type: ignore[return-value]  # _valid_id checked it is a str
