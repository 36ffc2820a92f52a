"""Starting and stopping ESP's actors, and recording where the partitions live.

Three kinds of actor, each a thin shell made by ``actors.factory``: partition actors (the
virtual partitions, assigned by the pure ``runtime.log.partitioning.assign``), dispatchers
(webhooks and channels) and the contact-policy stage (its shards spread over its instances as
``shard % count == index``). What was started is recorded in Redis (``keys.META``) so that any
process can show it, stop it, or find a customer's actor (``actors.directory``). Every Ray call
goes through :class:`actors.factory.RayActors`; the rest is plain Python, unit-tested with a fake.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import redis

from actors.dispatcher import DispatcherActor
from actors.factory import ActorSpec, RayActors, actor_name
from actors.partition_actor import PartitionActor
from actors.policy_actor import PolicyActor
from runtime import keys
from runtime.errors import EspError
from runtime.log.partitioning import assign, partition_of, recorded_assignment
from runtime.settings import EspSettings

STOP_TIMEOUT_S = 30.0  # a graceful stop checkpoints; past this the actors are killed anyway
PLACE_TIMEOUT_S = 60.0  # new partition actors of a rescale must be running by then, or nothing moves


@dataclass(frozen=True)
class Move:
    """Partitions one rescale step moved, and how long they were not read (release + adopt)."""

    partitions: list[int]
    source: int  # the actor index that released them
    target: int  # the actor index that adopted them
    pause_ms: float


@dataclass(frozen=True)
class Rescaled:
    """What ``esp scale --actors`` did."""

    before: int
    after: int
    moves: list[Move]
    seconds: float


def planned_moves(owners: dict[int, int], target: list[list[int]]) -> dict[tuple[int, int], list[int]]:
    """The partitions to move, grouped by (from actor, to actor): those whose owner in
    ``target`` is not their owner now (``owners[p]``)."""
    moves: dict[tuple[int, int], list[int]] = {}
    for new, parts in enumerate(target):
        for p in parts:
            if owners[p] != new:
                moves.setdefault((owners[p], new), []).append(p)
    return moves


@dataclass(frozen=True)
class Started:
    """Handles of the actors one ``start`` made (non-detached actors live as long as these)."""

    partitions: list[Any]
    dispatchers: list[Any]
    policy: list[Any]


def check_partitions(client: redis.Redis, partitions: int) -> None:
    """Virtual partitions are fixed once data exists: hash(customer) mod P must not change."""
    recorded = client.hget(keys.META, "partitions")
    if recorded is not None and int(recorded) != partitions:
        raise EspError(
            f"this store was created with {int(recorded)} virtual partitions, but the settings say "
            f"{partitions}; partitions are fixed at creation (set ESP_PARTITIONS={int(recorded)})",
            reason="partitions_mismatch",
        )


def live_actors(client: redis.Redis, *, now_ms: int, max_age_ms: int = 10_000) -> list[int]:
    """Indices of partition actors whose last heartbeat is recent."""
    beats = client.hgetall(keys.HEARTBEATS)
    return sorted(int(i) for i, at in beats.items() if now_ms - int(at) <= max_age_ms)


def owner_index(client: redis.Redis, customer: str) -> int:
    """The index of the partition actor that holds ``customer``'s state."""
    meta = client.hgetall(keys.META)
    assignment = json.loads(meta[b"assignment"]) if b"assignment" in meta else []
    partition = partition_of(customer, int(meta.get(b"partitions", 0) or 1))
    index = next((i for i, parts in enumerate(assignment) if partition in parts), None)
    if index is None:
        raise EspError("no partition actor owns this customer's partition; is ESP up?", reason="not_ready")
    return index


class Coordinator:
    """Starts, finds and stops the actors of one ESP deployment."""

    def __init__(self, settings: EspSettings, client: redis.Redis, actors: RayActors | None = None) -> None:
        self._settings = settings
        self._redis = client
        self._actors = actors or RayActors()
        self._made: list[Any] = []  # actors a rescale made: a non-detached one lives while a handle does

    def start(self, *, detached: bool) -> Started:
        """Every actor, each kind waited for before the next; the counts are recorded."""
        partitions = self.start_partitions(detached=detached)
        dispatchers = self._start_group(DispatcherActor, "dispatcher", detached=detached)
        return Started(partitions, dispatchers, self._start_group(PolicyActor, "policy", detached=detached))

    def start_partitions(self, *, detached: bool) -> list[Any]:
        """One actor per assignment slot (``settings.actors``, or one per free CPU, at most one
        per partition); the assignment is recorded once they all run."""
        check_partitions(self._redis, self._settings.partitions)
        count = self._settings.actors or max(1, self._actors.cpus())
        assignment = assign(self._settings.partitions, min(count, self._settings.partitions))
        wire, cpus = self._settings.to_wire(), self._settings.actor_num_cpus
        handles = [
            self._actors.create(ActorSpec(PartitionActor, "partition", i, cpus), wire, parts, i, detached=detached)
            for i, parts in enumerate(assignment)
        ]
        self._actors.wait_ready(handles)
        pipe = self._redis.pipeline()
        pipe.delete(keys.HEARTBEATS)
        pipe.hset(
            keys.META,
            mapping={
                "assignment": json.dumps(assignment),
                "partitions": self._settings.partitions,
                "detached": int(detached),  # actors made later (esp scale) live as long as these
            },
        )
        pipe.execute()
        return handles

    def rescale(self, count: int) -> Rescaled:
        """Change the number of partition actors to ``count`` (at most one per partition) while
        the stream goes on. Each partition that moves is released by its old actor (a
        checkpoint) and adopted by its new one (from that checkpoint), one group of partitions
        at a time, and the record is updated after each move, so a crash in between leaves it
        true. Actors left without partitions are stopped."""
        current = recorded_assignment(self._redis)
        if not current:
            raise EspError("no partition actors are recorded; is ESP up?", reason="not_ready")
        count = max(1, min(count, self._settings.partitions))
        target = assign(self._settings.partitions, count)
        detached = self._redis.hget(keys.META, "detached") != b"0"
        started = time.monotonic()
        wire, cpus = self._settings.to_wire(), self._settings.actor_num_cpus
        added = [
            self._actors.create(ActorSpec(PartitionActor, "partition", i, cpus), wire, [], i, detached=detached)
            for i in range(len(current), count)
        ]
        try:
            self._actors.wait_ready(added, timeout_s=PLACE_TIMEOUT_S)
        except TimeoutError:
            self._actors.stop(added, timeout_s=STOP_TIMEOUT_S)
            raise EspError(
                f"{len(added)} more partition actors could not be placed within {PLACE_TIMEOUT_S:.0f}s: the cluster "
                f"lacks free CPUs (each reserves ESP_ACTOR_NUM_CPUS={self._settings.actor_num_cpus}); add nodes "
                "or lower that, and scale again. Nothing moved.",
                reason="no_capacity",
            ) from None
        self._made += added
        before = len(current)
        current += [[] for _ in range(before, count)]  # the new actors own nothing yet
        handles = {i: self._actors.find(actor_name("partition", i)) for i in range(len(current))}
        owners = {p: i for i, parts in enumerate(current) for p in parts}
        moves = []
        for (old, new), parts in planned_moves(owners, target).items():
            began = time.monotonic()
            self._actors.call(handles[old], "release", parts)
            try:
                self._actors.call(handles[new], "adopt", parts)
            except Exception:  # never leave them unowned: back to the actor that released them
                self._actors.call(handles[old], "adopt", parts)
                raise
            moves.append(Move(parts, old, new, round((time.monotonic() - began) * 1000, 1)))
            current = [[p for p in ps if p not in parts] for ps in current]
            current[new] = sorted(current[new] + parts)
            self._redis.hset(keys.META, "assignment", json.dumps(current))
        retired = range(count, before)
        self._actors.stop([handles[i] for i in retired if handles[i] is not None], timeout_s=STOP_TIMEOUT_S)
        self._redis.hset(keys.META, "assignment", json.dumps(target))
        if retired:
            self._redis.hdel(keys.HEARTBEATS, *map(str, retired))
        return Rescaled(before, count, moves, round(time.monotonic() - started, 1))

    def cluster_cpus(self) -> int:
        """Partition actors for the cluster as it is now (``esp scale --rebalance``): one per
        CPU of its live nodes, or ``settings.actors`` when that is set."""
        return self._settings.actors or max(1, self._actors.total_cpus())

    def _start_group(self, cls: type, role: str, *, detached: bool) -> list[Any]:
        """``settings.dispatchers`` actors of ``role``, each told its index and the count (how
        dispatchers split destinations and the policy stage its shards). The policy stage runs
        as many instances as there are dispatchers: with no delivery, nothing is decided either."""
        count, wire, cpus = self._settings.dispatchers, self._settings.to_wire(), self._settings.dispatcher_num_cpus
        handles = [
            self._actors.create(ActorSpec(cls, role, i, cpus), wire, i, count, detached=detached) for i in range(count)
        ]
        self._actors.wait_ready(handles)
        self._redis.hset(keys.META, f"{role}_actors", count)
        return handles

    def find(self, role: str, count: int) -> list[Any]:
        """The running actors of ``role`` among indices ``0..count-1``."""
        found = (self._actors.find(actor_name(role, i)) for i in range(count))
        return [handle for handle in found if handle is not None]

    def owner(self, customer: str) -> Any:
        """The partition actor that holds ``customer``'s state."""
        name = actor_name("partition", owner_index(self._redis, customer))
        handle = self._actors.find(name)
        if handle is None:
            raise EspError(f"partition actor {name} is not running; is ESP up?", reason="not_ready")
        return handle

    def liveness(self, now_ms: int) -> tuple[int, int]:
        """(partition actors with a recent heartbeat, partition actors started)."""
        return len(live_actors(self._redis, now_ms=now_ms)), len(recorded_assignment(self._redis))

    def placement(self, *, timeout_s: float = 10.0) -> dict[str, Any]:
        """Where the partition actors run (``esp status``): the cluster's nodes and, per
        partition actor, its node, PID, the partitions it owns and their lag (entries not yet
        read). An actor that does not answer in time (restarting) is listed with its recorded
        partitions and ``"answering": False``."""
        assignment = recorded_assignment(self._redis)
        handles = {i: self._actors.find(actor_name("partition", i)) for i in range(len(assignment))}
        found = [i for i, h in handles.items() if h is not None]
        answers = self._actors.statuses([handles[i] for i in found], timeout_s=timeout_s)
        statuses = dict(zip(found, answers, strict=True))
        actors = []
        for i, parts in enumerate(assignment):
            st = statuses.get(i)
            lag = {int(p): n for p, n in (st or {}).get("lag", {}).items()}
            actors.append(
                {
                    "index": i,
                    "name": actor_name("partition", i),
                    "answering": st is not None,
                    "node_id": st and st.get("node_id"),
                    "pid": st and st.get("pid"),
                    "partitions": list(parts),
                    "lag": sum(lag.values()) if st else None,
                    "lag_by_partition": lag,
                }
            )
        nodes = self._actors.nodes()
        for node in nodes:
            node["actors"] = [a["index"] for a in actors if a["node_id"] == node["node_id"]]
        return {"nodes": nodes, "actors": actors}

    def stop(self) -> None:
        """Stop what the records say runs: the policy stage and dispatchers first (they take
        what partitions publish), then the partition actors, each checkpointing as it stops."""
        for role in ("policy", "dispatcher"):
            count = int(self._redis.hget(keys.META, f"{role}_actors") or 0)
            self._actors.stop(self.find(role, count), timeout_s=STOP_TIMEOUT_S)
        partitions = self.find("partition", len(recorded_assignment(self._redis)))
        self._actors.stop(partitions, timeout_s=STOP_TIMEOUT_S)
