"""A local webhook receiver for benchmarks and tests: an async server in its own process that
answers every POST with 200 once it has checked the Standard Webhooks signature, and counts.

It stands for a fast receiver, so that ``esp bench`` measures the dispatcher rather than the
receiver: a bare ASGI callable under uvicorn (httptools, uvloop), no framework, no file. Per
request it reads the body, recomputes the HMAC-SHA256 of ``{webhook-id}.{webhook-timestamp}.{body}``
with each configured secret and compares it with the ``webhook-signature`` header, and counts
the request, the events it carried (a JSON array counts its items; without parsing: the body
of a CloudEvents batch starts with ``[``, a single event with ``{``) and the distinct
``webhook-id`` values (to see redeliveries).

Endpoints::

    POST /<anything>   200 {} when the signature verifies (or no secret is configured),
                       401 {} when it does not
    GET  /stats        200 {"requests", "events", "valid", "invalid", "unique_ids",
                            "cpu_s"}: counts since start, and the process's CPU seconds

Run on its own: ``python -m runtime.dev.receiver --port 0 --secret whsec_...``; it prints its
URL as the first line of stdout. :class:`Receiver` starts it as a subprocess and reads it.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

import httpx

from runtime.subscriptions.webhooks import SECRET_PREFIX

STARTUP_TIMEOUT_S = 20.0


class _State:
    def __init__(self, secrets: Sequence[str]) -> None:
        self.keys = [base64.b64decode(s[len(SECRET_PREFIX) :]) for s in secrets]
        self.requests = self.events = self.valid = self.invalid = 0
        self.ids: set[bytes] = set()

    def verify(self, headers: dict[bytes, bytes], body: bytes) -> bool:
        if not self.keys:
            return True
        msg_id, stamp = headers.get(b"webhook-id", b""), headers.get(b"webhook-timestamp", b"")
        given = headers.get(b"webhook-signature", b"").split()
        content = msg_id + b"." + stamp + b"." + body
        for key in self.keys:
            expected = b"v1," + base64.b64encode(hmac.new(key, content, hashlib.sha256).digest())
            if any(hmac.compare_digest(expected, g) for g in given):
                return True
        return False

    def stats(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "events": self.events,
            "valid": self.valid,
            "invalid": self.invalid,
            "unique_ids": len(self.ids),
            "cpu_s": round(time.process_time(), 3),
        }


def app(secrets: Sequence[str]) -> Any:
    state = _State(secrets)

    async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["method"] == "GET":
            await _answer(send, 200, json.dumps(state.stats()).encode())
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = dict(scope["headers"])
        state.requests += 1
        state.events += body.count(b'"specversion"') if body[:1] == b"[" else 1
        msg_id = headers.get(b"webhook-id")
        if msg_id is not None:
            state.ids.add(msg_id)
        if state.verify(headers, body):
            state.valid += 1
            await _answer(send, 200, b"{}")
        else:
            state.invalid += 1
            await _answer(send, 401, b"{}")

    return application


async def _answer(send: Any, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


class Receiver:
    """The receiver in a subprocess on a free loopback port; ``stats()`` reads its counts."""

    def __init__(self, secrets: Sequence[str] = ()) -> None:
        self.secrets = list(secrets)
        self.url = ""
        self._process: subprocess.Popen[str] | None = None

    def start(self) -> Receiver:
        command = [sys.executable, "-m", "runtime.dev.receiver", "--port", "0"]
        for secret in self.secrets:
            command += ["--secret", secret]
        self._process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=os.environ.copy())
        assert self._process.stdout is not None
        line = self._process.stdout.readline().strip()  # the URL, once it listens
        if not line.startswith("http://"):
            self.stop()
            raise RuntimeError(f"the local receiver did not start (it printed {line!r})")
        self.url = line
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                self.stats()
                return self
            except httpx.HTTPError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("the local receiver did not answer")

    def stats(self) -> dict[str, Any]:
        return dict(httpx.get(f"{self.url}/stats", timeout=5).json())

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.send_signal(signal.SIGTERM)
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: Sequence[str] | None = None) -> None:
    import uvicorn

    from runtime.dev.gateway import _listen

    parser = argparse.ArgumentParser(prog="python -m runtime.dev.receiver", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: a free port")
    parser.add_argument("--secret", action="append", default=[], help="a whsec_ signing secret (repeatable)")
    args = parser.parse_args(argv)
    listening = _listen(args.host, args.port)
    print(f"http://{args.host}:{listening.getsockname()[1]}", flush=True)
    config = uvicorn.Config(
        app(args.secret),
        log_config=None,
        log_level="warning",
        access_log=False,
        lifespan="off",
        http="httptools",
        loop="uvloop",
        backlog=2048,
    )
    uvicorn.Server(config).run(sockets=[listening])


if __name__ == "__main__":
    main()
