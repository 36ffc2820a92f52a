"""What a receiver's answer does to delivery, end to end (real redis-server, real HTTP receivers on
loopback, the dispatcher in-process): Retry-After, 410 Gone, other 4xx, and a dispatcher restart
in the middle of deliveries."""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from email.utils import formatdate

import pytest

from runtime import keys
from runtime.config.store import ConfigStore
from runtime.subscriptions.deadletters import delivery_status, list_dead, replay_dead
from runtime.subscriptions.dispatch import message_id
from tests.integration.test_delivery import (
    dispatcher,
    pending,
    publish,
    wait_running,
    wait_settled,
    wait_until,
    webhook,
)
from tests.support.receiver import Receiver

STREAM = keys.subscription_stream("hooks")


def wait_stopped(d, key: str) -> None:
    """Until a destination's delivery loop has ended (a 410 ends it): no request can follow."""
    wait_until(lambda: d.running[key][2].done(), 10, f"{key} stopped")


# -- 1. Retry-After ------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["429 seconds", "503 http-date"])
def test_retry_after_holds_the_next_attempt_back_beyond_the_schedule(redis_server, redis_client, form):
    """The schedule says 50 ms; the receiver asks for about a second: it gets at least that."""
    not_before: dict[str, float] = {}

    def busy_once(n, request):
        if n > 1:
            return 200, {}, 0.0
        if form == "429 seconds":
            not_before["at"] = request.at + 1.0  # the answer leaves after this arrival
            return 429, {"Retry-After": "1"}, 0.0
        when = math.ceil(time.time()) + 1  # an HTTP date has whole seconds: 1 to 2 s from now
        not_before["at"] = float(when)
        return 503, {"Retry-After": formatdate(when, usegmt=True)}, 0.0

    with Receiver(busy_once) as receiver, dispatcher(redis_server) as d:
        ConfigStore(redis_client).put(webhook("hooks", receiver.url))
        wait_running(d, "subscription/hooks")
        publish(redis_client, 1)
        first, second = receiver.wait_for(lambda r: len(r) >= 2, timeout_s=10)[:2]
        wait_settled(redis_client, STREAM)  # a third request would have to come before the ack
        seen = receiver.seen()
    assert second.at >= not_before["at"] - 0.01, f"retried {second.at - first.at:.3f}s after the first attempt"
    assert second.at - first.at >= 0.99
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert [r.status for r in seen] == [first.status, 200]  # delivered once, nothing after
    assert list_dead(redis_client, STREAM)["total"] == 0


# -- 2. 410 Gone -----------------------------------------------------------------------------------


def test_gone_disables_delivery_until_the_subscription_is_put_again(redis_server, redis_client):
    state = {"gone": True}

    def gone_then_back(n, request):
        return (410, {}, 0.0, "this hook was removed") if state["gone"] else (200, {}, 0.0)

    doc = webhook("hooks", "", max_in_flight=1)  # one request at a time: the 410 is the only one
    store = ConfigStore(redis_client)
    with Receiver(gone_then_back) as receiver:
        with dispatcher(redis_server) as d:
            doc["webhook"]["url"] = receiver.url
            store.put(doc)
            wait_running(d, "subscription/hooks")
            ids = publish(redis_client, 10)
            receiver.wait_for(lambda r: len(r) >= 1, timeout_s=10)
            status = wait_until(
                lambda: (s := delivery_status(redis_client, STREAM))["disabled"] and s, 5, "disabled after the 410"
            )
            wait_stopped(d, "subscription/hooks")  # from then on it sends nothing more
            assert len(receiver.seen()) == 1
            assert d.status()["subscription/hooks"]["gone"] is True
        assert status["disabled_reason"] == "HTTP 410: this hook was removed"
        assert status["dead_letters"] == 0
        assert redis_client.xlen(STREAM) == 10  # every event still waits in the stream

        other = {**webhook("other", receiver.url), "topics": ["business.none"]}
        store.put(other)
        with dispatcher(redis_server) as d:  # a restarted dispatcher keeps it disabled
            wait_running(d, "subscription/other")  # its first config snapshot, which holds hooks too, is applied
            assert "subscription/hooks" not in d.running
            assert len(receiver.seen()) == 1
            assert delivery_status(redis_client, STREAM)["disabled"]

            state["gone"] = False
            store.put(doc)  # the same document again: a new version re-enables it
            seen = receiver.wait_for(lambda r: len({x.json()["id"] for x in r if x.status == 200}) >= 10)
            wait_until(lambda: pending(redis_client, STREAM) == 0, 5, "all acknowledged")
            after = delivery_status(redis_client, STREAM)
    delivered = [r for r in seen if r.status == 200]
    assert sorted(r.json()["id"] for r in delivered) == sorted(ids)
    assert len(delivered) == 10  # each once
    assert delivered[0].headers["webhook-id"] == seen[0].headers["webhook-id"]  # the 410'd event, same id
    assert after == {"dead_letters": 0, "disabled": False, "disabled_reason": None}


def test_gone_stops_retries_already_under_way(redis_server, redis_client):
    """One event waits for its retry (503) when another gets 410: the retry is not sent."""

    def one_busy_one_gone(n, request):
        return (503, {}, 0.0) if request.json()["id"] == "o0" else (410, {}, 0.0)

    with Receiver(one_busy_one_gone) as receiver, dispatcher(redis_server) as d:
        ConfigStore(redis_client).put(webhook("hooks", receiver.url, max_in_flight=2, retry=["200ms"] * 20))
        wait_running(d, "subscription/hooks")
        publish(redis_client, 2)
        wait_until(lambda: delivery_status(redis_client, STREAM)["disabled"], 5, "disabled after the 410")
        disabled_at = int(redis_client.hget(keys.delivery_state(STREAM), "at")) / 1000
        wait_stopped(d, "subscription/hooks")  # the retry waiting for its turn ended with it
        late = [r for r in receiver.seen() if r.at > disabled_at + 0.1]
    assert late == [], f"{len(late)} requests after the 410 disabled the destination"
    assert pending(redis_client, STREAM) == 2  # both wait in the stream for the next version
    assert list_dead(redis_client, STREAM)["total"] == 0


# -- 3. Other 4xx ----------------------------------------------------------------------------------


def test_a_refusing_4xx_dead_letters_at_once_and_replay_delivers(redis_server, redis_client):
    state = {"refuse": True}

    def refuse(n, request):
        return (400, {}, 0.0, '{"error": "amount must be positive"}') if state["refuse"] else (200, {}, 0.0)

    with Receiver(refuse) as receiver, dispatcher(redis_server) as d:
        ConfigStore(redis_client).put(webhook("hooks", receiver.url))
        wait_running(d, "subscription/hooks")
        ids = publish(redis_client, 3)
        dead = wait_until(lambda: (x := list_dead(redis_client, STREAM))["total"] == 3 and x, 10, "three dead letters")
        wait_settled(redis_client, STREAM)  # a retry would have to come before the ack
        refused = receiver.seen()
        assert len(refused) == 3  # one attempt each
        assert pending(redis_client, STREAM) == 0
        for item in dead["items"]:
            assert item["status"] == 400
            assert item["attempts"] == 1
            assert "amount must be positive" in item["error"]
        assert sorted(item["event"]["id"] for item in dead["items"]) == sorted(ids)

        state["refuse"] = False
        assert replay_dead(redis_client, STREAM) == 3
        seen = receiver.wait_for(lambda r: sum(1 for x in r if x.status == 200) >= 3)
        wait_until(lambda: pending(redis_client, STREAM) == 0, 5, "acknowledged")
        assert list_dead(redis_client, STREAM)["total"] == 0
    replayed = [r for r in seen if r.status == 200]
    assert sorted(r.json()["id"] for r in replayed) == sorted(ids)
    by_event = {r.json()["id"]: r.headers["webhook-id"] for r in refused}
    assert all(by_event[r.json()["id"]] == r.headers["webhook-id"] for r in replayed)  # same ids on replay


# -- 9. Restart mid-delivery -----------------------------------------------------------------------


def test_a_restarted_dispatcher_delivers_everything_it_left_pending(redis_server, redis_client):
    """One receiver fails (503), one hangs past the timeout and then processes the request anyway;
    the dispatcher is stopped mid-way and a new one started once both are healthy. A receiver that
    de-duplicates on webhook-id sees each event exactly once; raw duplicates are only the hanging
    receiver's (it processed requests whose answer nobody waited for)."""
    healthy = threading.Event()

    def failing(n, request):
        return (200, {}, 0.0) if healthy.is_set() else (503, {}, 0.0)

    def hanging(n, request):
        return (200, {}, 0.0) if healthy.is_set() else (200, {}, 1.2)  # answers after the 0.5 s timeout

    store = ConfigStore(redis_client)
    retry = ["200ms"] * 20  # nothing reaches the dead letters during the test
    with Receiver(failing) as failing_rx, Receiver(hanging) as hanging_rx:
        with dispatcher(redis_server) as d:
            store.put(webhook("failing", failing_rx.url, retry=retry))
            store.put(webhook("hanging", hanging_rx.url, retry=retry, timeout="500ms"))
            wait_running(d, "subscription/failing", "subscription/hanging")
            ids = publish(redis_client, 20)
            failing_rx.wait_for(lambda r: len(r) >= 8, timeout_s=10)
            hanging_rx.wait_for(lambda r: len(r) >= 4, timeout_s=10)
        streams = [keys.subscription_stream("failing"), keys.subscription_stream("hanging")]
        for stream in streams:  # handed out, not acknowledged: the next dispatcher's work
            assert pending(redis_client, stream) > 0
            assert redis_client.xlen(stream) == 20
            assert list_dead(redis_client, stream)["total"] == 0
        healthy.set()
        with dispatcher(redis_server):
            for rx in (failing_rx, hanging_rx):
                rx.wait_for(lambda r: {x.json()["id"] for x in r if x.status == 200} >= set(ids))
            for stream in streams:
                wait_until(lambda s=stream: pending(redis_client, s) == 0, 5, "all acknowledged")
        # the first dispatcher's last hanging requests finish processing (nobody reads the answers)
        wait_until(lambda: all(r.answered_at for r in hanging_rx.seen()), 5, "hanging answers done")
        results = {"failing": failing_rx.seen(), "hanging": hanging_rx.seen()}
    expected = {message_id([{"source": "esp/rule/r", "id": i}]) for i in ids}
    for name, seen in results.items():
        processed = Counter(r.headers["webhook-id"] for r in seen if r.status == 200 and r.answered_at)
        assert set(processed) == expected, name  # de-duplicated on webhook-id: each event once, none lost
        for r in seen:
            assert r.headers["webhook-id"] == message_id([{"source": "esp/rule/r", "id": r.json()["id"]}])
        duplicates = sum(c - 1 for c in processed.values())
        print(f"\n{name}: {len(seen)} requests, {len(processed)} events, {duplicates} raw duplicates processed")
        if name == "failing":
            assert duplicates == 0  # a 503 is not processed, so the receiver never sees one twice
    for stream in streams:
        assert list_dead(redis_client, stream)["total"] == 0


# -- A Redis error in the middle of a delivery ----------------------------------------------------------


def test_a_failed_trace_write_does_not_strand_the_event(redis_server, redis_client):
    trace = keys.deliveries("esp/rule/r/o0")
    redis_client.set(trace, "not a list")  # the trace write (RPUSH) of this event fails with WRONGTYPE

    def busy_once(n, request):
        return (503, {}, 0.0) if n == 1 else (200, {}, 0.0)

    with Receiver(busy_once) as receiver, dispatcher(redis_server) as d:
        ConfigStore(redis_client).put(webhook("hooks", receiver.url))
        wait_running(d, "subscription/hooks")
        publish(redis_client, 1)
        receiver.wait_for(lambda r: len(r) >= 1, timeout_s=10)
        time.sleep(0.2)
        redis_client.delete(trace)  # the error is gone; the schedule says: try again in 50 ms
        wait_until(lambda: pending(redis_client, STREAM) == 0, 3, "delivered after the error cleared")
    assert [r.status for r in receiver.seen()] == [503, 200]
