"""PartitionRunner against a real redis-server: state = checkpoint + replay (invariant 2), and
replays never publish twice (invariant 3)."""

from __future__ import annotations

import json
import time
from itertools import pairwise

import pytest

from runtime.config.store import ConfigStore
from runtime.events.envelope import Event
from runtime.log import eventtime
from runtime.log.partition_log import PartitionLog
from runtime.log.partitioning import partition_of
from runtime.partition import PartitionRunner
from tests.support.runner import drain, pulled, runner_settings

T0 = 1_790_000_000_000
COVERED = 2000
STREAM_NODE_ENTRIES = 100  # redis-server's stream-node-max-entries: XTRIM ~ drops whole nodes


def ev(i: int, customer: str, kind: str = "t.login", **data) -> Event:
    return Event(f"id{i}", kind, T0 + i * 1000, customer, customer, "src", data, T0)


def setup_config(client) -> None:
    store = ConfigStore(client)
    store.put(
        {
            "kind": "rule",
            "name": "pairs",
            "when": {"event": "t.login", "count": 2, "within": "1h"},
            "then": [{"emit": "pair"}],
        }
    )
    store.put({"kind": "subscription", "name": "out", "topics": ["business.*"]})


def append_all(log: PartitionLog, events: list[Event], partitions: int = 4) -> None:
    from runtime.log.partitioning import partition_of

    for e in events:  # one entry per event here, so a crash can fall between any two
        log.append({partition_of(e.customer, partitions): [e]}, now_ms=T0)


def received(client) -> list[dict]:
    return pulled(client, "out")


def test_crash_between_checkpoints_replays_without_loss_or_duplicates(redis_server, redis_client, tmp_path):
    setup_config(redis_client)
    settings = runner_settings(redis_server, tmp_path)
    log = PartitionLog(redis_client, horizon_s=3600)
    customers = [f"c{i}" for i in range(8)]
    first = [ev(i, customers[i % 8]) for i in range(24)]  # 3 logins each
    second = [ev(100 + i, customers[i % 8]) for i in range(24)]  # 3 more each

    runner = PartitionRunner(settings, [0, 1, 2, 3], consumer="a", client=redis_client)
    runner.recover()
    append_all(log, first[:12])
    drain(runner)
    runner.checkpoint()  # covers the first 12 events: 8 customers, 4 with a pair done
    append_all(log, first[12:])
    drain(runner)  # published, but not checkpointed: a crash now must not double these
    del runner

    reborn = PartitionRunner(settings, [0, 1, 2, 3], consumer="b", client=redis_client)
    offsets = reborn.recover()
    assert any(o != "0" for o in offsets.values())
    append_all(log, second)
    drain(reborn)

    outputs = received(redis_client)
    # 6 logins per customer -> exactly 3 pairs each, whatever happened in between
    per_customer = {c: 0 for c in customers}
    for out in outputs:
        per_customer[out["subject"]] += 1
    assert per_customer == {c: 3 for c in customers}
    ids = [o["id"] for o in outputs]
    assert len(ids) == len(set(ids))


def test_recovery_without_any_checkpoint_replays_the_whole_log(redis_server, redis_client, tmp_path):
    setup_config(redis_client)
    settings = runner_settings(redis_server, tmp_path)
    log = PartitionLog(redis_client, horizon_s=3600)
    append_all(log, [ev(i, "solo") for i in range(4)])
    runner = PartitionRunner(settings, [0, 1, 2, 3], consumer="a", client=redis_client)
    runner.recover()
    drain(runner)
    assert len(received(redis_client)) == 2
    # a second runner with no checkpoint replays everything; the outbox refuses the repeats
    again = PartitionRunner(settings, [0, 1, 2, 3], consumer="b", client=redis_client)
    again.recover()
    drain(again)
    assert again.totals.events == 4 and again.totals.published == 0
    assert received(redis_client) == []


def test_config_change_reaches_a_running_runner(redis_server, redis_client, tmp_path):
    setup_config(redis_client)
    settings = runner_settings(redis_server, tmp_path)
    log = PartitionLog(redis_client, horizon_s=3600)
    runner = PartitionRunner(settings, [0, 1, 2, 3], consumer="a", client=redis_client)
    runner.recover()
    ConfigStore(redis_client).put(
        {
            "kind": "rule",
            "name": "vip",
            "when": {"event": "t.order", "where": "data.amount >= 100"},
            "then": [{"emit": "vip"}],
        }
    )
    append_all(log, [ev(1, "x", "t.order", amount=150), ev(2, "y", "t.order", amount=50)])
    drain(runner)
    outputs = received(redis_client)
    assert [(o["type"], o["subject"], o["data"]["rule_version"]) for o in outputs] == [("business.vip", "x", 1)]


def test_checkpoint_trims_what_it_covers_and_keeps_the_rest(redis_server, redis_client, tmp_path):
    """Trimming is approximate (whole stream nodes), so of the covered entries at most one node
    per partition may stay; every entry the checkpoint does not cover stays."""
    setup_config(redis_client)
    settings = runner_settings(redis_server, tmp_path, log_retention_s=0)
    log = PartitionLog(redis_client, horizon_s=3600)
    runner = PartitionRunner(settings, [0, 1, 2, 3], consumer="a", client=redis_client)
    runner.recover()
    covered = [ev(i, f"c{i % 40}") for i in range(COVERED)]
    append_all(log, covered)
    drain(runner)
    append_all(log, [ev(COVERED + i, f"c{i}") for i in range(40)])  # appended before the trim, never read
    runner.checkpoint()
    kept = [e.id for p in range(4) for entry in log.read_range(p, "0", 10_000) for e in entry.events]
    assert {f"id{COVERED + i}" for i in range(40)} <= set(kept)  # unread entries are never trimmed
    kept_covered = [i for i in kept if int(i[2:]) < COVERED]
    assert len(kept_covered) <= 4 * STREAM_NODE_ENTRIES, f"{len(kept_covered)} of {COVERED} covered entries kept"


def _late_case(redis_server, redis_client, tmp_path, policy: str) -> tuple[PartitionRunner, list[dict]]:
    """Two logins of one customer an hour apart, the older arriving last: late by 3599 s
    against an allowed lateness of 60 s."""
    setup_config(redis_client)
    settings = runner_settings(redis_server, tmp_path, allowed_lateness_s=60, late_events=policy)
    log = PartitionLog(redis_client, horizon_s=3600)
    runner = PartitionRunner(settings, [0, 1, 2, 3], consumer="a", client=redis_client)
    runner.recover()
    append_all(log, [ev(3599, "lag"), ev(0, "lag")])
    drain(runner)
    return runner, received(redis_client)


def test_late_events_are_counted_traced_and_evaluated_by_default(redis_server, redis_client, tmp_path):
    from runtime.events.trace import trace_event

    runner, outputs = _late_case(redis_server, redis_client, tmp_path, "accept")
    assert runner.totals.late == 1
    assert len(outputs) == 1  # the pair: the late login still counted
    trace = trace_event(redis_client, "src", "id0", now_ms=int(time.time() * 1000), days=400, partitions=4)
    assert {"step": "late", "behind_customer_ms": 3_599_000} in trace["steps"]


def test_late_events_can_be_dropped(redis_server, redis_client, tmp_path):
    from runtime.events.trace import trace_event

    runner, outputs = _late_case(redis_server, redis_client, tmp_path, "drop")
    assert runner.totals.late == 1 and outputs == []
    trace = trace_event(redis_client, "src", "id0", now_ms=int(time.time() * 1000), days=400, partitions=4)
    assert trace["status"] == "dropped" and {"step": "dropped", "reason": "late_event"} in trace["steps"]


def test_late_events_can_be_quarantined(redis_server, redis_client, tmp_path):
    from runtime.sources.quarantine import QuarantineStore

    _, outputs = _late_case(redis_server, redis_client, tmp_path, "quarantine")
    assert outputs == []
    [kept] = QuarantineStore(redis_client).list(source="src", limit=10)
    assert (kept["id"], kept["reason"]) == ("id0", "late_event")
    assert json.loads(kept["raw"])["time"].startswith("2026-")  # the event itself, for inspection


@pytest.mark.parametrize("pack_above", [eventtime.PACK_ABOVE, 0], ids=["decoded", "packed"])
def test_events_held_for_reordering_survive_a_restart(redis_server, redis_client, tmp_path, monkeypatch, pack_above):
    """Bound 10 s: a login is held (decoded, or packed as a busy partition holds it), the runner
    checkpoints and dies, and its successor still evaluates the held login (with the logins that
    come later) exactly once."""
    monkeypatch.setattr(eventtime, "PACK_ABOVE", pack_above)
    setup_config(redis_client)
    settings = runner_settings(redis_server, tmp_path, max_out_of_order_s=10)
    log = PartitionLog(redis_client, horizon_s=3600)
    clock = [T0 / 1000]  # wall time stays at T0, so only event time releases held events
    runner = PartitionRunner(settings, [0, 1, 2, 3], consumer="a", client=redis_client, clock=lambda: clock[0])
    runner.recover()
    append_all(log, [ev(5, "held")])
    drain(runner)
    assert runner.status()["held"] == 1
    runner.checkpoint()
    del runner
    reborn = PartitionRunner(settings, [0, 1, 2, 3], consumer="b", client=redis_client, clock=lambda: clock[0])
    reborn.recover()
    assert reborn.status()["held"] == 1
    append_all(log, [ev(1, "held"), ev(30, "held")])  # 1 arrives out of order; 30 moves the watermark to 20
    drain(reborn)
    outputs = received(redis_client)
    assert [[m["id"] for m in o["data"]["events"]] for o in outputs] == [["id1", "id5"]]


def test_held_entries_of_linked_subjects_and_small_entries_are_released_together(redis_server, redis_client, tmp_path):
    """A large entry whose subjects are phone numbers linked to the customer (columns with
    subjects of their own) and a small entry (rows) wait for the out-of-order bound, then leave
    in one release: both are evaluated, in event-time order, by a rule that reads the events
    whole (its ``where`` is on more than ``data``)."""
    store = ConfigStore(redis_client)
    when = {"event": "t.login", "where": "customer == 'k'", "count": 2, "within": "1h"}
    store.put({"kind": "rule", "name": "pairs", "when": when, "then": [{"emit": "pair"}]})
    store.put({"kind": "subscription", "name": "out", "topics": ["business.*"]})
    settings = runner_settings(redis_server, tmp_path, max_out_of_order_s=10)
    log = PartitionLog(redis_client, horizon_s=3600)
    clock = [T0 / 1000]  # wall time stays at T0, so only event time releases held events
    runner = PartitionRunner(settings, [0, 1, 2, 3], consumer="a", client=redis_client, clock=lambda: clock[0])
    runner.recover()
    partition = partition_of("k", 4)
    linked = [Event(f"id{i}", "t.login", T0 + i * 500, "+8613800000000", "k", "src", {}, T0) for i in range(16)]
    log.append({partition: linked}, now_ms=T0)
    log.append({partition: [Event("small", "t.login", T0 + 7_200, "k", "k", "src", {}, T0)]}, now_ms=T0)
    drain(runner)
    assert runner.status()["held"] == 17
    log.append({partition: [ev(40, "k")]}, now_ms=T0)  # the watermark moves to 30 s: the 17 leave
    drain(runner)
    outputs = received(redis_client)
    pairs = [[f"id{i}", f"id{i + 1}"] for i in range(0, 15, 2)]
    assert [[m["id"] for m in o["data"]["events"]] for o in outputs] == [*pairs[:-1], ["id14", "small"]]


def test_a_late_event_contradicting_a_published_output_is_a_counted_traced_retraction(
    redis_server, redis_client, tmp_path
):
    """Absence 'order not paid within 10 s': the wait fires (a later event of the customer moves
    time past it), then the payment 5 s after the order arrives. The output stays published; the
    payment is counted as a retraction of the rule and its trace says so."""
    from runtime.events.trace import trace_event

    store = ConfigStore(redis_client)
    store.put(
        {
            "kind": "rule",
            "name": "unpaid",
            "when": {"absence": {"after": {"event": "t.order"}, "missing": {"event": "t.pay"}, "within": "10s"}},
            "then": [{"emit": "unpaid"}],
        }
    )
    store.put({"kind": "subscription", "name": "out", "topics": ["business.*"]})
    runner = PartitionRunner(runner_settings(redis_server, tmp_path), [0, 1, 2, 3], consumer="a", client=redis_client)
    runner.recover()
    append_all(PartitionLog(redis_client, horizon_s=3600), [ev(0, "c", "t.order"), ev(60, "c", "t.other")])
    drain(runner)
    assert [e["data"]["events"][0]["id"] for e in received(redis_client)] == ["id0"]
    append_all(PartitionLog(redis_client, horizon_s=3600), [ev(5, "c", "t.pay")])
    drain(runner)
    assert runner.totals.retractions == {"unpaid": 1}
    assert received(redis_client) == []  # nothing un-sent, nothing new
    trace = trace_event(redis_client, "src", "id5", now_ms=int(time.time() * 1000), days=400, partitions=4)
    assert {"step": "retracts", "rule": "unpaid"} in trace["steps"]


def test_checkpoints_are_spread_over_the_interval_and_each_partition_keeps_its_pace(
    redis_server, redis_client, tmp_path
):
    """A runner checkpoints its partitions a slice at a time (all at once, the checkpoint stalled
    the step every interval: the latency's p99), and still checkpoints every partition that
    changed once per interval."""
    setup_config(redis_client)
    partitions, interval = 16, 8.0
    settings = runner_settings(redis_server, tmp_path, partitions=partitions, checkpoint_interval_s=interval)
    now = [1000.0]
    runner = PartitionRunner(settings, list(range(partitions)), consumer="a", client=redis_client, clock=lambda: now[0])
    saved: list[tuple[float, int]] = []
    save = runner.checkpoints.save
    runner.checkpoints.save = lambda checkpoint: (saved.append((now[0], checkpoint.partition)), save(checkpoint))
    runner.recover()
    log = PartitionLog(redis_client, horizon_s=3600)
    customers = {}  # one customer per partition, so that every partition changes at every step
    for i in range(10_000):
        customers.setdefault(partition_of(f"c{i}", partitions), f"c{i}")
        if len(customers) == partitions:
            break
    steps = 0
    while now[0] < 1000.0 + 3 * interval:
        log.append({p: [ev(steps * partitions + p, c)] for p, c in customers.items()}, now_ms=T0)
        drain(runner)
        now[0] += 0.5
        steps += 1
    per_step: dict[float, int] = {}
    for at, _ in saved:
        per_step[at] = per_step.get(at, 0) + 1
    assert max(per_step.values()) <= partitions // 4, per_step  # never all at once
    for p in range(partitions):
        times = [at for at, q in saved if q == p]
        assert times and times[0] <= 1000.0 + interval + 0.5, (p, times)
        gaps = [b - a for a, b in pairwise(times)]
        assert len(times) >= 2 and max(gaps) <= interval + 0.5, (p, times)


def test_a_slice_checkpoint_trims_only_the_log_of_the_partitions_it_wrote(redis_server, redis_client, tmp_path):
    """The other partitions have read on since their last checkpoint: a recovery replays their log
    from there, so none of it may go (nothing lost); the checkpointed partition's covered log may."""
    setup_config(redis_client)
    settings = runner_settings(redis_server, tmp_path, log_retention_s=0)
    log = PartitionLog(redis_client, horizon_s=3600)
    runner = PartitionRunner(settings, [0, 1, 2, 3], consumer="a", client=redis_client)
    runner.recover()
    append_all(log, [ev(i, f"c{i % 40}") for i in range(COVERED)])
    drain(runner)
    before = {p: len(log.read_range(p, "0", 10_000)) for p in range(4)}
    assert runner.checkpoint([0]) == 1
    after = {p: len(log.read_range(p, "0", 10_000)) for p in range(4)}
    assert {p: after[p] for p in (1, 2, 3)} == {p: before[p] for p in (1, 2, 3)}
    assert after[0] <= STREAM_NODE_ENTRIES < before[0]
