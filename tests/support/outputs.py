"""Test helpers about published outputs."""

from __future__ import annotations

import redis

from runtime import keys
from runtime.log.partitioning import DEFAULT_PARTITIONS, partition_of


def forget_published(client: redis.Redis, output_id: str, customer: str) -> None:
    """Make the outbox forget it published ``output_id`` (as after its horizon): its dedupe
    key and its forwarded marks, so publishing it again replays it."""
    client.delete(keys.emitted(partition_of(customer, DEFAULT_PARTITIONS), output_id))
    for mark in client.scan_iter(match=f"*:fwd:{keys.part(output_id)}"):
        client.delete(mark)
