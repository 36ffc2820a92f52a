"""Partitioning by customer: virtual partition = crc32(customer id) mod P, the pure
assignment of virtual partitions to actors, and the assignment as last recorded in Redis."""

from __future__ import annotations

import json
import zlib
from typing import TYPE_CHECKING

from runtime import keys

if TYPE_CHECKING:
    import redis


DEFAULT_PARTITIONS = 64  # virtual partitions of a new ESP (ESP_PARTITIONS)


def partition_of(customer: str, partitions: int) -> int:
    """The virtual partition of ``customer``: stable across processes, runs and machines."""
    return zlib.crc32(customer.encode()) % partitions


def assign(partitions: int, actors: int) -> list[list[int]]:
    """Spread ``partitions`` virtual partitions over ``actors`` round robin."""
    if actors < 1:
        raise ValueError(f"need at least one actor, got {actors}")
    return [list(range(i, partitions, actors)) for i in range(actors)]


def recorded_assignment(client: redis.Redis) -> list[list[int]]:
    """The virtual partitions of each partition actor, by index, as the coordinator last
    recorded them (at start, and after each partition that ``esp scale`` moved)."""
    raw = client.hget(keys.META, "assignment")
    return json.loads(raw) if raw else []
