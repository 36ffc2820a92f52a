"""Partitions moving between runners while the stream goes on (``esp scale``), against a real
redis-server: a hand-over (release, then adopt) loses and doubles nothing, and an owner that
was superseded without being told (a zombie) can neither read on, publish nor checkpoint."""

from __future__ import annotations

import pytest

from runtime.log.checkpoint import CheckpointStore
from runtime.log.partition_log import Fenced, PartitionLog
from runtime.log.partitioning import partition_of
from runtime.partition import PartitionRunner
from runtime.settings import EspSettings
from runtime.subscriptions.outbox import Outbox, Publication
from runtime.subscriptions.topics import TopicRouter
from tests.integration.test_partition_runner import append_all, ev, received, setup_config
from tests.support.runner import drain, runner_settings

CUSTOMERS = [f"c{i}" for i in range(16)]


def logins(start: int) -> list:
    """One login per customer: the 'pairs' rule fires on every second login of a customer."""
    return [ev(start + i, c) for i, c in enumerate(CUSTOMERS)]


def pairs_per_customer(client) -> dict[str, int]:
    outputs = received(client)
    ids = [o["id"] for o in outputs]
    assert len(ids) == len(set(ids)), "an output was published twice"
    counts = dict.fromkeys(CUSTOMERS, 0)
    for out in outputs:
        counts[out["subject"]] += 1
    return counts


@pytest.fixture
def configured(redis_server, redis_client, tmp_path) -> tuple[EspSettings, PartitionLog]:
    """The 'pairs' rule and its subscription stored; the runners' settings and the log."""
    setup_config(redis_client)
    return runner_settings(redis_server, tmp_path), PartitionLog(redis_client, horizon_s=3600)


def test_a_hand_over_between_two_logins_of_a_customer_loses_and_doubles_nothing(redis_client, configured):
    settings, log = configured
    first = PartitionRunner(settings, [0, 1, 2, 3], consumer="a", client=redis_client)
    second = PartitionRunner(settings, [], consumer="b", client=redis_client)
    first.recover()
    second.recover()

    append_all(log, logins(0))
    drain(first)  # the first login of every customer is state in `first`
    append_all(log, logins(100))  # arrives before the hand-over, read by the new owner
    assert set(first.release([1, 3])) == {1, 3}
    second.adopt([1, 3])
    append_all(log, logins(200) + logins(300))  # the third and fourth logins, after it
    drain(first)
    drain(second)

    assert pairs_per_customer(redis_client) == dict.fromkeys(CUSTOMERS, 2)
    moved = {c for c in CUSTOMERS if partition_of(c, 4) in (1, 3)}
    assert moved and second.partitions == [1, 3] and first.partitions == [0, 2]
    assert {c for c in CUSTOMERS if partition_of(c, 4) in second.engines} == moved


def test_a_superseded_owner_can_neither_read_on_publish_nor_checkpoint(redis_client, configured):
    settings, log = configured
    zombie = PartitionRunner(settings, [0, 1, 2, 3], consumer="a", client=redis_client)
    zombie.recover()
    append_all(log, logins(0))
    drain(zombie)
    zombie.checkpoint()
    stale_epochs = dict(zombie.epochs)

    successor = PartitionRunner(settings, [], consumer="b", client=redis_client)
    successor.adopt([0, 1, 2, 3])  # without a release: the zombie was not told
    append_all(log, logins(100))

    with pytest.raises(Fenced) as fenced:
        zombie.step(block_ms=10)  # its consumer group is gone: it cannot read on
    assert sorted(fenced.value.partitions) == [0, 1, 2, 3]
    store = CheckpointStore(settings.checkpoint_location)
    before = store.load(0)
    with pytest.raises(Fenced):
        zombie.release([0])  # a checkpoint of what it holds: it never overwrites the successor's state
    assert store.load(0) == before
    router = TopicRouter.from_docs({"subscription": [{"name": "out", "topics": ["business.*"]}]})
    stale = Publication("zombie-out", "business.pair", {"id": "zombie-out", "subject": "c0", "data": {}})
    with pytest.raises(Fenced):
        Outbox(redis_client, horizon_s=3600, maxlen=1000).publish([stale], router, fence=stale_epochs)

    drain(successor)
    assert pairs_per_customer(redis_client) == dict.fromkeys(CUSTOMERS, 1)  # nothing of the zombie's
