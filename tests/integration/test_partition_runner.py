"""PartitionRunner against a real redis-server: state = checkpoint + replay (invariant 2), and
replays never publish twice (invariant 3)."""

from __future__ import annotations

from runtime.config.store import ConfigStore
from runtime.envelope import Event
from runtime.log import PartitionLog
from runtime.partition import PartitionRunner
from runtime.settings import EspSettings
from runtime.subscriptions import SubscriptionReader

T0 = 1_790_000_000_000


def settings_for(server, tmp_path, **overrides) -> EspSettings:
    return EspSettings(state_dir=tmp_path, redis_url=server.url, partitions=4, checkpoint_interval_s=3600, **overrides)


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
    from runtime.partitioning import partition_of

    for e in events:  # one entry per event here, so a crash can fall between any two
        log.append({partition_of(e.customer, partitions): [e]}, now_ms=T0)


def drain(runner: PartitionRunner) -> None:
    while runner.step(block_ms=10).entries:
        pass


def received(client) -> list[dict]:
    reader = SubscriptionReader(client, visibility_timeout_ms=60_000)
    return reader.pull("out", max_events=10_000, wait_ms=0)["events"]


def test_crash_between_checkpoints_replays_without_loss_or_duplicates(redis_server, redis_client, tmp_path):
    setup_config(redis_client)
    settings = settings_for(redis_server, tmp_path)
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
    settings = settings_for(redis_server, tmp_path)
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
    settings = settings_for(redis_server, tmp_path)
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


def test_checkpoint_trims_only_what_it_covers(redis_server, redis_client, tmp_path):
    setup_config(redis_client)
    settings = settings_for(redis_server, tmp_path, log_retention_s=0)
    log = PartitionLog(redis_client, horizon_s=3600)
    runner = PartitionRunner(settings, [0, 1, 2, 3], consumer="a", client=redis_client)
    runner.recover()
    append_all(log, [ev(i, f"c{i}") for i in range(40)])
    drain(runner)
    runner.checkpoint()
    append_all(log, [ev(100 + i, f"c{i}") for i in range(40)])  # not yet read
    remaining = sum(len(log.read_range(p, "0", 1000)) for p in range(4))
    assert remaining >= 40  # unread entries are never trimmed
