"""The local message gateway: stands in for an operator's SMS/push/e-mail gateway in the demo
and ``esp up``, and for a webhook receiver in tests. It sends nothing; it records every request
as one JSON line in a file, so a person (``esp`` CLI, :func:`read_messages`) can see what would
have gone out.

Endpoints::

    POST /send/{channel}        record the request; 200 {"accepted": true, "id": <n>}
    GET  /messages?channel=&limit=
                                200 {"messages": [...]}: the newest ``limit`` (default 100,
                                at most 1000) records, oldest first, of one channel or all
    GET  /healthz               200 {"status": "ok"}

A record is ``{"id", "channel", "received_at", "headers", "body"}``: ``headers`` keeps
``content-type`` and the webhook headers (``webhook-id``, ``webhook-timestamp``,
``webhook-signature``, ``idempotency-key``) that were sent; ``body`` is the parsed JSON, or the
text when the body is not JSON. Ids count up from the records already in the file. One gateway
process per file: records are appended under a lock, one line per write, flushed.

Run on its own: ``python -m runtime.dev.gateway --path messages.jsonl --port 8025``.
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import threading
import time
from collections import deque
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from runtime.events.envelope import format_time_ms

RECORDED_HEADERS = ("content-type", "webhook-id", "webhook-timestamp", "webhook-signature", "idempotency-key")
MAX_BODY_BYTES = 1 << 20  # far above any message payload; refuses a runaway client
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
STOP_POLL_S = 0.05  # how often the serving thread checks for stop(); the default 0.5 s slows tests
_CHANNEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class MessageLog:
    """The JSON-lines file of recorded requests; appends are serialised by a lock."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._last_id = _count_lines(self.path)

    def append(self, record: dict[str, Any]) -> int:
        """Give ``record`` the next id, write it as one line and flush; return the id."""
        with self._lock:
            self._last_id += 1
            line = json.dumps({"id": self._last_id, **record}, ensure_ascii=False) + "\n"
            with self.path.open("a", encoding="utf-8") as file:
                file.write(line)
                file.flush()
            return self._last_id


def _count_lines(path: Path) -> int:
    if not path.exists():
        return 0
    with path.open("rb") as file:
        return sum(1 for _ in file)


def read_messages(path: Path, channel: str | None = None, limit: int = DEFAULT_LIMIT) -> list[dict[str, Any]]:
    """The newest ``limit`` records of ``channel`` (or all channels), oldest first. A missing
    file reads as empty; a line that is not JSON (a write in progress) is skipped."""
    path = Path(path)
    if limit <= 0 or not path.exists():
        return []
    newest: deque[dict[str, Any]] = deque(maxlen=limit)
    with path.open(encoding="utf-8", errors="replace") as file:
        for line in file:
            record = _parse_line(line)
            if record is not None and (channel is None or record.get("channel") == channel):
                newest.append(record)
    return list(newest)


def _parse_line(line: str) -> dict[str, Any] | None:
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None
    return record if isinstance(record, dict) else None


def decode_body(raw: bytes) -> Any:
    """The JSON value of ``raw``, or its text when it is not JSON."""
    text = raw.decode("utf-8", errors="replace")
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], log: MessageLog) -> None:
        super().__init__(address, _Handler)
        self.log = log


class _Handler(BaseHTTPRequestHandler):
    disable_nagle_algorithm = True  # one small response: do not wait for the peer's delayed ACK
    protocol_version = "HTTP/1.1"  # keep-alive: senders reuse connections
    server: _Server
    server_version = "esp-local-gateway"

    def do_POST(self) -> None:
        channel = self._path_channel()
        if channel is None:
            return self._not_found()
        length = self._content_length()
        if length is None:
            return self._answer(411, _problem("length_required", "send the body with a Content-Length header"))
        if length > MAX_BODY_BYTES:
            self._discard(min(length, 16 * MAX_BODY_BYTES))  # so the client reads the answer, not a reset
            return self._answer(413, _problem("body_too_large", f"body of {length} bytes (limit {MAX_BODY_BYTES})"))
        record = {
            "channel": channel,
            "received_at": format_time_ms(time.time_ns() // 1_000_000),
            "headers": {name: self.headers[name] for name in RECORDED_HEADERS if name in self.headers},
            "body": decode_body(self.rfile.read(length)),
        }
        self._answer(200, {"accepted": True, "id": self.server.log.append(record)})

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/healthz":
            return self._answer(200, {"status": "ok"})
        if url.path != "/messages":
            return self._not_found()
        query = parse_qs(url.query)
        limit = (query.get("limit") or [str(DEFAULT_LIMIT)])[0]
        if not limit.isdigit() or not 1 <= int(limit) <= MAX_LIMIT:
            return self._answer(400, _problem("invalid_input", f"limit must be 1..{MAX_LIMIT}, got {limit!r}"))
        channel = (query.get("channel") or [None])[0] or None
        self._answer(200, {"messages": read_messages(self.server.log.path, channel, int(limit))})

    def _content_length(self) -> int | None:
        value = self.headers.get("content-length")
        if value is None:
            return None if "transfer-encoding" in self.headers else 0
        return int(value) if value.strip().isdigit() else None

    def _discard(self, length: int) -> None:
        while length > 0:
            chunk = self.rfile.read(min(length, 1 << 16))
            if not chunk:
                return
            length -= len(chunk)

    def _path_channel(self) -> str | None:
        prefix, _, channel = urlsplit(self.path).path.partition("/send/")
        return channel if prefix == "" and _CHANNEL.fullmatch(channel) else None

    def _not_found(self) -> None:
        known = "POST /send/{channel}, GET /messages, GET /healthz"
        self._answer(404, _problem("not_found", f"no endpoint {self.command} {self.path} (endpoints: {known})"))

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        payload = json.dumps(body, ensure_ascii=False).encode()
        self.send_response(status, HTTPStatus(status).phrase)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the file is the log; stderr lines per request would drown the demo's output


def _problem(reason: str, message: str) -> dict[str, Any]:
    return {"reason": reason, "message": message}


class LocalGateway:
    """The gateway on ``host:port`` (``port=0``: a free one, see :attr:`url` once started),
    recording to ``path``. ``start()`` serves from a background thread; ``stop()`` closes the
    socket. Also a context manager."""

    def __init__(self, path: Path, host: str = "127.0.0.1", port: int = 0) -> None:
        self.path = Path(path)
        self.host = host
        self.port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> LocalGateway:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._server = _Server((self.host, self.port), MessageLog(self.path))
        self.port = int(self._server.server_address[1])
        serve = functools.partial(self._server.serve_forever, poll_interval=STOP_POLL_S)
        self._thread = threading.Thread(target=serve, name="esp-local-gateway", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join()
        self._server = self._thread = None

    def __enter__(self) -> LocalGateway:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run_gateway(path: Path, host: str = "127.0.0.1", port: int = 0) -> None:
    """Serve until interrupted (Ctrl-C, or SIGTERM via :func:`main`); prints the URL first, so a
    parent that asked for port 0 can read it from the first line of stdout."""
    gateway = LocalGateway(path, host, port).start()
    print(f"esp local gateway on {gateway.url}, recording to {gateway.path}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        gateway.stop()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    import signal

    parser = argparse.ArgumentParser(
        prog="python -m runtime.dev.gateway",
        description="The local message gateway: records what would have been sent.",
    )
    parser.add_argument("--path", type=Path, default=Path("messages.jsonl"), help="the JSON-lines file to append to")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: a free port")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)  # stop like Ctrl-C: close the socket, then exit 0
    run_gateway(args.path, args.host, args.port)


if __name__ == "__main__":
    main()
