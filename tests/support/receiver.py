"""A real HTTP receiver for delivery tests: records every request and answers from a script.

``Receiver(script)``: ``script(n, request)`` returns ``(status, headers, delay_s)`` or
``(status, headers, delay_s, body)`` for the n-th request (1-based), so a test can fail the
first N calls, answer 429 with Retry-After, hang, answer 410, or refuse with its own error text.
Requests are recorded with their headers, body, arrival time and the status the script gave
them, thread-safe. A hanging answer (``delay_s``) ends early when the receiver is closed, so a
test never waits for a receiver it has finished with.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.time() when the request was read
    status: int | None = None  # what the script answered (set before the answer is written)
    answered_at: float | None = None  # time.time() after the delay, when the answer was written

    def json(self) -> Any:
        return orjson.loads(self.body)


Script = Callable[[int, Request], tuple[Any, ...]]


def always_ok(n: int, request: Request) -> tuple[int, dict[str, str], float]:
    return 200, {}, 0.0


class Receiver:
    def __init__(self, script: Script = always_ok) -> None:
        self.script = script
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._closing = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK stall

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                request = Request(
                    self.path, {k.lower(): v for k, v in self.headers.items()}, self.rfile.read(length), time.time()
                )
                with receiver._lock:
                    receiver.requests.append(request)
                    n = len(receiver.requests)
                status, headers, delay, *rest = receiver.script(n, request)
                request.status = status
                if delay:
                    receiver._closing.wait(delay)
                if rest:
                    body = rest[0] if isinstance(rest[0], bytes) else str(rest[0]).encode()
                else:
                    body = b'{"ok": true}' if status < 300 else b'{"error": "scripted"}'
                request.answered_at = time.time()
                try:
                    self.send_response(status)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("content-length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:  # the caller gave up (timeout)
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()

    def seen(self) -> list[Request]:
        """The requests so far (a copy)."""
        with self._lock:
            return list(self.requests)

    def wait_for(self, predicate: Callable[[list[Request]], bool], timeout_s: float = 20.0) -> list[Request]:
        deadline = time.monotonic() + timeout_s
        seen: list[Request] = []
        while time.monotonic() < deadline:
            seen = self.seen()
            if predicate(seen):
                return seen
            time.sleep(0.02)
        raise AssertionError(f"receiver: condition not met in {timeout_s}s; got {len(seen)} requests")
