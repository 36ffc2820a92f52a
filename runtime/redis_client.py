"""How ESP's processes connect to Redis: one place for the client settings.

redis-py waits 5 s for a reply by default. Redis on a busy disk stalls longer than that while
it rewrites its append-only file (a 3 s rewrite was seen on a loaded 2-core test machine, and
a partition actor's outbox write timed out in it). A worker that gives up restarts from its
checkpoints, which costs far more than waiting, so workers wait up to ``REPLY_TIMEOUT_S``.
"""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio as aioredis

REPLY_TIMEOUT_S = 30.0  # how long a command may wait for its reply before the connection is given up


def connect(url: str, **options: Any) -> redis.Redis:
    """A client for ``url`` (``options`` override the defaults, e.g. ``max_connections``)."""
    return redis.Redis.from_url(url, **{"socket_timeout": REPLY_TIMEOUT_S, **options})


def connect_async(url: str, **options: Any) -> aioredis.Redis:
    """The asyncio client for ``url``, with the same defaults as :func:`connect`."""
    return aioredis.Redis.from_url(url, **{"socket_timeout": REPLY_TIMEOUT_S, **options})
