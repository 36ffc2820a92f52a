"""Poison entries never stall a partition (invariant 10): a log entry whose processing raises is
retried a bounded number of times, then the failing events go to the quarantine with reason
``processing_error`` and the partition moves on; the good events around them still fire, once.

The poison is real, not mocked: entries written straight to the log (as a corrupt or legacy
entry would be, past ingestion's checks) and a profile written straight to Redis."""

from __future__ import annotations

import pytest

from runtime import keys
from runtime.config.store import ConfigStore
from runtime.errors import InputError, NotFound
from runtime.events.envelope import Event
from runtime.log.partition_log import PartitionLog
from runtime.log.partitioning import partition_of
from runtime.partition import PartitionRunner, StepFailed, StepStats, poison_key
from runtime.sources.quarantine import POISON_ATTEMPTS, PROCESSING_ERROR, QuarantineStore
from tests.support.runner import PARTITIONS, pulled, runner_settings

T0 = 1_790_000_000_000


def ev(i: int, customer: str, **data) -> Event:
    return Event(f"id{i}", "t.login", T0 + i * 1000, customer, customer, "src", data, T0)


def nested(depth: int) -> dict:
    """Data deeper than orjson writes (254): fine in the msgpack log, fatal when published."""
    value: dict = {"leaf": 1}
    for _ in range(depth):
        value = {"a": value}
    return value


def setup_config(client, *, where: str | None = None) -> None:
    store = ConfigStore(client)
    when = {"event": "t.login", "count": 2, "within": "1h", **({"where": where} if where else {})}
    store.put({"kind": "rule", "name": "pairs", "when": when, "then": [{"emit": "pair"}]})
    store.put({"kind": "subscription", "name": "out", "topics": ["business.*"]})
    store.put({"kind": "subscription", "name": "raw", "topics": ["atomic.*"]})


def same_partition(count: int) -> list[str]:
    """Customers that share a partition, so a poison event sits among good ones."""
    found: list[str] = []
    i = 0
    while len(found) < count:
        name = f"cust{i}"
        if partition_of(name, PARTITIONS) == partition_of("cust0", PARTITIONS):
            found.append(name)
        i += 1
    return found


def append(log: PartitionLog, events: list[Event]) -> None:
    """All events in one log entry (they share a partition)."""
    log.append({partition_of(events[0].customer, PARTITIONS): events}, now_ms=T0)


def run_until_settled(runner_for, limit: int = 10) -> int:
    """Step until the log is drained, recovering after each failed step as the actor does (a
    fresh runner each time when ``runner_for`` makes one: a crash loop). Returns the failures."""
    failures = 0
    runner = runner_for()
    runner.recover()
    while failures < limit:
        try:
            while runner.step(block_ms=10).entries:
                pass
            return failures
        except StepFailed:
            failures += 1
            runner = runner_for()
            runner.recover()
    raise AssertionError(f"still failing after {limit} tries")


def test_an_unpublishable_event_is_quarantined_after_bounded_tries_and_its_entry_neighbours_fire(
    redis_server, redis_client, tmp_path
):
    setup_config(redis_client)
    log = PartitionLog(redis_client, horizon_s=3600)
    a, b = same_partition(2)
    append(log, [ev(1, a), ev(2, a, deep=nested(300)), ev(3, a), ev(4, b)])  # the poison mid-entry
    append(log, [ev(5, a), ev(6, b), ev(7, a)])  # after it: must still fire
    runner = PartitionRunner(
        runner_settings(redis_server, tmp_path), list(range(PARTITIONS)), consumer="a", client=redis_client
    )

    failures = run_until_settled(lambda: runner)

    assert failures == POISON_ATTEMPTS - 1  # the last try sets it aside instead of failing
    quarantined = QuarantineStore(redis_client).list(reason=PROCESSING_ERROR)
    assert [(q["source"], q["id"]) for q in quarantined] == [("src", "id2")]
    assert f"failed {POISON_ATTEMPTS} times" in quarantined[0]["message"]
    assert "Recursion limit" in quarantined[0]["message"]
    assert '"deep"' in quarantined[0]["raw"]  # the payload is kept for an operator
    assert runner.totals.poison == 1
    raw = pulled(redis_client, "raw")
    assert sorted(e["id"] for e in raw) == ["id1", "id3", "id4", "id5", "id6", "id7"]  # once each
    pairs = pulled(redis_client, "out")
    assert sorted(e["subject"] for e in pairs) == [a, a, b]  # a: 1+3, 5+7; b: 4+6
    assert len({e["id"] for e in pairs}) == len(pairs)


def test_a_crash_loop_is_bounded_too_and_a_replay_does_not_quarantine_again(redis_server, redis_client, tmp_path):
    setup_config(redis_client)
    log = PartitionLog(redis_client, horizon_s=3600)
    (a,) = same_partition(1)
    append(log, [ev(1, a), ev(2, a, deep=nested(300))])
    append(log, [ev(3, a)])
    settings = runner_settings(redis_server, tmp_path)
    made = []

    def fresh_runner() -> PartitionRunner:  # a restarted actor: nothing survives in memory
        made.append(PartitionRunner(settings, list(range(PARTITIONS)), consumer=f"r{len(made)}", client=redis_client))
        return made[-1]

    assert run_until_settled(fresh_runner) == POISON_ATTEMPTS - 1
    assert sum(r.totals.poison for r in made) == 1
    # no checkpoint yet: one more restart replays the whole log, poison included
    again = fresh_runner()
    again.recover()
    while again.step(block_ms=10).entries:
        pass
    assert again.totals.poison == 0
    assert len(QuarantineStore(redis_client).list(reason=PROCESSING_ERROR)) == 1
    assert [e["subject"] for e in pulled(redis_client, "out")] == [a]  # 1+3, published once
    # a checkpoint past the poison forgets its counts
    again.checkpoint()
    assert redis_client.hlen(poison_key(partition_of(a, PARTITIONS))) == 0


def test_a_broken_profile_quarantines_only_its_customers_events(redis_server, redis_client, tmp_path):
    setup_config(redis_client, where="profile.tier != 'banned'")  # the rule reads profiles
    broken, good = same_partition(2)
    redis_client.set(keys.profile(broken), "not a hash")  # a key of the wrong type: every read of it raises
    redis_client.hset(keys.profile(good), "tier", '"gold"')
    log = PartitionLog(redis_client, horizon_s=3600)
    append(log, [ev(1, good), ev(2, broken), ev(3, good)])
    append(log, [ev(4, broken), ev(5, good), ev(6, good)])
    runner = PartitionRunner(
        runner_settings(redis_server, tmp_path), list(range(PARTITIONS)), consumer="a", client=redis_client
    )

    failures = run_until_settled(lambda: runner)

    quarantined = QuarantineStore(redis_client).list(reason=PROCESSING_ERROR)
    assert sorted(q["id"] for q in quarantined) == ["id2", "id4"]
    assert all("WRONGTYPE" in q["message"] for q in quarantined)
    assert failures == 2 * (POISON_ATTEMPTS - 1)  # each poison event: N tries, the last sets it aside
    assert runner.totals.poison == 2
    pairs = pulled(redis_client, "out")
    assert [e["subject"] for e in pairs] == [good, good]  # 1+3, 5+6


def test_the_poison_metric_counts_set_aside_events(redis_server, redis_client, tmp_path, monkeypatch):
    """The actor shell turns the runner's count into ``esp_poison_entries_total{stage="partition"}``
    (once each, including events set aside in a step that failed afterwards)."""
    from actors import partition_actor
    from runtime import metrics as m

    recorded: list[tuple[str, float, dict]] = []

    class Recorder:
        def __init__(self, spec):
            self.spec = spec

        def inc(self, value, tags=None):
            recorded.append((self.spec.name, value, tags))

    monkeypatch.setattr(partition_actor, "metric", Recorder)
    shell = partition_actor.PartitionActor.__new__(partition_actor.PartitionActor)  # no thread, no Ray
    runner = PartitionRunner(runner_settings(redis_server, tmp_path), [0], consumer="a", client=redis_client)
    shell._runner, shell._index, shell._poison_recorded = runner, 0, 0
    shell._delays = {}
    runner.totals.poison = 2
    shell._record(StepStats())
    shell._record(StepStats())
    assert [r for r in recorded if r[0] == m.POISON.name] == [(m.POISON.name, 2, {"stage": "partition"})]


def test_a_malformed_quarantine_id_is_not_found_rather_than_a_store_failure(redis_client):
    store = QuarantineStore(redis_client)
    for qid in ["abc", "1-2-3", "-", "+", "", "1-x", "99999999999999999999-0", "1\r\n-0"]:
        with pytest.raises(NotFound):
            store.get(qid)
    with pytest.raises(NotFound):
        store.get("1-0")  # well formed, absent
    with pytest.raises(InputError) as raised:
        store.list(before="not-an-id")
    assert raised.value.reason == "invalid_qid"
    assert store.remove(["junk"]) == 0
    assert store.raw_entries(["junk"]) == []


def test_a_log_entry_that_does_not_decode_is_moved_to_the_quarantine(redis_server, redis_client, tmp_path):
    setup_config(redis_client)
    log = PartitionLog(redis_client, horizon_s=3600)
    (a,) = same_partition(1)
    append(log, [ev(1, a)])
    stream = keys.log_stream(partition_of(a, PARTITIONS))
    bad = redis_client.xadd(stream, {"b": b"\xc1 not msgpack", "d": b"", "v": b"0"}).decode()
    append(log, [ev(2, a)])
    runner = PartitionRunner(
        runner_settings(redis_server, tmp_path), list(range(PARTITIONS)), consumer="a", client=redis_client
    )

    assert run_until_settled(lambda: runner) == 1  # the failed read finds it; the retry goes past

    quarantined = QuarantineStore(redis_client).list(reason=PROCESSING_ERROR)
    assert [(q["source"], q["id"]) for q in quarantined] == [("esp/log", bad)]
    assert "cannot be read" in quarantined[0]["message"]
    assert redis_client.xrange(stream, min=bad, max=bad) == []
    assert runner.totals.poison == 1
    assert [e["subject"] for e in pulled(redis_client, "out")] == [a]  # 1+2
