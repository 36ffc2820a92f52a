"""Partitioning by customer: virtual partition = crc32(customer id) mod P, and the pure
assignment of virtual partitions to actors."""

from __future__ import annotations

import zlib


def partition_of(customer: str, partitions: int) -> int:
    """The virtual partition of ``customer``: stable across processes, runs and machines."""
    return zlib.crc32(customer.encode()) % partitions


def assign(partitions: int, actors: int) -> list[list[int]]:
    """Spread ``partitions`` virtual partitions over ``actors`` round robin."""
    if actors < 1:
        raise ValueError(f"need at least one actor, got {actors}")
    return [list(range(i, partitions, actors)) for i in range(actors)]
