"""The embedded Redis's keeper: a small process beside ``redis-server``, started with it
(:class:`runtime.dev.redis_server.EmbeddedRedis`) and gone when it goes, that rewrites Redis's
AOF at lulls in ingestion.

Redis rewrites its AOF by itself when the file has grown five-fold since the last rewrite (and
past 512 MB), whatever the load is then. A rewrite forks Redis and serializes the whole data
set: at 400 MB, a core for a second or more. On a small machine whose cores the API, the actors
and Redis share, that comes out of the events in flight: at 10,000 events/s in 100-event
requests, one rewrite in the minute took the ack -> subscriber p99 from 40-66 ms to 250-640 ms.

The keeper rewrites sooner, at a lull: once the AOF has grown by as much as the data set's
size at the last rewrite (and by at least ``grown_bytes``), and has grown by less than
``quiet_bytes`` a second for three seconds. Bursty ingestion then pays for the rewrite between
bursts, a rewrite still serializes no more than was written since the one before, and a restart
has less AOF to replay. Under a load without lulls, Redis's own rule still applies.

It speaks to Redis through hiredis over a plain socket (three commands) instead of the
``redis`` package, which takes a quarter of a second of CPU to import: a keeper starts with
every embedded Redis, and must stay light on a small machine.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hiredis

from runtime.security.private_files import REDIS_PASSWORD_FILE, read_secret

FORKING = ("aof_rewrite_in_progress", "aof_rewrite_scheduled", "rdb_bgsave_in_progress")
LOOK_EVERY_S = 1.0  # how often the keeper reads the AOF's size


@dataclass
class LullRewrite:
    """When to rewrite the AOF: it has grown since its last rewrite by as much as it held then
    (its base) and by at least ``grown_bytes``; it grew by less than ``quiet_bytes`` between
    each of the last ``quiet_looks`` looks (a second apart); and Redis is not forking already."""

    grown_bytes: int = 64 << 20
    quiet_bytes: int = 1 << 20
    quiet_looks: int = 3
    _last_size: int | None = field(default=None, init=False, repr=False)
    _quiet: int = field(default=0, init=False, repr=False)  # consecutive quiet looks

    def due(self, persistence: Mapping[str, str]) -> bool:
        size, base = int(persistence["aof_current_size"]), int(persistence["aof_base_size"])
        last, self._last_size = self._last_size, size
        quiet = last is not None and size - last < self.quiet_bytes
        self._quiet = self._quiet + 1 if quiet else 0
        if any(persistence.get(k, "0") != "0" for k in FORKING):
            return False
        if self._quiet >= self.quiet_looks and size - base >= max(base, self.grown_bytes):
            self._quiet = 0
            return True
        return False


class ReplyError(Exception):
    """An error reply from Redis."""


class Resp:
    """A minimal Redis client: hiredis (already the project's RESP packer and parser, and light
    to import) over a blocking socket."""

    def __init__(self, port: int, password: str | None, *, timeout_s: float = 10.0) -> None:
        self._sock = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
        self._replies = hiredis.Reader(replyError=ReplyError)
        if password:
            self.call("AUTH", password)

    def call(self, *args: str) -> Any:
        self._sock.sendall(hiredis.pack_command(args))
        while (reply := self._replies.gets()) is False:
            data = self._sock.recv(1 << 16)
            if not data:
                raise ConnectionError("Redis closed the connection")
            self._replies.feed(data)
        if isinstance(reply, ReplyError):
            raise reply
        return reply

    def info(self, section: str) -> dict[str, str]:
        text = self.call("INFO", section)
        if not isinstance(text, bytes):
            raise ReplyError(f"INFO answered {text!r:.40}")
        fields = (line.partition(":") for line in text.decode().splitlines() if ":" in line)
        return {key: value for key, _, value in fields}

    def close(self) -> None:
        self._sock.close()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        pass
    return True


def keep(pid: int, port: int, password: str | None, *, lull: LullRewrite | None = None) -> None:
    """Tend the Redis of ``pid`` until it is gone."""
    lull = lull or LullRewrite()
    client: Resp | None = None
    while alive(pid):
        try:
            client = client or Resp(port, password)
            if lull.due(client.info("persistence")):
                client.call("BGREWRITEAOF")
        except (OSError, ReplyError):  # Redis loading, restarting or going away: look again later
            if client is not None:
                client.close()
            client = None
        time.sleep(LOOK_EVERY_S)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m runtime.dev.redis_keeper", description=__doc__.split("\n\n")[0])
    parser.add_argument("--pid", type=int, required=True, help="redis-server's process id")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--data-dir", type=Path, required=True, help="the embedded Redis's directory (its password)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    password = read_secret(args.data_dir / REDIS_PASSWORD_FILE)
    keep(args.pid, args.port, password)


if __name__ == "__main__":
    main()
