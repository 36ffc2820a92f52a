"""Dead letters: events a webhook or channel receiver never took, each with its last error.

One Redis stream per destination (``<stream>:dead``). Replay puts events back into the
destination's stream, where they are delivered again with the same ``webhook-id``.
"""

from __future__ import annotations

from typing import Any

import orjson
import redis

from runtime import keys
from runtime.log.streams import text
from runtime.subscriptions.pull import check_entry_id


def _entry(entry_id: Any, fields: dict[bytes, bytes]) -> dict[str, Any]:
    status = text(fields.get(b"status", b""))
    return {
        "id": text(entry_id),
        "event": orjson.loads(fields[b"e"]),
        "status": int(status) if status else None,
        "error": text(fields.get(b"error", b"")),
        "attempts": int(fields.get(b"attempts", b"0")),
        "at": int(fields.get(b"at", b"0")),
    }


def list_dead(client: redis.Redis, stream: str, *, limit: int = 100, before: str | None = None) -> dict[str, Any]:
    """Newest first; ``before`` pages back from an id."""
    dead = keys.deadletters(stream)
    top = f"({check_entry_id(before, 'before')}" if before else "+"
    pipe = client.pipeline(transaction=True)  # items and total from the same moment
    pipe.xrevrange(dead, max=top, min="-", count=limit)
    pipe.xlen(dead)
    entries, total = pipe.execute()
    return {"items": [_entry(eid, _fields(f)) for eid, f in entries], "total": int(total)}


def _fields(fields: dict[bytes, bytes] | list[bytes]) -> dict[bytes, bytes]:
    """A stream entry's fields. redis-py's cluster client returns the entries read in a
    transaction unparsed (flat name, value lists; seen with redis-py 8.1)."""
    return fields if isinstance(fields, dict) else dict(zip(fields[0::2], fields[1::2], strict=True))


def replay_dead(client: redis.Redis, stream: str, *, ids: list[str] | None = None, limit: int = 10_000) -> int:
    """Put dead letters (these ids, or the oldest ``limit``) back into the destination's stream,
    atomically: each event is either still dead or queued again, never both or neither."""
    dead = keys.deadletters(stream)
    if ids is None:
        entries = client.xrange(dead, min="-", max="+", count=limit)
    else:
        pipe = client.pipeline(transaction=False)
        for entry_id in ids:
            pipe.xrange(dead, min=check_entry_id(entry_id, "dead letter id"), max=entry_id, count=1)
        entries = [e for found in pipe.execute() for e in found]
    if not entries:
        return 0
    pipe = client.pipeline(transaction=True)
    for entry_id, fields in entries:
        pipe.xadd(stream, {"e": fields[b"e"]})
        pipe.xdel(dead, entry_id)
    pipe.execute()
    return len(entries)


def delivery_status(client: redis.Redis, stream: str) -> dict[str, Any]:
    """Backlog, dead letters and whether delivery is disabled (after a 410)."""
    pipe = client.pipeline(transaction=False)
    pipe.xlen(keys.deadletters(stream))
    pipe.hgetall(keys.delivery_state(stream))
    dead, state = pipe.execute()
    disabled = bool(state.get(b"disabled"))
    return {
        "dead_letters": int(dead),
        "disabled": disabled,
        "disabled_reason": text(state[b"reason"]) if disabled and b"reason" in state else None,
    }
