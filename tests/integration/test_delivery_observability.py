"""What delivery leaves for operators (real redis-server, real HTTP receivers on loopback, the
dispatcher in-process): each attempt in the event trace, and the delivery metrics."""

from __future__ import annotations

import threading
import time

from runtime import keys
from runtime.config.store import ConfigStore
from runtime.events.envelope import Event
from runtime.events.trace import trace_event
from runtime.log.partition_log import PartitionLog
from runtime.log.partitioning import DEFAULT_PARTITIONS, partition_of
from runtime.subscriptions.outbox import Publication
from tests.integration.test_delivery import (
    dispatcher,
    outputs,
    pending,
    publish,
    publish_all,
    wait_running,
    wait_until,
    webhook,
)
from tests.support.receiver import Receiver

# -- 10. Trace ------------------------------------------------------------------------------------------


def test_the_trace_lists_each_delivery_attempt_of_an_output(redis_server, redis_client):
    """An input event (demo-app/e1) matched a rule whose output o0 went to a webhook that failed
    once: ``esp trace demo-app e1`` shows both attempts."""
    now_ms = int(time.time() * 1000)
    accepted = Event("e1", "app.login", now_ms, "c1", "c1", "demo-app", {}, now_ms)
    partition = partition_of("c1", DEFAULT_PARTITIONS)
    PartitionLog(redis_client, horizon_s=3600).append({partition: [accepted]}, now_ms=now_ms)  # e1 was accepted

    def flaky(n, request):
        return (503, {}, 0.0, "try later") if n == 1 else (200, {}, 0.0)

    with Receiver(flaky) as receiver, dispatcher(redis_server) as d:
        ConfigStore(redis_client).put(webhook("hooks", receiver.url))
        wait_running(d, "subscription/hooks")
        (output,) = outputs(1)
        publish_all(redis_client, [Publication(output.id, output.topic, output.event, (("demo-app", "e1"),))])
        receiver.wait_for(lambda r: len(r) >= 2)
        wait_until(lambda: pending(redis_client, keys.subscription_stream("hooks")) == 0, 5, "acknowledged")

    raw = redis_client.lrange(keys.deliveries("esp/rule/r/o0"), 0, -1)
    assert len(raw) == 2
    trace = trace_event(redis_client, "demo-app", "e1", now_ms=now_ms, days=1, partitions=DEFAULT_PARTITIONS)
    assert trace["status"] == "accepted"
    assert {"step": "matched", "output": "o0", "topic": "business.lead", "rule": "r"} in trace["steps"]
    attempts = [s for s in trace["steps"] if s["step"] == "delivery"]
    assert [{k: a[k] for k in ("event", "destination", "attempt", "status", "outcome", "error")} for a in attempts] == [
        {
            "event": "esp/rule/r/o0",
            "destination": "subscription/hooks",
            "attempt": 1,
            "status": 503,
            "outcome": "retry",
            "error": "try later",
        },
        {
            "event": "esp/rule/r/o0",
            "destination": "subscription/hooks",
            "attempt": 2,
            "status": 200,
            "outcome": "delivered",
            "error": None,
        },
    ]
    assert attempts[0]["at"] <= attempts[1]["at"]
    assert abs(attempts[0]["at"] - now_ms) < 10_000
    assert 0 < redis_client.ttl(keys.deliveries("esp/rule/r/o0")) <= 3600  # kept for the horizon only


# -- 11. Metrics ----------------------------------------------------------------------------------------


class Recorder:
    """A DeliveryMetrics that records every call (called from the dispatcher's thread)."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self._lock = threading.Lock()

    def _add(self, *call) -> None:
        with self._lock:
            self.calls.append(call)

    def delivered(self, destination: str, count: int, latency_s: float) -> None:
        self._add("delivered", destination, count, latency_s)

    def retried(self, destination: str) -> None:
        self._add("retried", destination)

    def dead_lettered(self, destination: str, count: int) -> None:
        self._add("dead_lettered", destination, count)

    def lag(self, destination: str, oldest_undelivered_s: float) -> None:
        self._add("lag", destination, oldest_undelivered_s)

    def of(self, kind: str, destination: str) -> list[tuple]:
        with self._lock:
            return [c[2:] for c in self.calls if c[0] == kind and c[1] == destination]


def test_delivery_reports_delivered_retried_dead_lettered_and_lag(redis_server, redis_client):
    metrics = Recorder()

    def flaky(n, request):  # the first two requests fail
        return (503, {}, 0.0) if n <= 2 else (200, {}, 0.0)

    store = ConfigStore(redis_client)
    with (
        Receiver(flaky) as flaky_rx,
        Receiver(lambda n, r: (400, {}, 0.0)) as refusing_rx,
        Receiver(lambda n, r: (500, {}, 0.0)) as down_rx,
        dispatcher(redis_server, metrics=metrics) as d,
    ):
        store.put(webhook("flaky", flaky_rx.url, max_in_flight=1))
        store.put(webhook("refusing", refusing_rx.url))
        store.put(webhook("down", down_rx.url, retry=["1h"]))
        wait_running(d, "subscription/flaky", "subscription/refusing", "subscription/down")
        publish(redis_client, 3)
        wait_until(lambda: sum(c for c, _ in metrics.of("delivered", "subscription/flaky")) == 3, 10, "delivered")
        wait_until(lambda: metrics.of("dead_lettered", "subscription/refusing"), 10, "dead-lettered")
        # lag is reported every 2 s: the down receiver's oldest event keeps ageing
        wait_until(lambda: any(s >= 1.0 for (s,) in metrics.of("lag", "subscription/down")), 10, "lag")
        wait_until(lambda: len(metrics.of("lag", "subscription/flaky")) >= 2, 5, "a later lag report")

    flaky_delivered = metrics.of("delivered", "subscription/flaky")
    assert [c for c, _ in flaky_delivered] == [1, 1, 1]
    first_latency = flaky_delivered[0][1]
    assert 0.1 <= first_latency < 5  # from publish: includes the two retry waits (~40 + ~80 ms at least)
    assert metrics.of("retried", "subscription/flaky") == [(), ()]
    assert sum(c for (c,) in metrics.of("dead_lettered", "subscription/refusing")) == 3
    assert metrics.of("retried", "subscription/refusing") == []
    assert metrics.of("delivered", "subscription/refusing") == []
    assert metrics.of("delivered", "subscription/down") == []
    assert metrics.of("dead_lettered", "subscription/down") == []
    assert len(metrics.of("retried", "subscription/down")) == 3  # one retry scheduled per event
    assert metrics.of("lag", "subscription/flaky")[-1] == (0.0,)  # caught up
    assert max(s for (s,) in metrics.of("lag", "subscription/down")) < 10
