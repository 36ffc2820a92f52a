"""Test helpers about published outputs."""

from __future__ import annotations

import redis

from runtime import keys
from runtime.log.partitioning import DEFAULT_PARTITIONS, partition_of


def forget_published(client: redis.Redis, output_id: str, customer: str) -> None:
    """Make the outbox forget it published ``output_id`` (as after its horizon): its dedupe
    key, so publishing it again replays it (forwarding marks outbox entries, not outputs)."""
    client.delete(keys.emitted(partition_of(customer, DEFAULT_PARTITIONS), output_id))
