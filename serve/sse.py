"""Server-sent events for subscriptions of mode ``sse``.

Each event goes out with ``id:`` = its stream entry id. A client that reconnects with
``Last-Event-ID`` (browsers' EventSource do this themselves) resumes right after it: the stream
keeps the events, so there is no gap and no duplicate. Without it, streaming starts where the
subscription last left off (the consumer group's position, moved as events are sent), or at
the beginning of what the subscription has kept.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import redis.asyncio as aioredis

from runtime import keys
from runtime.streams import text
from runtime.subscriptions import project

BATCH = 500
KEEPALIVE_S = 15.0


async def start_position(client: aioredis.Redis, stream: str) -> str:
    groups = await client.xinfo_groups(stream)
    group = next((g for g in groups if text(g["name"]) == keys.SUBSCRIPTION_GROUP), None)
    return text(group["last-delivered-id"]) if group else "0-0"


async def events(
    client: aioredis.Redis, stream: str, position: str, fields: list[str] | None, *, keepalive_s: float = KEEPALIVE_S
) -> AsyncIterator[bytes]:
    yield b"retry: 2000\n\n"
    while True:
        reply = await client.xread({stream: position}, count=BATCH, block=int(keepalive_s * 1000))
        if not reply:
            yield b": keep-alive\n\n"
            continue
        chunks = []
        for entry_id, entry in reply[0][1]:
            position = text(entry_id)
            if not entry:
                continue
            event: dict[str, Any] = project(orjson.loads(entry[b"e"]), fields)
            kind = str(event.get("type") or "message").replace("\n", " ")
            chunks.append(b"id: %s\nevent: %s\ndata: %s\n\n" % (position.encode(), kind.encode(), orjson.dumps(event)))
        yield b"".join(chunks)
        await client.xgroup_setid(stream, keys.SUBSCRIPTION_GROUP, position)  # where a plain reconnect resumes
