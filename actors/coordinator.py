"""Creating, finding and stopping the partition actors, and the partition assignment.

The assignment (virtual partition -> actor index) is pure (``runtime.log.partitioning.assign``)
and recorded in Redis so that any process can show it.
"""

from __future__ import annotations

import json
from typing import Any

import ray
import redis

from actors import partition_actor
from runtime import keys
from runtime.errors import EspError
from runtime.log.partitioning import assign
from runtime.settings import EspSettings


def actor_count(settings: EspSettings) -> int:
    if settings.actors:
        return settings.actors
    return max(1, int(ray.available_resources().get("CPU", 1) // 1))


def check_partitions(client: redis.Redis, partitions: int) -> None:
    """Virtual partitions are fixed once data exists: hash(customer) mod P must not change."""
    recorded = client.hget(keys.META, "partitions")
    if recorded is not None and int(recorded) != partitions:
        raise EspError(
            f"this store was created with {int(recorded)} virtual partitions, but the settings say "
            f"{partitions}; partitions are fixed at creation (set ESP_PARTITIONS={int(recorded)})",
            reason="partitions_mismatch",
        )


def start_partition_actors(settings: EspSettings, *, detached: bool = True) -> list[Any]:
    """Start one actor per assignment slot and record the assignment."""
    client = redis.Redis.from_url(settings.effective_redis_url())
    check_partitions(client, settings.partitions)
    assignment = assign(settings.partitions, min(actor_count(settings), settings.partitions))
    handles = [
        partition_actor.create(settings, partitions, index, detached=detached)
        for index, partitions in enumerate(assignment)
    ]
    ray.get([h.status.remote() for h in handles])
    pipe = client.pipeline()
    pipe.delete(keys.HEARTBEATS)
    pipe.hset(keys.META, mapping={"assignment": json.dumps(assignment), "partitions": settings.partitions})
    pipe.execute()
    return handles


def recorded_assignment(client: redis.Redis) -> list[list[int]]:
    raw = client.hget(keys.META, "assignment")
    return json.loads(raw) if raw else []


def live_actors(client: redis.Redis, *, now_ms: int, max_age_ms: int = 10_000) -> list[int]:
    """Indices of partition actors whose last heartbeat is recent."""
    beats = client.hgetall(keys.HEARTBEATS)
    return sorted(int(i) for i, at in beats.items() if now_ms - int(at) <= max_age_ms)


def partition_actors(count: int) -> list[Any]:
    handles = []
    for index in range(count):
        try:
            handles.append(ray.get_actor(partition_actor.actor_name(index), namespace=partition_actor.NAMESPACE))
        except ValueError:
            continue
    return handles


def stop_partition_actors(count: int, *, graceful: bool = True) -> None:
    handles = partition_actors(count)
    if graceful:
        try:
            ray.get([h.stop.remote() for h in handles], timeout=30)
        except Exception:  # best effort: the actor may already be gone
            pass
    for handle in handles:
        ray.kill(handle, no_restart=True)


def owner_of(client: redis.Redis, customer: str) -> Any:
    """The partition actor that holds ``customer``'s state."""
    from runtime.log.partitioning import partition_of

    meta = client.hgetall(keys.META)
    assignment = json.loads(meta[b"assignment"]) if b"assignment" in meta else []
    partition = partition_of(customer, int(meta.get(b"partitions", 0) or 1))
    index = next((i for i, parts in enumerate(assignment) if partition in parts), None)
    if index is None:
        raise EspError("no partition actor owns this customer's partition; is ESP up?", reason="not_ready")
    return ray.get_actor(partition_actor.actor_name(index), namespace=partition_actor.NAMESPACE)
