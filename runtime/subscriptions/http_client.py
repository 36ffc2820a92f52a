"""The dispatcher's HTTP/1.1 client: POST a body, get the status, the start of the answer and
``Retry-After``, over a pool of kept-alive connections. Responses are parsed by ``httptools``
(the parser uvicorn serves with); the rest is asyncio's transports.

A general client (aiohttp) spent about 130 µs of the dispatcher's CPU per request in building
and tracking a request (URL joins, header multidicts, cookie and trace hooks, per-request timer
objects): half of what a one-event webhook cost. A webhook needs none of it, so this does only:

- connect (TLS for ``https``, with the name to verify given apart from the address connected to:
  the dispatcher connects to the address it checked against SSRF, ``server_hostname``),
- write the request line, the headers and the body in one write,
- read one response (``Content-Length``, chunked, or until close), keep at most ``MAX_KEPT``
  bytes of its body,
- keep the connection for the next request unless either side said ``close``.

Errors are :class:`HttpError` named as the dispatcher's trace names them: ``ConnectError``
(no connection: refused, unreachable, TLS handshake), ``RemoteProtocolError`` (the receiver
closed the connection or answered something that is not HTTP), ``NetworkError`` (the connection
failed mid-request); the time limit raises ``TimeoutError``. A request on a kept-alive
connection that the receiver closed before answering anything is sent once more on a new
connection (the receiver may close an idle connection just as it is reused).
"""

from __future__ import annotations

import asyncio
import ssl
from typing import NamedTuple

import httptools
from yarl import URL

MAX_KEPT = 64 * 1024  # bytes of a response body kept (the dispatcher records the first 300)
_FRAMING = ("content-length", "transfer-encoding", "connection")


class HttpError(Exception):
    """A request that got no complete response; ``name`` says why (see the module doc)."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name


class Response(NamedTuple):
    status: int
    body: bytes
    retry_after: str | None


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection, one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[Response] | None = None
        self.closed = False
        self.answered = False  # a byte of the current response arrived
        self.keep_alive = True
        self._status = 0
        self._retry_after: str | None = None
        self._body = bytearray()
        self._until_close = False  # the current response's body ends with the connection

    # -- asyncio ---------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.answered = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(HttpError("RemoteProtocolError", "the receiver switched protocols"))
        except httptools.HttpParserError as exc:
            self._fail(HttpError("RemoteProtocolError", f"not an HTTP response: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if exc is None and self._until_close and self._status >= 200:  # its body ends with the connection
            self.keep_alive = False
            self.on_message_complete()
        elif exc is None:
            self._fail(HttpError("RemoteProtocolError", "the receiver closed the connection before answering"))
        else:
            self._fail(HttpError("NetworkError", f"{type(exc).__name__}: {exc}"))

    # -- httptools callbacks -----------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._retry_after, self._body, self._until_close = None, bytearray(), True

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"retry-after":
            self._retry_after = value.decode("latin-1")
        elif name == b"content-length" or name == b"transfer-encoding":
            self._until_close = False

    def on_headers_complete(self) -> None:
        self._status = self.parser.get_status_code()
        self.keep_alive = self.keep_alive and self.parser.should_keep_alive()
        if self._status in (204, 304):  # no body, whatever the headers say
            self._until_close = False

    def on_body(self, body: bytes) -> None:
        room = MAX_KEPT - len(self._body)
        if room > 0:
            self._body += body[:room]

    def on_message_complete(self) -> None:
        if 100 <= self._status < 200:  # an interim answer: the final one follows
            return
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(Response(self._status, bytes(self._body), self._retry_after))

    # -- use --------------------------------------------------------------------------------
    def send(self, data: bytes) -> asyncio.Future[Response]:
        assert self.transport is not None and self.waiter is None
        self.answered, self._status, self._until_close = False, 0, False
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return self.waiter

    def timed_out(self) -> None:
        self._fail(TimeoutError())

    def abandon(self) -> None:
        self._fail(HttpError("NetworkError", "the request was abandoned"))

    def _fail(self, error: Exception) -> None:
        self.keep_alive = False
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        self.keep_alive = False
        if self.transport is not None:
            self.transport.close()


class HttpClient:
    """POSTs to one destination over at most ``limit`` kept-alive connections, each request
    (connection included) within ``timeout_s``."""

    def __init__(self, *, limit: int, timeout_s: float, ssl_context: ssl.SSLContext | None = None) -> None:
        self._limit = asyncio.Semaphore(limit)
        self._timeout_s = timeout_s
        self._ssl = ssl_context
        self._idle: dict[tuple[str, int, bool, str | None], list[_Connection]] = {}
        self._open: set[_Connection] = set()

    async def post(
        self, url: URL, body: bytes, headers: dict[str, str], *, server_hostname: str | None = None
    ) -> Response:
        """``url``'s host is where to connect (an address, or a name to resolve);
        ``server_hostname`` the name TLS verifies when it is an address. Give ``host`` in
        ``headers`` to name the site when connecting to an address."""
        secure = url.scheme == "https"
        host, port = url.raw_host or "", url.port or (443 if secure else 80)
        named = {"host": url.raw_authority}  # by lower-case name: a later header replaces an earlier one
        for name, value in headers.items():
            if "\r" in value or "\n" in value or "\r" in name or "\n" in name or ":" in name:
                raise ValueError(f"header {name!r} holds a line break or a colon")
            named[name.lower()] = value
        for framing in _FRAMING:  # the body's framing is this client's
            named.pop(framing, None)
        head = [f"POST {url.raw_path_qs or '/'} HTTP/1.1\r\n"]
        head += [f"{name}: {value}\r\n" for name, value in named.items()]
        head.append(f"content-length: {len(body)}\r\n\r\n")
        data = "".join(head).encode("latin-1") + body
        key = (host, port, secure, server_hostname)
        async with self._limit:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self._timeout_s
            for attempt in range(2):
                connection = self._take_idle(key) if attempt == 0 else None
                reused = connection is not None
                if connection is None:
                    connection = await self._connect(key, deadline)
                timer = loop.call_at(deadline, connection.timed_out)
                try:
                    response = await connection.send(data)
                except HttpError:
                    if reused and not connection.answered:
                        continue  # the receiver closed a kept-alive connection as it was reused
                    raise
                except asyncio.CancelledError:  # the connection is spoilt: its answer would come to the next request
                    connection.abandon()
                    raise
                finally:
                    timer.cancel()
                if connection.keep_alive and not connection.closed:
                    self._idle.setdefault(key, []).append(connection)
                else:
                    connection.close()
                return response
        raise AssertionError("unreachable")  # pragma: no cover

    def _take_idle(self, key: tuple[str, int, bool, str | None]) -> _Connection | None:
        idle = self._idle.get(key)
        while idle:
            connection = idle.pop()
            if not connection.closed:
                return connection
        return None

    async def _connect(self, key: tuple[str, int, bool, str | None], deadline: float) -> _Connection:
        host, port, secure, server_hostname = key
        loop = asyncio.get_running_loop()
        context = None
        if secure:
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            context = self._ssl
        try:
            _, connection = await asyncio.wait_for(
                loop.create_connection(
                    _Connection,
                    host,
                    port,
                    ssl=context,
                    server_hostname=(server_hostname or host) if secure else None,
                ),
                max(deadline - loop.time(), 0),
            )
        except asyncio.TimeoutError:  # the time limit's own (before Python 3.11 not the builtin TimeoutError)
            raise TimeoutError from None
        except (OSError, ssl.SSLError) as exc:
            raise HttpError("ConnectError", f"cannot connect to {host}:{port}: {exc}") from exc
        self._open = {c for c in self._open if not c.closed}
        self._open.add(connection)
        return connection

    async def close(self) -> None:
        for connection in self._open:
            connection.close()
        self._open.clear()
        self._idle.clear()
