"""A subscription's SSE frames read from a real Redis stream (no HTTP): every entry once and in
order, the subscription's position recorded as frames go out (where a reconnect without
``Last-Event-ID`` resumes), and a stream that outlives a failure to record it."""

from __future__ import annotations

import asyncio

import orjson
import redis.asyncio as aioredis

from runtime import keys
from serve import sse

STREAM = keys.subscription_stream("sse-unit")


def add(client, n: int, start: int = 0) -> list[str]:
    return [
        client.xadd(STREAM, {"e": orjson.dumps({"id": f"o{i}", "type": "business.t", "data": {"n": i}})}).decode()
        for i in range(start, start + n)
    ]


def frames(chunk: bytes) -> list[tuple[str, dict]]:
    out = []
    for frame in chunk.split(b"\n\n"):
        lines = dict(line.split(b": ", 1) for line in frame.split(b"\n") if line and not line.startswith(b":"))
        if b"data" in lines:
            out.append((lines[b"id"].decode(), orjson.loads(lines[b"data"])))
    return out


def group_position(client) -> str:
    (group,) = client.xinfo_groups(STREAM)
    return group["last-delivered-id"].decode()


def test_frames_in_order_and_the_position_recorded_as_they_go(redis_server, redis_client):
    redis_client.xgroup_create(STREAM, keys.SUBSCRIPTION_GROUP, id="0", mkstream=True)
    first = add(redis_client, 3)

    async def run() -> None:
        client = aioredis.Redis.from_url(redis_server.url)
        stream = sse.events(client, STREAM, "0-0", None, keepalive_s=0.3)
        assert await anext(stream) == b"retry: 2000\n\n"
        got = frames(await anext(stream))
        assert [i for i, _ in got] == first
        assert [e["data"]["n"] for _, e in got] == [0, 1, 2]
        assert group_position(redis_client) == "0-0"  # nothing recorded before the frames went out

        waiting = asyncio.ensure_future(anext(stream))  # records the position, then waits for more
        await asyncio.sleep(0.1)
        assert group_position(redis_client) == first[-1]
        later = add(redis_client, 2, start=3)
        got = frames(await waiting)  # the blocked read returns with the first of them, or both
        while len(got) < 2:
            got += frames(await anext(stream))
        assert [i for i, _ in got] == later
        assert await anext(stream) == b": keep-alive\n\n"  # nothing new within keepalive_s
        assert group_position(redis_client) == later[-1]
        await stream.aclose()
        await client.aclose()

    asyncio.run(run())


def test_a_position_that_cannot_be_recorded_does_not_end_the_stream(redis_server, redis_client):
    first = add(redis_client, 2)  # a stream without the subscription's group: recording fails

    async def run() -> None:
        client = aioredis.Redis.from_url(redis_server.url)
        stream = sse.events(client, STREAM, "0-0", None, keepalive_s=0.3)
        await anext(stream)
        assert [i for i, _ in frames(await anext(stream))] == first
        waiting = asyncio.ensure_future(anext(stream))
        await asyncio.sleep(0.1)
        later = add(redis_client, 1, start=2)
        assert [i for i, _ in frames(await waiting)] == later
        await stream.aclose()
        await client.aclose()

    asyncio.run(run())


def test_the_stream_ends_cleanly_when_the_store_goes_away(redis_server, redis_client):
    redis_client.xgroup_create(STREAM, keys.SUBSCRIPTION_GROUP, id="0", mkstream=True)
    add(redis_client, 1)

    async def run() -> None:
        client = aioredis.Redis.from_url(redis_server.url)
        stream = sse.events(client, STREAM, "0-0", None, keepalive_s=0.3)
        await anext(stream)
        await anext(stream)
        redis_server.stop()
        rest = [chunk async for chunk in stream]
        assert rest == []  # ended, no frame and no exception: EventSource reconnects with Last-Event-ID
        await client.aclose()

    asyncio.run(run())
