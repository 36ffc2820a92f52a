"""The embedded Redis: a ``redis-server`` process on loopback with AOF (``appendfsync
everysec``), a generated password and its data in a directory of ours (mode 0700). Used by
``esp up``/``esp demo`` and by the tests, which give it a free port and a temporary directory.

The password lives in ``<data_dir>/password`` (0600) and reaches ``redis-server`` through its
config file (0600), never its command line, which ``ps`` shows to every user.

Beside each one runs its keeper (``runtime.dev.redis_keeper``), which rewrites the AOF at lulls
in ingestion, so that a rewrite does not take a core from the events in flight."""

from __future__ import annotations

import collections
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import redis

from runtime.dev.redis_keeper import alive
from runtime.errors import EspError
from runtime.security.private_files import (
    REDIS_PASSWORD_FILE,
    local_redis_url,
    private_dir,
    read_secret,
    secret_file,
    write_private,
)

# Where free_port looks: above Ray's worker ports (10002-19999 by default) and below the kernel's
# ephemeral range, from which every outgoing connection takes its local port.
_PORTS_FROM = 20_000
_EPHEMERAL = Path("/proc/sys/net/ipv4/ip_local_port_range")
_handed_out: collections.deque[int] = collections.deque(maxlen=1_000)  # not yet bound, maybe


def free_port() -> int:
    """A port on 127.0.0.1 that is free now, for a server started later (Redis, Serve's proxy).
    Not one the kernel would pick for ``bind(0)``: that range is also where outgoing connections
    take their local ports, and one of them took a port picked there before Serve's proxy bound
    it (``Failed to bind to address``). Ports below the range are taken only by servers."""
    try:
        below = int(_EPHEMERAL.read_text().split()[0]) - 1
    except (OSError, ValueError, IndexError):
        below = 0
    if below - _PORTS_FROM >= 1_000:
        rng = random.SystemRandom()
        for _ in range(100):
            port = rng.randint(_PORTS_FROM, below)
            if port not in _handed_out and _is_free(port):
                _handed_out.append(port)
                return port
    with socket.socket() as sock:  # no such range here: let the kernel pick
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_cluster_ports(count: int) -> list[int]:
    """``count`` consecutive free ports for the nodes of a cluster (as ``esp up --redis-cluster``
    uses them): each ≤ 55535, with its bus port (+10000) free too."""
    while True:
        base = free_port()
        ports = list(range(base, base + count))
        if ports[-1] <= 55535 and all(_is_free(p) and _is_free(p + 10000) for p in ports):
            return ports


def _is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


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

    def __init__(self, data_dir: Path, port: int, *, fsync: str = "everysec", cluster: bool = False) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.port = port
        self.fsync = fsync
        self.cluster = cluster  # a node of a Redis Cluster (see EmbeddedRedisCluster)
        self.process: subprocess.Popen[bytes] | None = None
        self.keeper: subprocess.Popen[bytes] | None = None  # runtime.dev.redis_keeper

    @property
    def password_file(self) -> Path:
        return self.data_dir / REDIS_PASSWORD_FILE

    @property
    def url(self) -> str:
        """The URL with the password (once the first start generated it): print it through
        ``runtime.security.redact.redact_url`` only."""
        return local_redis_url(self.port, read_secret(self.password_file))

    @property
    def pidfile(self) -> Path:
        return self.data_dir / "redis.pid"

    def start(self, *, timeout_s: float = 20.0) -> EmbeddedRedis:
        private_dir(self.data_dir)
        config = self.data_dir / "redis.conf"
        write_private(config, self._config(secret_file(self.password_file)))
        args = [redis_binary(), str(config)]
        self.process = subprocess.Popen(args, start_new_session=True, stdin=subprocess.DEVNULL)
        self._wait_ready(timeout_s)
        self._start_keeper()
        return self

    def _start_keeper(self) -> None:
        """The keeper that rewrites the AOF at lulls (``runtime.dev.redis_keeper``); it ends by
        itself when this Redis does, and is ended with it here."""
        assert self.process is not None
        self._end_keeper()  # the last start's, if its Redis crashed
        command = [sys.executable, "-m", "runtime.dev.redis_keeper", "--pid", str(self.process.pid)]
        command += ["--port", str(self.port), "--data-dir", str(self.data_dir)]
        with (self.data_dir / "keeper.log").open("ab") as log:
            self.keeper = subprocess.Popen(
                command, start_new_session=True, stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )

    def _end_keeper(self) -> None:
        if self.keeper is not None:
            if self.keeper.poll() is None:
                self.keeper.terminate()
            self.keeper.wait(timeout=10)
            self.keeper = None

    def _config(self, password: str) -> str:
        """redis-server's configuration, rewritten at each start (the settings may change)."""
        lines = [
            f"port {self.port}",
            "bind 127.0.0.1",
            "protected-mode yes",
            f"requirepass {_quoted(password)}",
            f"dir {_quoted(str(self.data_dir))}",
            "appendonly yes",
            f"appendfsync {self.fsync}",
            "auto-aof-rewrite-percentage 400",
            "auto-aof-rewrite-min-size 512mb",
            'save ""',
            f"pidfile {_quoted(str(self.pidfile))}",
            f"logfile {_quoted(str(self.data_dir / 'redis.log'))}",
        ]
        if self.cluster:
            lines += ["cluster-enabled yes", "cluster-config-file nodes.conf", f"masterauth {_quoted(password)}"]
        return "\n".join(lines) + "\n"

    def _wait_ready(self, timeout_s: float) -> None:
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5)
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
        self._end_keeper()

    def stop(self) -> None:
        try:
            self._stop_server()
        finally:
            self._end_keeper()

    def _stop_server(self) -> None:
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


class EmbeddedRedisCluster:
    """A local Redis Cluster of ``masters`` embedded Redis nodes (no replicas) sharing one
    password, for trying ESP on a cluster (``esp up --redis-cluster 3``) and for the tests.
    The slots are assigned at the first start (``redis-cli --cluster create``); later starts
    find them in each node's ``nodes.conf``."""

    def __init__(self, data_dir: Path, ports: list[int], *, fsync: str = "everysec") -> None:
        self.data_dir = Path(data_dir).resolve()
        self.nodes = [EmbeddedRedis(self.data_dir / f"node-{port}", port, fsync=fsync, cluster=True) for port in ports]

    @property
    def password_file(self) -> Path:
        return self.data_dir / REDIS_PASSWORD_FILE

    @property
    def url(self) -> str:
        """The first node's URL: a cluster client finds the others from it."""
        return self.nodes[0].url

    def start(self, *, timeout_s: float = 30.0) -> EmbeddedRedisCluster:
        private_dir(self.data_dir)
        password = secret_file(self.password_file)
        for node in self.nodes:
            private_dir(node.data_dir)
            write_private(node.password_file, password)
            node.start(timeout_s=timeout_s)
        first = redis.Redis.from_url(self.url)
        if first.info("cluster").get("cluster_enabled") and not int(
            first.cluster("info").get("cluster_slots_assigned", 0)
        ):
            self._create(password, timeout_s)
        self._wait_ok(timeout_s)
        return self

    def _create(self, password: str, timeout_s: float) -> None:
        cli = shutil.which("redis-cli")
        if cli is None:
            raise EspError("redis-cli is not installed (it comes with redis-server)", reason="redis_missing")
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        done = subprocess.run(
            [cli, "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
            env={**os.environ, "REDISCLI_AUTH": password},  # not on the command line
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
        if done.returncode != 0:
            raise EspError(
                f"redis-cli --cluster create failed: {done.stdout[-500:]}{done.stderr[-500:]}", reason="redis_failed"
            )

    def _wait_ok(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        clients = [redis.Redis.from_url(node.url) for node in self.nodes]
        while time.monotonic() < deadline:
            if all(c.cluster("info").get("cluster_state") == "ok" for c in clients):
                return
            time.sleep(0.1)
        raise EspError(f"Redis Cluster not ok after {timeout_s}s", reason="redis_failed")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def kill(self) -> None:
        for node in self.nodes:
            node.kill()


def _quoted(value: str) -> str:
    """A double-quoted argument of redis.conf (backslash and quote escaped)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _wait_gone(pid: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not alive(pid):
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
