"""Invariant 7 when several config changes fall between two polls of a partition runner: a log
entry carries the global config version it was accepted under, and the runner evaluates it under
exactly that version's rules, also when it never polled that version (it sees the version before
and the one after). Against a real redis-server; the runner's clock stands still, so it polls
only when it meets an entry stamped with a version newer than the last it loaded."""

from __future__ import annotations

from runtime.config.store import CHANGES_KEPT, ConfigStore
from runtime.events.envelope import Event
from runtime.log.partition_log import PartitionLog
from runtime.partition import PartitionRunner
from runtime.settings import EspSettings
from runtime.subscriptions.pull import SubscriptionReader
from tests.support.runner import drain

T0 = 1_790_000_000_000
NOW_S = T0 / 1000 + 3600  # the runner's clock: never moves, so no poll on time


def order_rule(priority: int) -> dict:
    """Fires for every order; each put is a new version of the rule."""
    return {
        "kind": "rule",
        "name": "orders",
        "priority": priority,
        "when": {"event": "t.order"},
        "then": [{"emit": "o"}],
    }


def start(redis_server, redis_client, tmp_path) -> tuple[ConfigStore, PartitionLog, PartitionRunner]:
    store = ConfigStore(redis_client)
    store.put({"kind": "subscription", "name": "out", "topics": ["business.*"]})
    assert store.put(order_rule(1))["version"] == 1
    settings = EspSettings(
        state_dir=tmp_path, redis_url=redis_server.url, partitions=1, checkpoint_interval_s=3600, reorder_wait_ms=0
    )  # no reorder wait: each entry's events reach the rules as it is read, under its stamp's rules
    runner = PartitionRunner(settings, [0], consumer="a", client=redis_client, clock=lambda: NOW_S)
    runner.recover()
    return store, PartitionLog(redis_client, horizon_s=3600), runner


def accept(log: PartitionLog, i: int) -> None:
    log.append({0: [Event(f"id{i}", "t.order", T0 + i * 1000, "c", "c", "src", {}, T0)]}, now_ms=T0)


def fired(client) -> dict[str, int]:
    """Event id -> the rule version of its output."""
    got = SubscriptionReader(client, visibility_timeout_ms=60_000).pull("out", max_events=1000, wait_ms=0)["events"]
    return {o["data"]["events"][0]["id"]: o["data"]["rule_version"] for o in got}


def test_an_entry_stamped_with_a_version_between_two_polls_gets_that_versions_rules(
    redis_server, redis_client, tmp_path
):
    store, log, runner = start(redis_server, redis_client, tmp_path)
    accept(log, 1)  # under rule v1
    drain(runner)
    # all of this between two polls: the runner loaded the config before, and loads it once after
    store.put(order_rule(2))
    accept(log, 2)  # accepted after v2 returned: must run under v2, not v1
    store.put({"kind": "subscription", "name": "other", "topics": ["business.x"]})  # another kind's change
    accept(log, 3)  # still v2
    store.put(order_rule(3))
    accept(log, 4)  # v3
    drain(runner)
    assert fired(redis_client) == {"id1": 1, "id2": 2, "id3": 2, "id4": 3}


def test_an_entry_accepted_while_the_rule_was_deleted_between_two_polls_fires_nothing(
    redis_server, redis_client, tmp_path
):
    store, log, runner = start(redis_server, redis_client, tmp_path)
    store.put(order_rule(2))
    accept(log, 1)  # v2
    store.delete("rule", "orders")
    accept(log, 2)  # no rule
    store.put(order_rule(3))
    accept(log, 3)  # v3 (re-created)
    store.put({**order_rule(4), "enabled": False})
    accept(log, 4)  # disabled
    store.put(order_rule(5))
    accept(log, 5)  # v5
    drain(runner)
    assert fired(redis_client) == {"id1": 2, "id3": 3, "id5": 5}


def test_the_change_log_reports_versions_it_no_longer_holds(redis_client):
    store = ConfigStore(redis_client)
    for p in range(3):
        store.put(order_rule(p))
    store.delete("rule", "orders")
    assert [(v, name, r and r["priority"]) for v, name, r in store.rule_changes(1, 4)] == [
        (2, "orders", 1),
        (3, "orders", 2),
        (4, "orders", None),
    ]
    assert store.rule_changes(4, 4) == []
    for p in range(CHANGES_KEPT):
        store.put(order_rule(p % 100))
    assert store.rule_changes(0, 5) is None  # trimmed: the rules between are unknown, not guessed
    assert store.rule_changes(5, 4 + CHANGES_KEPT) is not None


def test_a_config_change_is_a_barrier_for_events_held_in_the_reorder_buffer(redis_server, redis_client, tmp_path):
    """With the default reorder wait an entry's events wait before reaching the rules; a change
    accepted meanwhile must not reach them: they were accepted under the rules before it."""
    import time

    store = ConfigStore(redis_client)
    store.put({"kind": "subscription", "name": "out", "topics": ["business.*"]})
    store.put(order_rule(1))
    now = [time.time()]
    settings = EspSettings(state_dir=tmp_path, redis_url=redis_server.url, partitions=1, checkpoint_interval_s=3600)
    assert settings.reorder_wait_ms > 0  # the default: events wait
    runner = PartitionRunner(settings, [0], consumer="a", client=redis_client, clock=lambda: now[0])
    runner.recover()
    log = PartitionLog(redis_client, horizon_s=3600)
    accept(log, 1)  # under v1, then held
    drain(runner)
    assert runner.clocks[0].held == 1
    store.put(order_rule(2))
    accept(log, 2)  # under v2
    drain(runner)
    now[0] = time.time() + settings.reorder_wait_ms / 1000 + 1  # the wait is over: id2 goes too
    runner.step(block_ms=10)
    assert fired(redis_client) == {"id1": 1, "id2": 2}


def test_a_replay_after_a_recovery_runs_under_the_rules_the_checkpoint_ran_under(redis_server, redis_client, tmp_path):
    """A checkpoint records its rules: entries after it, accepted before a change the store
    has since made, replay under the old rules, not the newest."""
    store, log, runner = start(redis_server, redis_client, tmp_path)
    accept(log, 1)
    drain(runner)
    runner.checkpoint()
    accept(log, 2)  # under v1, not yet read when the actor goes down
    store.put(order_rule(2))
    accept(log, 3)  # under v2
    restarted = PartitionRunner(runner.settings, [0], consumer="b", client=redis_client, clock=lambda: NOW_S)
    restarted.recover()
    drain(restarted)
    assert fired(redis_client) == {"id1": 1, "id2": 1, "id3": 2}
