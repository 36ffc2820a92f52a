"""Server-sent events for subscriptions of mode ``sse``.

Each event goes out with ``id:`` = its stream entry id. A client that reconnects with
``Last-Event-ID`` (browsers' EventSource do this themselves) resumes right after it: the stream
keeps the events, so there is no gap and no duplicate. Without it, streaming starts where the
subscription last left off (the consumer group's position, moved as events are sent), or at
the beginning of what the subscription has kept.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from typing import Any

import orjson
import redis
import redis.asyncio as aioredis

from runtime import keys
from runtime.log.streams import text
from runtime.subscriptions.pull import project

logger = logging.getLogger(__name__)

BATCH = 500


_LINE_BREAKING = re.compile("[\x00-\x1f\x7f]")  # CR and LF end an SSE line; no control character is kept


def field(value: str) -> bytes:
    """One line's value: control characters (CR and LF above all) become spaces, so a value
    can never end its line and forge ``data:`` or ``id:`` lines."""
    return _LINE_BREAKING.sub(" ", value).encode("utf-8", "replace")


def frame(entry_id: str, kind: str, event: dict[str, Any]) -> bytes:
    """One SSE event. ``data`` is one line: orjson escapes CR and LF inside strings."""
    return b"id: %s\nevent: %s\ndata: %s\n\n" % (field(entry_id), field(kind), orjson.dumps(event))


async def start_position(client: aioredis.Redis, stream: str) -> str:
    groups = await client.xinfo_groups(stream)
    group = next((g for g in groups if text(g["name"]) == keys.SUBSCRIPTION_GROUP), None)
    return text(group["last-delivered-id"]) if group else "0-0"


async def events(
    client: aioredis.Redis, stream: str, position: str, fields: list[str] | None, *, keepalive_s: float
) -> AsyncIterator[bytes]:
    """The stream's frames; a ``: keep-alive`` comment after each ``keepalive_s`` without events
    (``ESP_SSE_KEEPALIVE_S``)."""
    yield b"retry: 2000\n\n"
    block_ms = int(keepalive_s * 1000)
    sent: str | None = None  # the newest id sent and not yet recorded as where a plain reconnect resumes
    while True:
        try:
            reply = await _next(client, stream, position, block_ms, sent)
        except redis.RedisError:
            logger.warning("SSE stream %s ends: the store is unavailable; the client resumes from its last id", stream)
            return  # the response has started: end it cleanly, EventSource reconnects with Last-Event-ID
        sent = None
        if not reply:
            yield b": keep-alive\n\n"
            continue
        chunks = []
        for entry_id, entry in reply[0][1]:
            position = text(entry_id)
            if not entry:
                continue
            event: dict[str, Any] = project(orjson.loads(entry[b"e"]), fields)
            chunks.append(frame(position, str(event.get("type") or "message"), event))
        yield b"".join(chunks)
        sent = position


async def _next(client: aioredis.Redis, stream: str, position: str, block_ms: int, sent: str | None) -> Any:
    """The entries after ``position``, waiting up to ``block_ms`` for one. ``sent`` (the newest
    id sent) is first recorded as the subscription's position, in the same round trip: on a
    replica busy with ingestion every round trip waits for its event loop, and a second one per
    chunk doubled the wait between an output's publication and its frame. The position only
    says where a plain reconnect resumes, so a failure to move it does not end the stream."""
    if sent is None:
        return await client.xread({stream: position}, count=BATCH, block=block_ms)
    pipe = client.pipeline(transaction=False)
    pipe.xgroup_setid(stream, keys.SUBSCRIPTION_GROUP, sent)
    pipe.xread({stream: position}, count=BATCH, block=block_ms)
    _, reply = await pipe.execute(raise_on_error=False)
    if isinstance(reply, Exception):
        raise reply
    return reply
