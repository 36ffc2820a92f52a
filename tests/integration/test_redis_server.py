"""The embedded Redis demands a generated password, kept 0600 and off the command line, and persists
every write to its AOF."""

from __future__ import annotations

import os
import signal
import stat
import threading
import time
from pathlib import Path

import pytest
import redis

from runtime.dev.redis_keeper import LullRewrite, keep
from runtime.dev.redis_server import EmbeddedRedis


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_only_the_password_opens_the_embedded_redis(redis_server: EmbeddedRedis):
    password = redis_server.password_file.read_text().strip()
    assert redis_server.url == f"redis://:{password}@127.0.0.1:{redis_server.port}/0"
    assert redis.Redis.from_url(redis_server.url).ping()
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host="127.0.0.1", port=redis_server.port).ping()


def test_the_password_is_private_and_not_on_the_command_line(redis_server: EmbeddedRedis):
    password = redis_server.password_file.read_text().strip()
    assert password.encode() not in Path(f"/proc/{redis_server.pid}/cmdline").read_bytes()
    config = redis_server.data_dir / "redis.conf"
    assert password in config.read_text()
    assert (mode(redis_server.password_file), mode(config), mode(redis_server.data_dir)) == (0o600, 0o600, 0o700)


def test_a_restart_keeps_the_password(redis_server: EmbeddedRedis):
    url = redis_server.url
    redis.Redis.from_url(url).set("kept", "1")
    redis_server.stop()
    redis_server.start()
    assert redis_server.url == url and redis.Redis.from_url(url).get("kept") == b"1"


def test_the_embedded_redis_persists_every_write_and_rewrites_its_aof_rarely(redis_server: EmbeddedRedis):
    """AOF on, fsync each second, and a rewrite (a fork) only when the AOF is five times the data
    and past 512 MB."""
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    assert client.config_get("appendonly") == {"appendonly": "yes"}
    assert client.config_get("appendfsync") == {"appendfsync": "everysec"}
    assert client.config_get("auto-aof-rewrite-percentage") == {"auto-aof-rewrite-percentage": "400"}
    assert client.config_get("auto-aof-rewrite-min-size") == {"auto-aof-rewrite-min-size": str(512 * 2**20)}


def test_free_ports_stay_out_of_the_range_outgoing_connections_take_theirs_from():
    """A port handed out for a server started later must not be one an outgoing connection
    can take meanwhile (the kernel's ephemeral range), nor one handed out just before."""
    import socket

    from runtime.dev.redis_server import free_port

    low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    if low - 20_000 < 1_000:
        pytest.skip("no room below this kernel's ephemeral range: free_port lets the kernel pick")
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
    assert all(20_000 <= p < low for p in ports), (low, high, sorted(ports)[:3], sorted(ports)[-3:])
    with socket.socket() as sock:  # and it is free
        sock.bind(("127.0.0.1", ports[-1]))


def test_a_keeper_starts_with_the_embedded_redis_and_ends_with_it(redis_server: EmbeddedRedis):
    keeper = redis_server.keeper
    assert keeper is not None and keeper.poll() is None
    assert redis_server.process is not None and redis_server.pid is not None
    os.kill(redis_server.pid, signal.SIGKILL)  # a crash, or 'esp down' after 'esp up' has exited
    redis_server.process.wait(timeout=10)
    assert keeper.wait(timeout=10) == 0  # it noticed by itself
    redis_server.start()
    restarted = redis_server.keeper
    assert restarted is not None and restarted is not keeper and restarted.poll() is None
    redis_server.stop()
    assert restarted.poll() is not None and redis_server.keeper is None


def test_the_keeper_rewrites_a_grown_aof_once_writes_stop(redis_server: EmbeddedRedis):
    """At a lull (runtime.dev.redis_keeper), long before Redis's own 512 MB threshold."""
    client = redis.Redis.from_url(redis_server.url)
    password = redis_server.password_file.read_text().strip()
    lull = LullRewrite(grown_bytes=2 * 2**20, quiet_bytes=256 * 2**10)
    tending = threading.Thread(target=keep, args=(redis_server.pid, redis_server.port, password), kwargs={"lull": lull})
    tending.start()
    before = client.info("persistence")["aof_rewrites"]
    client.mset({f"k{i}": "x" * 1_000 for i in range(3_000)})  # ~3 MB of AOF, then quiet
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and client.info("persistence")["aof_rewrites"] == before:
        time.sleep(0.1)
    after = client.info("persistence")
    client.set("after-the-rewrite", "1")  # into the AOF that follows the rewritten base
    redis_server.stop()
    tending.join(timeout=10)
    assert after["aof_rewrites"] == before + 1
    assert not tending.is_alive()
    redis_server.start()  # nothing written before or after the rewrite is lost on a restart
    restarted = redis.Redis.from_url(redis_server.url)
    assert restarted.dbsize() == 3_001 and restarted.get("k2999") == b"x" * 1_000
