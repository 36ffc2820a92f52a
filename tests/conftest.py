"""Shared fixtures: a real redis-server on a free port in a temporary directory; and the
Hypothesis profile (``HYPOTHESIS_PROFILE``): ``make test`` (what CI runs) draws the same
examples on every run, so a red run is the change's and reproduces; ``make unit`` draws new ones
each time, to find what the fixed ones miss."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import pytest
import redis
from hypothesis import settings

from runtime.dev.redis_server import EmbeddedRedis, EmbeddedRedisCluster, free_cluster_ports, free_port

settings.register_profile("fixed", derandomize=True, print_blob=True)
settings.register_profile("explore", print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "explore"))


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path / "redis", free_port()).start()
    yield server
    server.stop()


@pytest.fixture
def redis_cluster(tmp_path: Path) -> Iterator[EmbeddedRedisCluster]:
    """A real 3-master Redis Cluster on free ports (no replicas)."""
    cluster = EmbeddedRedisCluster(tmp_path / "redis-cluster", free_cluster_ports(3)).start()
    yield cluster
    cluster.stop()


def url_of(client: redis.Redis) -> str:
    """The URL of a client's server, with its password when it has one (the embedded Redis does)."""
    kw = client.connection_pool.connection_kwargs
    auth = f":{quote(kw['password'], safe='')}@" if kw.get("password") else ""
    return f"redis://{auth}{kw['host']}:{kw['port']}/0"


@pytest.fixture
def redis_client(redis_server: EmbeddedRedis) -> redis.Redis:
    return redis.Redis.from_url(redis_server.url)


@contextmanager
def round_trips(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Counts requests written to any Redis connection while active (a pipeline is one)."""
    sent: list[int] = []
    original = redis.connection.AbstractConnection.send_packed_command

    def counting(self, command, check_health=True):  # type: ignore[no-untyped-def]
        sent.append(1)
        return original(self, command, check_health)

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counting)
    yield sent
    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", original)
