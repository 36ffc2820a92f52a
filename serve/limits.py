"""Bounds on what one request may hold: its body, and a place among waiting subscribers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson

from runtime.errors import Overloaded

INGEST_PATH = "/v1/events"  # bounds its body itself while streaming it (max_body_bytes)
BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class Slot:
    """One place in a bounded group of long-lived requests, taken without waiting: when all
    are taken the request is refused (429, Retry-After) instead of queueing behind them."""

    def __init__(self, semaphore: asyncio.Semaphore | None, *, what: str) -> None:
        self._semaphore = semaphore
        self._what = what
        self._held = False

    async def __aenter__(self) -> Slot:
        if self._semaphore is not None:
            if self._semaphore.locked():
                raise Overloaded(f"too many {self._what} on this replica; retry later", retry_after_s=5)
            await self._semaphore.acquire()
            self._held = True
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._held:
            self._held = False
            self._semaphore.release()  # type: ignore[union-attr]


async def released(chunks: AsyncIterator[bytes], slot: Slot) -> AsyncIterator[bytes]:
    """``chunks``, giving ``slot`` back when the stream ends, fails or the client goes away."""
    try:
        async for chunk in chunks:
            yield chunk
    finally:
        await slot.__aexit__(None, None, None)


class BodyLimit:
    """ASGI middleware: every route's body is bounded before the route sees it — refused on a
    Content-Length over the limit, and counted while read (a chunked body cannot slip past).
    The body is read here and handed on whole, so routes never read an unbounded stream."""

    def __init__(self, app: Any, limit: Callable[[], int]) -> None:
        self.app = app
        self.limit = limit  # read per request: the replica's settings

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS or scope["path"] == INGEST_PATH:
            await self.app(scope, receive, send)
            return
        limit = self.limit()
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            await _too_large(send, limit)
            return
        body, more = bytearray(), True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > limit:
                await _too_large(send, limit)
                return
        sent = False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if sent:
                return await receive()  # after the body: only a disconnect can come
            sent = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)


async def _too_large(send: Any, limit: int) -> None:
    body = orjson.dumps({"reason": "body_too_large", "message": f"body is over the limit of {limit} bytes"})
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})
