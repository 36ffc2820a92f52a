"""How ESP's processes connect to Redis: one place for the client settings.

``ESP_REDIS_URL`` may point at one Redis or at any node of a Redis Cluster: :func:`connect`
asks the server (``INFO cluster``) and returns a cluster client for a cluster, so ESP runs
unchanged on both. Every key a script or transaction touches together shares a hash tag
(``runtime/keys.py``); pipelines run scripts through :func:`runtime.lua.queue_script`, which
works on both.

redis-py waits 5 s for a reply by default. Redis on a busy disk stalls longer than that while
it rewrites its append-only file (a 3 s rewrite was seen on a loaded 2-core test machine, and
a partition actor's outbox write timed out in it). A worker that gives up restarts from its
checkpoints, which costs far more than waiting, so workers wait up to ``REPLY_TIMEOUT_S``.
"""

from __future__ import annotations

from typing import Any

import hiredis
import redis
import redis.asyncio as aioredis
import redis.asyncio.cluster as aiocluster
import redis.cluster
from redis._parsers.encoders import Encoder
from redis.connection import PythonRespSerializer

REPLY_TIMEOUT_S = 30.0  # how long a command may wait for its reply before the connection is given up


class CommandPacker:
    """Packs a command in one call to hiredis (C), which takes str, bytes, int and float
    arguments as they are. redis-py's own packer checks and encodes each argument in Python
    first, about 1 µs an argument: a quarter of a partition actor's CPU went there when it
    published every event (scripts with thousands of arguments). Bytes on the wire are the
    same (floats as ``repr``, text as UTF-8); other arguments (``bytearray``, ``memoryview``,
    or a type Redis takes none of, refused with redis-py's ``DataError``) go to redis-py's."""

    def __init__(self) -> None:
        self._fallback = PythonRespSerializer(6000, Encoder("utf-8", "strict", False).encode).pack

    def pack(self, *args: Any) -> list[bytes]:
        first = args[0]
        if (first.__class__ is str and " " in first) or (first.__class__ is bytes and b" " in first):
            args = (*first.split(), *args[1:])  # "SCRIPT LOAD": a word each, as redis-py sends it
        try:
            return [hiredis.pack_command(args)]
        except TypeError:
            return self._fallback(*args)  # type: ignore[no-any-return]


def connect(url: str, **options: Any) -> redis.Redis:
    """A client for ``url`` (``options`` override the defaults, e.g. ``max_connections``)."""
    options = {"socket_timeout": REPLY_TIMEOUT_S, **options}
    if _is_cluster(url):
        options.pop("max_connections", None)  # per node in a cluster client; its default is ample
        return redis.cluster.RedisCluster.from_url(url, **options)  # type: ignore[return-value]
    return redis.Redis.from_url(url, command_packer=CommandPacker(), **options)


def connect_async(url: str, **options: Any) -> aioredis.Redis:
    """The asyncio client for ``url``, with the same defaults as :func:`connect`."""
    options = {"socket_timeout": REPLY_TIMEOUT_S, **options}
    if _is_cluster(url):
        options.pop("max_connections", None)
        return aiocluster.RedisCluster.from_url(url, **options)  # type: ignore[return-value]
    return aioredis.Redis.from_url(url, **options)


def is_cluster(client: Any) -> bool:
    """Whether ``client`` talks to a Redis Cluster."""
    return isinstance(client, (redis.cluster.RedisCluster, aiocluster.RedisCluster))


def _is_cluster(url: str) -> bool:
    """Asks the server; one that cannot be reached yet is taken for a single Redis (clients
    connect lazily, and a single Redis is the default)."""
    probe = redis.Redis.from_url(url, socket_timeout=REPLY_TIMEOUT_S, socket_connect_timeout=5)
    try:
        return bool(probe.info("cluster").get("cluster_enabled"))
    except redis.ConnectionError:
        return False
    finally:
        probe.close()
