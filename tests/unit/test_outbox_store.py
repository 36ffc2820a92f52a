"""The outbox's contract, checked on both implementations: Redis (on a real redis-server) and
in memory. An output is published once per id: its streams, trace notes, tag action and last
fires are written with it, and a replay writes none of them (invariant 3)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
import pytest
import redis

from runtime import keys
from runtime.events.memory import MemoryProfileStore
from runtime.events.profiles import ProfileStorage, ProfileStore
from runtime.log.partition_log import Fenced
from runtime.log.partitioning import DEFAULT_PARTITIONS, partition_of
from runtime.subscriptions.memory import MemoryOutbox
from runtime.subscriptions.outbox import FIRES_KEPT, Outbox, OutboxStorage, Publication, last_fires
from runtime.subscriptions.topics import TopicRouter

ROUTER = TopicRouter({"all": ["business.*"], "x-only": ["business.x"]})


@dataclass
class Seen:
    """One implementation with a way to read back what publishing wrote."""

    outbox: OutboxStorage
    profiles: ProfileStorage
    client: redis.Redis | None = None  # None: in memory

    def entries(self, subscription: str) -> list[dict[str, Any]]:
        stream = keys.subscription_stream(subscription)
        if self.client is None:
            assert isinstance(self.outbox, MemoryOutbox)
            return self.outbox.entries(stream)
        return [orjson.loads(fields[b"e"]) for _, fields in self.client.xrange(stream)]

    def notes(self, source: str, event_id: str) -> list[dict[str, Any]]:
        if self.client is None:
            assert isinstance(self.outbox, MemoryOutbox)
            return self.outbox.notes(source, event_id)
        pipe = self.client.pipeline(transaction=False)  # in the partition of the output's customer
        for p in range(DEFAULT_PARTITIONS):
            pipe.lrange(keys.hits(p, source, event_id), 0, -1)
        return [orjson.loads(raw) for found in pipe.execute() for raw in found]

    def fires(self, customer: str, rule: str | None = None, limit: int = 5) -> dict[str, list[dict[str, Any]]]:
        if self.client is None:
            assert isinstance(self.outbox, MemoryOutbox)
            return self.outbox.last_fires(customer, rule, limit)
        return last_fires(self.client, customer, rule, limit)


@pytest.fixture(params=["memory", "redis", "redis-two-steps"])
def seen(request: pytest.FixtureRequest) -> Seen:
    """In memory; on a single Redis as it runs there (one script); and in the two steps of a
    Redis Cluster (emit, forward), on a single Redis."""
    if request.param == "memory":
        profiles = MemoryProfileStore()
        return Seen(MemoryOutbox(horizon_s=60, maxlen=10_000, profiles=profiles), profiles)
    client = request.getfixturevalue("redis_client")
    direct = request.param == "redis"
    return Seen(Outbox(client, horizon_s=60, maxlen=10_000, direct=direct), ProfileStore(client), client)


def output(i: int, topic: str = "business.x", customer: str = "ann", **data: Any) -> Publication:
    event = {"id": f"o{i}", "type": topic, "subject": customer, "time": f"t{i}", "data": {"rule": "r", **data}}
    return Publication(f"o{i}", topic, event, (("src", f"e{i}"),))


def test_each_output_reaches_the_streams_that_want_it_once(seen: Seen) -> None:
    outputs = [output(0), output(1, topic="business.y"), output(0)]  # o0 twice in one batch
    assert seen.outbox.publish(outputs, ROUTER) == 2
    assert seen.outbox.publish(outputs, ROUTER) == 0  # a replay
    assert seen.outbox.publish([], ROUTER) == 0
    assert [e["id"] for e in seen.entries("all")] == ["o0", "o1"]
    assert [(e["id"], e["topic"]) for e in seen.entries("x-only")] == [("o0", "business.x")]
    assert seen.entries("nobody") == []


def test_the_trace_of_each_input_notes_the_output_once(seen: Seen) -> None:
    seen.outbox.publish([output(0)], ROUTER)
    seen.outbox.publish([output(0)], ROUTER)
    assert seen.notes("src", "e0") == [{"output": "o0", "topic": "business.x", "rule": "r"}]
    assert seen.notes("src", "e9") == []


def test_tag_actions_apply_once_and_keep_the_tags_sorted(seen: Seen) -> None:
    seen.profiles.put("ann", {"tags": ["zeta", "vip"], "tier": "gold"})
    seen.outbox.publish([output(0, tag={"set": "alpha"}), output(1, tag={"clear": "vip"})], ROUTER)
    seen.outbox.publish([output(0, tag={"set": "alpha"})], ROUTER)
    seen.outbox.publish([output(2, customer="bob", tag={"clear": "none"})], ROUTER)
    assert seen.profiles.get_many(["ann", "bob"]) == {
        "ann": {"tags": ["alpha", "zeta"], "tier": "gold"},
        "bob": {"tags": []},
    }


def test_last_fires_are_newest_first_capped_and_only_rule_outputs(seen: Seen) -> None:
    atomic = Publication("atomic/src/a0", "atomic.x", {"subject": "ann", "data": {"rule": "looks-like-one"}})
    seen.outbox.publish([output(0), output(1), output(2, rule="q"), atomic], ROUTER)
    fires = seen.fires("ann")
    assert [f["id"] for f in fires["r"]] == ["o1", "o0"] and "looks-like-one" not in fires
    assert fires["q"] == [{"rule": "q", "version": None, "topic": "business.x", "id": "o2", "time": "t2", "events": []}]
    assert seen.fires("ann", rule="q") == {"q": fires["q"]} and seen.fires("ann", limit=1)["r"] == fires["r"][:1]
    seen.outbox.publish([output(i) for i in range(3, 3 + FIRES_KEPT)], ROUTER)
    assert "q" not in seen.fires("ann", limit=FIRES_KEPT)  # trimmed away by newer fires of r
    assert len(seen.fires("ann", limit=100)["r"]) == FIRES_KEPT and seen.fires("bob") == {}


def test_memory_outbox_forgets_an_output_after_the_horizon() -> None:
    now = [0.0]
    outbox = MemoryOutbox(horizon_s=60, maxlen=2, clock=lambda: now[0])
    assert outbox.publish([output(0)], ROUTER) == 1
    now[0] = 59.9
    assert outbox.publish([output(0)], ROUTER) == 0
    now[0] = 60.0
    assert outbox.publish([output(0), output(1)], ROUTER) == 2  # as a Redis key expiring at the horizon
    assert [e["id"] for e in outbox.entries(keys.subscription_stream("all"))] == ["o0", "o1"]  # maxlen 2


def test_outputs_left_in_the_outbox_by_a_crash_are_forwarded_once_by_the_next_owner(
    redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Invariant 3 across the two publishing steps: a runner that dies after emitting and
    before forwarding leaves its outputs in the partition's outbox; the runner that takes the
    partition forwards them, and forwarding again (a second crash, before the records left the
    outbox) adds none of them twice."""
    crashed = Outbox(redis_client, horizon_s=60, maxlen=10_000, direct=False)
    monkeypatch.setattr(crashed, "forward", lambda partitions: 0)  # dies between emit and forward
    assert crashed.publish([output(0), output(1)], ROUTER) == 2
    assert redis_client.xlen(keys.subscription_stream("all")) == 0  # emitted, not delivered yet
    partition = partition_of("ann", DEFAULT_PARTITIONS)
    successor = Outbox(redis_client, horizon_s=60, maxlen=10_000, direct=False)

    def dies(forwarded: object) -> None:
        raise ConnectionError("died before deleting what it forwarded")

    monkeypatch.setattr(successor, "_remove", dies)
    with pytest.raises(ConnectionError):
        successor.forward([partition])
    assert redis_client.xlen(keys.outbox(partition)) == 2  # forwarded, still in the outbox
    third = Outbox(redis_client, horizon_s=60, maxlen=10_000, direct=False)
    crashed.publish([output(2)], ROUTER)  # a newer output waits behind them
    assert third.forward([partition]) == 3
    assert [orjson.loads(f[b"e"])["id"] for _, f in redis_client.xrange(keys.subscription_stream("all"))] == [
        "o0",
        "o1",
        "o2",
    ]
    assert redis_client.xlen(keys.outbox(partition)) == 0
    assert third.publish([output(0)], ROUTER) == 0  # and the output stays published once


def test_forwarding_marks_are_kept_per_partition(redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stream remembers the newest outbox entry it added per partition: a partition whose
    records wait longer (older entry ids than another partition's forwarded ones) still gets
    every record forwarded, once."""
    customers = ["ann", *(f"c{i}" for i in range(100))]
    other = next(c for c in customers if partition_of(c, DEFAULT_PARTITIONS) != partition_of("ann", DEFAULT_PARTITIONS))
    late = Outbox(redis_client, horizon_s=60, maxlen=10_000, direct=False)
    monkeypatch.setattr(late, "forward", lambda partitions: 0)
    late.publish([output(0, customer=other)], ROUTER)  # the older entry, left unforwarded
    outbox = Outbox(redis_client, horizon_s=60, maxlen=10_000, direct=False)
    outbox.publish([output(1), output(2)], ROUTER)  # newer entries of ann's partition, forwarded
    outbox.forward([partition_of(other, DEFAULT_PARTITIONS)])
    outbox.forward([partition_of(c, DEFAULT_PARTITIONS) for c in ("ann", other)])  # again: nothing twice
    ids = [orjson.loads(f[b"e"])["id"] for _, f in redis_client.xrange(keys.subscription_stream("all"))]
    assert sorted(ids) == ["o0", "o1", "o2"] and len(ids) == 3


def test_a_publication_with_a_log_position_must_name_its_partition() -> None:
    """The position is compared with its log partition's mark; routed by its subject instead, it
    could be compared with another partition's and wrongly skipped. Refused before any Redis call."""
    outbox = Outbox(redis.Redis(port=1), horizon_s=60, maxlen=10)  # never connected
    event = {"specversion": "1.0", "id": "e1", "source": "s", "type": "t", "subject": "c1"}
    with pytest.raises(ValueError, match="names no partition"):
        outbox.publish([Publication("atomic/s/e1", "atomic.t", event, position=("1-0", 0))], ROUTER)


@pytest.mark.parametrize("direct", [True, False], ids=["one-script", "two-steps"])
def test_a_partition_taken_by_another_owner_publishes_nothing_and_the_others_publish(
    redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch, direct: bool
) -> None:
    """A publisher whose epoch of one partition is stale: that partition's outputs reach no
    stream, the other partitions' do (over several scripts on a single Redis), and Fenced names
    the taken partition alone."""
    monkeypatch.setattr("runtime.subscriptions.outbox.PUBLISH_BATCH", 3)  # two partitions per script
    customers = {partition_of(f"c{i}", DEFAULT_PARTITIONS): f"c{i}" for i in range(200)}
    partitions = sorted(customers)[:5]
    taken = partitions[3]  # the second of the second script
    fence = {p: 1 for p in partitions}
    for p in partitions:
        redis_client.set(keys.epoch(p), 2 if p == taken else 1)
    pubs = [output(10 * k + j, customer=customers[p]) for k, p in enumerate(partitions) for j in range(2)]
    outbox = Outbox(redis_client, horizon_s=60, maxlen=10_000, direct=direct)
    with pytest.raises(Fenced) as fenced:
        outbox.publish(pubs, ROUTER, fence=fence)
    assert fenced.value.partitions == [taken]
    published = [orjson.loads(f[b"e"])["id"] for _, f in redis_client.xrange(keys.subscription_stream("all"))]
    assert sorted(published) == sorted(p.id for p in pubs if p.event["subject"] != customers[taken])
    redis_client.set(keys.epoch(taken), 1)  # its owner again: its outputs are new, the others are not
    assert outbox.publish(pubs, ROUTER, fence=fence) == 2
