"""serve.sse: the SSE response driven as an ASGI app against a scripted store, so the whole life
of a stream (retry line, frames, keep-alive in silence, a store error, a client leaving, the
waiting-subscriber slot) is checked without Redis or Ray."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import orjson
import redis

from runtime import keys
from serve import limits, sse

STREAM = "esp:sub:s"


class ScriptedStore:
    """Answers ``xread`` from ``replies`` (an exception is raised), then stays silent: each
    further read blocks for its whole time and returns nothing, as Redis does."""

    def __init__(self, *replies: Any) -> None:
        self.replies = list(replies)
        self.positions: list[str] = []

    async def xread(self, streams: dict[str, str], count: int, block: int) -> Any:
        if not self.replies:
            await asyncio.sleep(block / 1000)
            return []
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return [[STREAM.encode(), reply]]

    async def xgroup_setid(self, stream: str, group: str, position: str) -> None:
        assert group == keys.SUBSCRIPTION_GROUP
        self.positions.append(position)


def entry(entry_id: str, event: dict[str, Any]) -> tuple[bytes, dict[bytes, bytes]]:
    return entry_id.encode(), {b"e": orjson.dumps(event)}


async def serve(store: ScriptedStore, *, keepalive_s: float, leave_after_s: float | None) -> tuple[bytes, bool, bool]:
    """Stream until it ends (or the client leaves after ``leave_after_s``): (body, whether the
    body was closed properly, whether the slot came back)."""
    semaphore = asyncio.Semaphore(1)
    slot = limits.Slot(semaphore, what="waiting subscribers")
    await slot.__aenter__()
    chunks = limits.released(sse.events(store, STREAM, "0-0", None, block_s=0.02), slot)  # type: ignore[arg-type]
    messages: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    scope = {"type": "http", "method": "GET", "headers": []}
    await sse.response(chunks, keepalive_s=keepalive_s)(scope, _client(leave_after_s), send)
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    closed = messages[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
    return body, closed, not semaphore.locked()


def _client(leave_after_s: float | None) -> Callable[[], Any]:
    async def receive() -> dict[str, Any]:
        if leave_after_s is None:
            await asyncio.Event().wait()  # never leaves
        await asyncio.sleep(leave_after_s)  # type: ignore[arg-type]
        return {"type": "http.disconnect"}

    return receive


def test_frames_follow_the_retry_line_and_a_store_error_ends_the_stream_cleanly():
    first = {"type": "offer.sent", "id": "n1"}
    read = [entry("1-0", first), (b"2-0", {}), entry("3-0", {"id": "n3"})]  # 2-0 was trimmed
    store = ScriptedStore(read, redis.ConnectionError("down"))
    body, closed, released = asyncio.run(serve(store, keepalive_s=60, leave_after_s=None))
    assert body == (
        b"retry: 2000\n\n"
        b'id: 1-0\nevent: offer.sent\ndata: {"type":"offer.sent","id":"n1"}\n\n'
        b'id: 3-0\nevent: message\ndata: {"id":"n3"}\n\n'
    )
    assert store.positions == ["3-0"]  # a trimmed entry moves the position too
    assert closed and released


def test_silence_gets_keep_alive_comments_and_a_leaving_client_gives_its_slot_back():
    body, _, released = asyncio.run(serve(ScriptedStore(), keepalive_s=0.05, leave_after_s=0.4))
    assert body.startswith(b"retry: 2000\n\n")
    assert body.count(b": keep-alive\n\n") >= 3
    assert body.replace(b"retry: 2000\n\n", b"").replace(b": keep-alive\n\n", b"") == b""
    assert released


def test_no_sse_field_can_break_its_line():
    kind = "t.x\r\ndata: forged\rid: 9\x00\x1b\n"
    out = sse.frame("1-0\n", kind, {"type": kind, "note": "a\nb\u2028"})
    lines = out.split(b"\n")
    assert lines[0] == b"id: 1-0 " and lines[1] == b"event: t.x  data: forged id: 9   "
    assert lines[2].startswith(b"data: ")
    assert lines[3:] == [b"", b""]
