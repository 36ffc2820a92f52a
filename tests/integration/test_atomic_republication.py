"""Atomic re-publication (every event of a type, re-published as it was accepted) from a partition
runner against a real redis-server: an event reaches an atomic subscription once, also when its
subject (a phone number linked to a customer) falls in a partition another runner owns, and also
when the runner's log is processed a second time (a restart before the checkpoint)."""

from __future__ import annotations

from runtime import keys
from runtime.config.store import ConfigStore
from runtime.events.envelope import Event
from runtime.log.partition_log import PartitionLog
from runtime.log.partitioning import partition_of
from runtime.partition import PartitionRunner
from tests.support.runner import PARTITIONS, drain, pulled, runner_settings

T0 = 1_790_000_000_000


def elsewhere(customer: str) -> str:
    """A subject (a phone number) whose partition is not its customer's."""
    return next(
        phone
        for i in range(1000)
        if partition_of(phone := f"1380013{i:04d}", PARTITIONS) != partition_of(customer, PARTITIONS)
    )


def recover_and_drain(runner: PartitionRunner) -> None:
    """What a (re)started actor does: resume from the checkpoint, then read the log."""
    runner.recover()
    drain(runner)


def test_a_linked_subject_in_another_runners_partition_is_republished_once(redis_server, redis_client, tmp_path):
    ConfigStore(redis_client).put({"kind": "subscription", "name": "raw", "topics": ["atomic.*"]})
    customer = "cust0"
    phone = elsewhere(customer)
    owned = [partition_of(customer, PARTITIONS)]  # the other partitions belong to another runner
    events = [Event(f"id{i}", "t.call", T0 + i, phone, customer, "src", {"n": i}, T0) for i in range(3)]
    PartitionLog(redis_client, horizon_s=3600).append({owned[0]: events}, now_ms=T0)
    settings = runner_settings(redis_server, tmp_path)

    recover_and_drain(PartitionRunner(settings, owned, consumer="a", client=redis_client))
    recover_and_drain(PartitionRunner(settings, owned, consumer="b", client=redis_client))  # no checkpoint: all again

    raw = pulled(redis_client, "raw")
    assert sorted(e["id"] for e in raw) == ["id0", "id1", "id2"]
    assert {(e["subject"], e["customer"]) for e in raw} == {(phone, customer)}


def test_a_replayed_log_republishes_only_what_is_past_the_mark_and_keeps_no_key_per_event(
    redis_server, redis_client, tmp_path
):
    ConfigStore(redis_client).put({"kind": "subscription", "name": "raw", "topics": ["atomic.*"]})
    log = PartitionLog(redis_client, horizon_s=3600)
    partition = partition_of("cust0", PARTITIONS)
    first = [Event(f"a{i}", "t.call", T0 + i, "cust0", "cust0", "src", {}, T0) for i in range(4)]
    log.append({partition: first}, now_ms=T0)
    settings = runner_settings(redis_server, tmp_path)
    recover_and_drain(PartitionRunner(settings, [partition], consumer="a", client=redis_client))
    later = [Event(f"b{i}", "t.call", T0 + 10 + i, "cust0", "cust0", "src", {}, T0) for i in range(2)]
    log.append({partition: later}, now_ms=T0)

    # a restart before any checkpoint: the first entry again, then the new one
    recover_and_drain(PartitionRunner(settings, [partition], consumer="b", client=redis_client))

    assert sorted(e["id"] for e in pulled(redis_client, "raw")) == ["a0", "a1", "a2", "a3", "b0", "b1"]
    assert not list(redis_client.scan_iter(match=keys.emitted("*", "") + "*"))  # no de-dup key per event
    assert redis_client.get(keys.republished(partition)).decode().endswith("-1")  # the last entry's second event


def test_events_republished_before_the_mark_existed_are_not_republished_again(redis_server, redis_client, tmp_path):
    """What a publisher before the per-partition mark wrote: a de-dup key per event."""
    ConfigStore(redis_client).put({"kind": "subscription", "name": "raw", "topics": ["atomic.*"]})
    partition = partition_of("cust0", PARTITIONS)
    events = [Event(f"id{i}", "t.call", T0 + i, "cust0", "cust0", "src", {}, T0) for i in range(3)]
    PartitionLog(redis_client, horizon_s=3600).append({partition: events}, now_ms=T0)
    redis_client.set(keys.emitted(partition, "atomic/src/id0"), "1")
    redis_client.set(keys.emitted(partition, "atomic/src/id1"), "1")

    recover_and_drain(
        PartitionRunner(runner_settings(redis_server, tmp_path), [partition], consumer="a", client=redis_client)
    )

    assert [e["id"] for e in pulled(redis_client, "raw")] == ["id2"]


def test_an_events_own_data_is_never_taken_for_a_rule_outputs_tag_action(redis_server, redis_client, tmp_path):
    """``tag`` and ``rule`` in a rule output's data are the rule's action and name. An ingested
    event may carry the same keys in its data: re-published as it was accepted, it must neither
    set nor clear its customer's profile tags, nor fail to publish when they have another shape
    (which set the event aside as poison)."""
    from runtime.events.profiles import ProfileStore

    ConfigStore(redis_client).put({"kind": "subscription", "name": "raw", "topics": ["atomic.*"]})
    ProfileStore(redis_client).put("cust0", {"tags": ["gold"]})
    partition = partition_of("cust0", PARTITIONS)
    datas = [{"tag": {"set": "vip"}}, {"tag": {"clear": "gold"}}, {"tag": "vip", "rule": "not-a-rule"}, {"tag": 3}]
    events = [Event(f"id{i}", "t.call", T0 + i, "cust0", "cust0", "src", d, T0) for i, d in enumerate(datas)]
    PartitionLog(redis_client, horizon_s=3600).append({partition: events}, now_ms=T0)

    recover_and_drain(
        PartitionRunner(runner_settings(redis_server, tmp_path), [partition], consumer="a", client=redis_client)
    )

    assert [(e["id"], e["data"]) for e in pulled(redis_client, "raw")] == [(f"id{i}", d) for i, d in enumerate(datas)]
    assert ProfileStore(redis_client).get("cust0")["tags"] == ["gold"]
