"""Pull delivery against a real redis-server: redelivery after the visibility timeout,
idempotent acks, cursor acks."""

from __future__ import annotations

import time

import pytest

from runtime.config.store import ConfigStore
from runtime.errors import InputError
from runtime.subscriptions.outbox import Outbox, Publication
from runtime.subscriptions.pull import SubscriptionReader
from runtime.subscriptions.topics import TopicRouter


def publish(client, n: int, start: int = 0) -> None:
    outbox = Outbox(client, horizon_s=60, maxlen=10_000)
    pubs = [Publication(f"o{i}", "business.x", {"id": f"o{i}", "type": "business.x"}) for i in range(start, start + n)]
    outbox.publish(pubs, TopicRouter({"s": ["business.*"]}))


def test_unacked_events_come_back_after_the_visibility_timeout(redis_client):
    ConfigStore(redis_client).put({"kind": "subscription", "name": "s", "topics": ["business.*"]})
    reader = SubscriptionReader(redis_client, visibility_timeout_ms=300)
    publish(redis_client, 5)
    first = reader.pull("s", max_events=10, wait_ms=0)["events"]
    assert [e["id"] for e in first] == [f"o{i}" for i in range(5)]
    assert reader.pull("s", max_events=10, wait_ms=0)["events"] == []  # in flight
    reader.ack("s", ack_ids=[first[0]["ack_id"], first[1]["ack_id"]])
    time.sleep(0.4)
    again = reader.pull("s", max_events=10, wait_ms=0)["events"]
    assert sorted(e["id"] for e in again) == ["o2", "o3", "o4"]
    assert reader.ack("s", cursor=max(e["ack_id"] for e in again)) == 3
    assert reader.ack("s", ack_ids=[first[0]["ack_id"]]) == 0  # acking twice is harmless
    time.sleep(0.4)
    assert reader.pull("s", max_events=10, wait_ms=0)["events"] == []


def test_republishing_the_same_ids_delivers_nothing_new(redis_client):
    ConfigStore(redis_client).put({"kind": "subscription", "name": "s", "topics": ["business.*"]})
    reader = SubscriptionReader(redis_client, visibility_timeout_ms=60_000)
    publish(redis_client, 3)
    publish(redis_client, 5)  # o0..o2 again plus o3, o4
    assert [e["id"] for e in reader.pull("s", max_events=100, wait_ms=0)["events"]] == [f"o{i}" for i in range(5)]


def test_long_poll_waits_for_new_events(redis_client):
    ConfigStore(redis_client).put({"kind": "subscription", "name": "s", "topics": ["business.*"]})
    reader = SubscriptionReader(redis_client, visibility_timeout_ms=60_000)
    started = time.monotonic()
    assert reader.pull("s", max_events=10, wait_ms=300)["events"] == []
    assert time.monotonic() - started >= 0.25


def test_bad_ack_ids_are_refused(redis_client):
    ConfigStore(redis_client).put({"kind": "subscription", "name": "s", "topics": ["business.*"]})
    reader = SubscriptionReader(redis_client, visibility_timeout_ms=60_000)
    with pytest.raises(InputError):
        reader.ack("s", ack_ids=["not-an-id"])
