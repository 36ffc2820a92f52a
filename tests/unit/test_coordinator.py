"""actors.coordinator without Ray or Redis: a fake of ``RayActors`` records what would be made,
found and stopped; a dict stands in for the coordinator's few Redis hash calls."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from actors.coordinator import Coordinator
from actors.dispatcher import DispatcherActor
from actors.factory import ActorSpec, actor_name
from actors.partition_actor import PartitionActor
from actors.policy_actor import PolicyActor, shards_of
from runtime import keys
from runtime.errors import EspError
from runtime.log.partitioning import partition_of
from runtime.settings import EspSettings


def _bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


class FakeRedis:
    """Hashes only, with redis-py's answers in bytes; a pipeline runs its calls at once."""

    def __init__(self) -> None:
        self.hashes: dict[str, dict[bytes, bytes]] = {}

    def hget(self, key: str, name: str) -> bytes | None:
        return self.hashes.get(key, {}).get(_bytes(name))

    def hgetall(self, key: str) -> dict[bytes, bytes]:
        return dict(self.hashes.get(key, {}))

    def hset(self, key: str, name: str | None = None, value: Any = None, mapping: dict | None = None) -> None:
        fields = dict(mapping or {})
        if name is not None:
            fields[name] = value
        self.hashes.setdefault(key, {}).update({_bytes(k): _bytes(v) for k, v in fields.items()})

    def delete(self, key: str) -> None:
        self.hashes.pop(key, None)

    def hdel(self, key: str, *names: str) -> None:
        for name in names:
            self.hashes.get(key, {}).pop(_bytes(name), None)

    def pipeline(self) -> FakeRedis:
        return self

    def execute(self) -> None:
        return None


@dataclass
class Handle:
    spec: ActorSpec
    args: tuple
    detached: bool


@dataclass
class FakeActors:
    """What the coordinator asked of Ray, and a cluster of named actors."""

    free_cpus: int = 3
    capacity: int = 1000  # actors the cluster can place
    failing: set[str] = field(default_factory=set)  # actors whose calls fail
    running: dict[str, Handle] = field(default_factory=dict)
    waited: list[list[str]] = field(default_factory=list)
    stopped: list[list[str]] = field(default_factory=list)
    calls: list[tuple[Any, ...]] = field(default_factory=list)

    def create(self, spec: ActorSpec, *args: Any, detached: bool) -> Handle:
        return self.running.setdefault(spec.name, Handle(spec, args, detached))

    def find(self, name: str) -> Handle | None:
        return self.running.get(name)

    def wait_ready(self, handles: list[Handle], *, timeout_s: float | None = None) -> None:
        self.waited.append([h.spec.name for h in handles])
        if len(self.running) > self.capacity:
            raise TimeoutError("no room")

    def stop(self, handles: list[Handle], *, timeout_s: float) -> None:
        self.stopped.append([h.spec.name for h in handles])
        for handle in handles:
            del self.running[handle.spec.name]

    def cpus(self) -> int:
        return self.free_cpus

    def total_cpus(self) -> int:
        return self.free_cpus

    def call(self, handle: Handle, method: str, *args: Any) -> None:
        self.calls.append((handle.spec.name, method, *args))
        if handle.spec.name in self.failing:
            raise RuntimeError(f"{handle.spec.name} died")


def settings(tmp_path, **overrides: Any) -> EspSettings:
    return EspSettings(state_dir=tmp_path, redis_url="redis://localhost:1/0", partitions=8, **overrides)


def coordinator(tmp_path, client: FakeRedis, ray_actors: FakeActors, **overrides: Any) -> Coordinator:
    return Coordinator(settings(tmp_path, **overrides), client, ray_actors)  # type: ignore[arg-type]


def test_start_makes_every_actor_one_way_and_records_the_assignment(tmp_path):
    client, actors = FakeRedis(), FakeActors()
    client.hset(keys.HEARTBEATS, "7", 1)  # a heartbeat of an earlier deployment
    started = coordinator(tmp_path, client, actors, actors=2, dispatchers=2).start(detached=True)

    assert [h.spec.name for h in started.partitions] == ["esp-partition-0", "esp-partition-1"]
    assert [h.spec.name for h in started.dispatchers] == ["esp-dispatcher-0", "esp-dispatcher-1"]
    assert [h.spec.name for h in started.policy] == ["esp-policy-0", "esp-policy-1"]
    assert {h.spec.cls for h in started.partitions} == {PartitionActor}
    assert {h.spec.cls for h in started.dispatchers} == {DispatcherActor}
    assert {h.spec.cls for h in started.policy} == {PolicyActor}
    assert all(h.detached for h in actors.running.values())
    assert [h.args[1:] for h in started.policy] == [(0, 2), (1, 2)]  # (index, count): the sharding
    parts = [h.args[1] for h in started.partitions]
    assert sorted(p for ps in parts for p in ps) == list(range(8))
    groups = (started.partitions, started.dispatchers, started.policy)  # each kind waited for in turn
    assert actors.waited == [[h.spec.name for h in group] for group in groups]
    assert json.loads(client.hget(keys.META, "assignment")) == parts
    assert client.hgetall(keys.HEARTBEATS) == {}
    assert (client.hget(keys.META, "dispatcher_actors"), client.hget(keys.META, "policy_actors")) == (b"2", b"2")


def test_partition_actors_default_to_one_per_free_cpu_but_never_more_than_partitions(tmp_path):
    few = coordinator(tmp_path, FakeRedis(), FakeActors(free_cpus=3)).start_partitions(detached=False)
    many = coordinator(tmp_path, FakeRedis(), FakeActors(free_cpus=64)).start_partitions(detached=False)
    none = coordinator(tmp_path, FakeRedis(), FakeActors(free_cpus=0)).start_partitions(detached=False)
    assert (len(few), len(many), len(none)) == (3, 8, 1)
    assert not any(h.detached for h in few)


def test_the_partition_count_of_a_store_cannot_change(tmp_path):
    client, actors = FakeRedis(), FakeActors()
    client.hset(keys.META, "partitions", 16)
    with pytest.raises(EspError) as err:
        coordinator(tmp_path, client, actors).start(detached=False)
    assert err.value.reason == "partitions_mismatch"
    assert "16" in str(err.value) and "8" in str(err.value)
    assert actors.running == {}


def test_no_dispatchers_means_no_policy_stage_either(tmp_path):
    started = coordinator(tmp_path, FakeRedis(), FakeActors(), dispatchers=0).start(detached=False)
    assert (started.dispatchers, started.policy) == ([], [])


def test_stop_stops_what_the_records_name_policy_and_delivery_first(tmp_path):
    client, actors = FakeRedis(), FakeActors()
    coordinator(tmp_path, client, actors, actors=2, dispatchers=1).start(detached=True)
    del actors.running["esp-partition-1"]  # gone already: skipped, not an error
    coordinator(tmp_path, client, actors).stop()
    assert actors.stopped == [["esp-policy-0"], ["esp-dispatcher-0"], ["esp-partition-0"]]
    assert actors.running == {}


def test_owner_is_the_actor_whose_partitions_hold_the_customer(tmp_path):
    client, actors = FakeRedis(), FakeActors()
    coord = coordinator(tmp_path, client, actors, actors=3)
    started = coord.start_partitions(detached=False)
    for customer in ("c1", "c2", "13800000000"):
        owner = coord.owner(customer)
        assert partition_of(customer, 8) in owner.args[1]
        assert owner in started


def test_owner_is_not_ready_before_start_or_when_its_actor_is_gone(tmp_path):
    client, actors = FakeRedis(), FakeActors()
    coord = coordinator(tmp_path, client, actors, actors=1)
    with pytest.raises(EspError) as before:
        coord.owner("c1")
    coord.start_partitions(detached=False)
    del actors.running[actor_name("partition", 0)]
    with pytest.raises(EspError) as gone:
        coord.owner("c1")
    assert (before.value.reason, gone.value.reason) == ("not_ready", "not_ready")
    assert "esp-partition-0" in str(gone.value)


def test_liveness_counts_recent_heartbeats_against_the_actors_started(tmp_path):
    client = FakeRedis()
    coord = coordinator(tmp_path, client, FakeActors(), actors=3)
    assert coord.liveness(now_ms=50_000) == (0, 0)
    coord.start_partitions(detached=False)
    client.hset(keys.HEARTBEATS, mapping={"0": 45_000, "1": 40_000, "2": 39_999})  # max age 10 s
    assert coord.liveness(now_ms=50_000) == (2, 3)


@pytest.mark.parametrize(("count", "total"), [(1, 4), (2, 4), (3, 8), (4, 2)])
def test_policy_instances_split_the_shards_exactly(count, total):
    owned = [shards_of(i, count, total) for i in range(count)]
    assert sorted(s for shards in owned for s in shards) == list(range(total))


def test_the_coordinator_never_started_ray(tmp_path, monkeypatch):
    import ray

    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("the coordinator called ray.init"))
    before = ray.is_initialized()  # an earlier test of the same session may have started Ray
    coordinator(tmp_path, FakeRedis(), FakeActors()).start(detached=False)
    assert ray.is_initialized() == before


def owners_after(calls: list[tuple[Any, ...]], start: list[list[int]]) -> dict[int, str]:
    """partition -> actor name, replaying the release/adopt calls over the starting assignment;
    checks that each partition is released by its owner before another adopts it."""
    owner: dict[int, str | None] = {p: actor_name("partition", i) for i, ps in enumerate(start) for p in ps}
    for name, method, parts in calls:
        for p in parts:
            if method == "release":
                assert owner[p] == name, f"{name} released partition {p} it did not own"
                owner[p] = None
            else:
                assert owner[p] is None, f"{name} adopted partition {p} before {owner[p]} released it"
                owner[p] = name
    return {p: o for p, o in owner.items() if o is not None}


@pytest.mark.parametrize(("before", "after"), [(2, 4), (4, 2), (3, 8), (8, 1), (2, 2)])
def test_rescale_hands_every_moving_partition_over_once_and_records_each_move(tmp_path, before, after):
    client, actors = FakeRedis(), FakeActors()
    coordinator(tmp_path, client, actors, actors=before).start_partitions(detached=True)
    start = json.loads(client.hget(keys.META, "assignment"))
    client.hset(keys.HEARTBEATS, str(before - 1), 1)

    result = coordinator(tmp_path, client, actors).rescale(after)

    final = json.loads(client.hget(keys.META, "assignment"))
    assert sorted(p for ps in final for p in ps) == list(range(8)) and len(final) == after
    expected = {p: actor_name("partition", i) for i, ps in enumerate(final) for p in ps}
    assert owners_after(actors.calls, start) == expected
    moved = sorted(p for m in result.moves for p in m.partitions)
    assert moved == sorted({p for i, ps in enumerate(final) for p in ps if p not in (start + [[]] * 8)[i]})
    assert len(actors.calls) == 2 * len(result.moves)
    running = sorted(n for n in actors.running if "partition" in n)
    assert running == sorted(actor_name("partition", i) for i in range(after))
    assert all(h.detached for h in actors.running.values())  # made like the ones 'esp up' made
    if after < before:
        assert client.hget(keys.HEARTBEATS, str(before - 1)) is None  # a retired actor is not "alive"


def test_rescale_without_room_for_new_actors_moves_nothing_and_says_why(tmp_path):
    client, actors = FakeRedis(), FakeActors()
    coordinator(tmp_path, client, actors, actors=2).start_partitions(detached=False)
    before = client.hget(keys.META, "assignment")
    actors.capacity = 3
    with pytest.raises(EspError) as err:
        coordinator(tmp_path, client, actors).rescale(4)
    assert err.value.reason == "no_capacity" and "ESP_ACTOR_NUM_CPUS" in str(err.value)
    assert actors.calls == [] and client.hget(keys.META, "assignment") == before
    assert sorted(actors.running) == ["esp-partition-0", "esp-partition-1"]  # the new ones stopped again


def test_a_failed_adoption_gives_the_partitions_back_to_their_old_actor(tmp_path):
    client, actors = FakeRedis(), FakeActors()
    coordinator(tmp_path, client, actors, actors=1).start_partitions(detached=False)
    actors.failing = {"esp-partition-1"}
    with pytest.raises(RuntimeError):
        coordinator(tmp_path, client, actors).rescale(2)
    moved = list(range(1, 8, 2))
    assert actors.calls == [
        ("esp-partition-0", "release", moved),
        ("esp-partition-1", "adopt", moved),
        ("esp-partition-0", "adopt", moved),
    ]
    assert json.loads(client.hget(keys.META, "assignment")) == [list(range(8))]  # nothing recorded as moved


def test_rescale_refuses_when_nothing_runs(tmp_path):
    with pytest.raises(EspError) as err:
        coordinator(tmp_path, FakeRedis(), FakeActors()).rescale(2)
    assert err.value.reason == "not_ready"
