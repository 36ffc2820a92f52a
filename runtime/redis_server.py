"""The embedded Redis: a ``redis-server`` process on loopback with AOF (``appendfsync
everysec``) and its data in a directory of ours. Used by ``esp up``/``esp demo`` and by the
tests, which give it a free port and a temporary directory."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import redis

from runtime.errors import EspError


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if found is None:
        raise EspError(
            "redis-server is not installed: run 'make setup' (installs it with apt-get as root) "
            "or 'apt-get install redis-server', or pass --redis-url",
            reason="redis_missing",
        )
    return found


class EmbeddedRedis:
    """Start, stop and restart one ``redis-server`` whose data lives in ``data_dir``."""

    def __init__(self, data_dir: Path, port: int, *, fsync: str = "everysec") -> None:
        self.data_dir = Path(data_dir).resolve()
        self.port = port
        self.fsync = fsync
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pidfile(self) -> Path:
        return self.data_dir / "redis.pid"

    def start(self, *, timeout_s: float = 20.0) -> EmbeddedRedis:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            redis_binary(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir),
            "--appendonly", "yes",
            "--appendfsync", self.fsync,
            "--save", "",
            "--pidfile", str(self.pidfile),
            "--logfile", str(self.data_dir / "redis.log"),
            "--protected-mode", "yes",
        ]  # fmt: skip
        self.process = subprocess.Popen(args, start_new_session=True, stdin=subprocess.DEVNULL)
        self._wait_ready(timeout_s)
        return self

    def _wait_ready(self, timeout_s: float) -> None:
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                log = (self.data_dir / "redis.log").read_text()[-500:] if (self.data_dir / "redis.log").exists() else ""
                raise EspError(f"redis-server exited at start (port {self.port}): {log}", reason="redis_failed")
            try:
                if client.ping():
                    loading = client.info("persistence").get("loading", 0)
                    if not loading:
                        return
            except redis.RedisError:
                pass
            time.sleep(0.05)
        raise EspError(f"redis-server on port {self.port} not ready after {timeout_s}s", reason="redis_failed")

    @property
    def pid(self) -> int | None:
        if self.process is not None and self.process.poll() is None:
            return self.process.pid
        try:
            return int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None

    def kill(self) -> None:
        """SIGKILL, as a crash would: nothing is flushed beyond what AOF already has."""
        pid = self.pid
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            if self.process is not None:
                self.process.wait(timeout=10)
        self.pidfile.unlink(missing_ok=True)

    def stop(self) -> None:
        pid = self.pid
        if pid is None:
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        if self.process is not None:
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(pid, signal.SIGKILL)
                self.process.wait(timeout=5)
        else:
            _wait_gone(pid, 15)


def _wait_gone(pid: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
