"""Server-sent events for subscriptions of mode ``sse``, on ``sse-starlette``.

Each event goes out with ``id:`` = its stream entry id. A client that reconnects with
``Last-Event-ID`` (browsers' EventSource do this themselves) resumes right after it: the stream
keeps the events, so there is no gap and no duplicate. Without it, streaming starts where the
subscription last left off (the consumer group's position, moved as events are sent), or at
the beginning of what the subscription has kept.

``sse-starlette``'s :class:`EventSourceResponse` does the response's life: a ``: keep-alive``
comment every :data:`KEEPALIVE_S` (so proxies keep an idle stream open), noticing a client that
went away, and closing the body iterator so whatever it holds is released. This module decides
what goes into the stream.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from typing import Any

import orjson
import redis
import redis.asyncio as aioredis
from sse_starlette import EventSourceResponse, ServerSentEvent

from runtime import keys
from runtime.log.streams import text
from runtime.subscriptions.pull import project

logger = logging.getLogger(__name__)

BATCH = 500
KEEPALIVE_S = 15.0  # also how long one read blocks in Redis
RETRY_MS = 2000  # how long EventSource waits before it reconnects
SEP = "\n"  # line ends: LF, as ESP always sent (the library's default is CRLF)
HEADERS = {"Cache-Control": "no-cache"}  # the library adds X-Accel-Buffering: no

_LINE_BREAKING = re.compile("[\x00-\x1f\x7f]")  # CR and LF end an SSE line; no control character is kept


def field(value: str) -> str:
    """One line's value: control characters (CR and LF above all) become spaces, so a value
    can never end its line and forge ``data:`` or ``id:`` lines. The library only drops CR
    and LF from ``id`` and ``event``; a NUL or other control character would stay."""
    return _LINE_BREAKING.sub(" ", value)


def frame(entry_id: str, kind: str, event: dict[str, Any]) -> bytes:
    """One SSE event. ``data`` is one line: orjson escapes CR and LF inside strings."""
    data = orjson.dumps(event).decode()
    return ServerSentEvent(data, id=field(entry_id), event=field(kind), sep=SEP).encode()


def keep_alive() -> ServerSentEvent:
    """The comment sent every :data:`KEEPALIVE_S`; EventSource ignores it."""
    return ServerSentEvent(comment="keep-alive", sep=SEP)


def response(chunks: AsyncIterator[bytes], *, keepalive_s: float = KEEPALIVE_S) -> EventSourceResponse:
    """The ``text/event-stream`` answer streaming ``chunks`` (from :func:`events`)."""
    return EventSourceResponse(chunks, headers=HEADERS, ping=keepalive_s, ping_message_factory=keep_alive, sep=SEP)


async def start_position(client: aioredis.Redis, stream: str) -> str:
    """Where a stream without ``Last-Event-ID`` starts: the subscription's group position."""
    groups = await client.xinfo_groups(stream)
    group = next((g for g in groups if text(g["name"]) == keys.SUBSCRIPTION_GROUP), None)
    return text(group["last-delivered-id"]) if group else "0-0"


async def events(
    client: aioredis.Redis, stream: str, position: str, fields: list[str] | None, *, block_s: float = KEEPALIVE_S
) -> AsyncIterator[bytes]:
    """The stream's bytes from after ``position`` on: ``retry:`` first, then one chunk of
    frames per read. A store error ends it: the response has started, so the only clean
    answer is to end it, and EventSource reconnects with its last id."""
    yield ServerSentEvent(retry=RETRY_MS, sep=SEP).encode()
    try:
        while True:
            reply = await client.xread({stream: position}, count=BATCH, block=int(block_s * 1000))
            if not reply:
                continue  # silence: the response's keep-alive comments hold the stream open
            chunk, position = _frames(reply[0][1], fields, position)
            yield chunk
            await client.xgroup_setid(stream, keys.SUBSCRIPTION_GROUP, position)  # where a plain reconnect resumes
    except redis.RedisError:
        logger.warning("SSE stream %s ends: the store is unavailable; the client resumes from its last id", stream)


def _frames(entries: list[Any], fields: list[str] | None, position: str) -> tuple[bytes, str]:
    """The frames of one read's entries, and the last entry id (trimmed entries are empty)."""
    chunks = []
    for entry_id, entry in entries:
        position = text(entry_id)
        if entry:
            event: dict[str, Any] = project(orjson.loads(entry[b"e"]), fields)
            chunks.append(frame(position, str(event.get("type") or "message"), event))
    return b"".join(chunks), position
