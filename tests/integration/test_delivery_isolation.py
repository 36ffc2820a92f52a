"""Per-destination delivery settings, end to end (real redis-server, real HTTP receivers on
loopback, the dispatcher in-process): isolation from a hung receiver, batches, the rate limit, and
a subscription's filter and projection."""

from __future__ import annotations

import statistics
import threading
import time

from runtime import keys
from runtime.config.store import ConfigStore
from runtime.subscriptions.deadletters import list_dead
from runtime.subscriptions.dispatch import message_id
from runtime.subscriptions.outbox import Publication
from runtime.subscriptions.webhooks import generate_secret
from tests.integration.test_delivery import (
    dispatcher,
    outputs,
    pending,
    publish,
    publish_all,
    wait_running,
    wait_settled,
    webhook,
)
from tests.support.receiver import Receiver
from tests.unit.test_webhooks import spec_verify

# -- 4. Isolation ------------------------------------------------------------------------------------


def test_a_hung_receiver_does_not_slow_a_healthy_one(redis_server, redis_client):
    """Both subscriptions get every event. The hung receiver never answers within the 2 s timeout
    and is retried all along; the healthy one's events still arrive promptly."""
    store = ConfigStore(redis_client)
    with (
        Receiver(lambda n, r: (200, {}, 30.0)) as hung,
        Receiver() as healthy,
        dispatcher(redis_server) as d,
    ):
        store.put(webhook("hung", hung.url, timeout="2s", retry=["100ms"] * 20))
        store.put(webhook("healthy", healthy.url))
        wait_running(d, "subscription/hung", "subscription/healthy")
        published: dict[str, float] = {}
        for batch in range(40):  # 200 events in 40 publishes of 5, over about 2 s
            pubs = outputs(5, start=batch * 5)
            at = time.time()
            publish_all(redis_client, pubs)
            published.update((p.id, at) for p in pubs)
            time.sleep(0.05)
        seen = healthy.wait_for(lambda r: len({x.json()["id"] for x in r}) >= 200, timeout_s=20)
        hung_seen = hung.seen()
        hung_status = d.status()["subscription/hung"]
        hung_pending = pending(redis_client, keys.subscription_stream("hung"))
    first = {}
    for r in seen:
        first.setdefault(r.json()["id"], r.at)
    latencies = sorted(first[i] - published[i] for i in published)
    p50, p99 = statistics.median(latencies), statistics.quantiles(latencies, n=100)[98]
    worst = latencies[-1]
    print(f"\nhealthy: 200 events, latency p50 {p50 * 1e3:.1f} ms, p99 {p99 * 1e3:.1f} ms, max {worst * 1e3:.1f} ms")
    print(f"hung: {len(hung_seen)} requests, delivered {hung_status['delivered']}, pending {hung_pending}")
    assert len(seen) == 200  # each once
    assert p99 < 1.0
    assert hung_status["delivered"] == 0 and len(hung_seen) >= 4  # stuck the whole time, retried
    assert hung_pending > 0
    assert list_dead(redis_client, keys.subscription_stream("hung"))["total"] == 0


# -- 5. Batches ----------------------------------------------------------------------------------------


def test_batches_are_signed_cloudevents_batches_with_every_event_once(redis_server, redis_client):
    secret = generate_secret()
    with Receiver() as receiver, dispatcher(redis_server) as d:
        ConfigStore(redis_client).put(webhook("hooks", receiver.url, batch=10, secrets=[secret]))
        wait_running(d, "subscription/hooks")
        ids = publish(redis_client, 50)  # one atomic publish: the dispatcher reads full batches
        receiver.wait_for(lambda r: sum(len(x.json()) for x in r) >= 50)
        wait_settled(redis_client, keys.subscription_stream("hooks"))
        seen = receiver.seen()
    bodies = [r.json() for r in seen]
    assert all(isinstance(b, list) for b in bodies)
    assert [len(b) for b in bodies] == [10] * 5
    assert all(r.headers["content-type"] == "application/cloudevents-batch+json" for r in seen)
    assert all(spec_verify(secret, r.headers, r.body) for r in seen)
    assert sorted(e["id"] for b in bodies for e in b) == sorted(ids)  # every event exactly once
    assert all(r.headers["webhook-id"] == message_id(r.json()) for r in seen)
    assert all(e["specversion"] == "1.0" and e["type"] == "business.lead" for b in bodies for e in b)


# -- 6. Rate limit --------------------------------------------------------------------------------------


def test_the_rate_limit_paces_requests(redis_server, redis_client):
    with Receiver() as receiver, dispatcher(redis_server) as d:
        ConfigStore(redis_client).put(webhook("hooks", receiver.url, rate_limit_per_s=20))
        wait_running(d, "subscription/hooks")
        publish(redis_client, 40)
        seen = receiver.wait_for(lambda r: len(r) >= 40, timeout_s=10)
    arrivals = sorted(r.at for r in seen)
    span = arrivals[-1] - arrivals[0]
    print(f"\nrate limit 20/s: 40 requests over {span:.3f} s")
    assert span >= 1.85  # 39 gaps of 50 ms = 1.95 s, less a late first arrival on a busy machine
    assert span < 4.0
    busiest = max(sum(1 for t in arrivals if start <= t < start + 1.0) for start in arrivals)
    assert busiest <= 24  # 20 a second, give or take arrivals bunched by a busy machine (unpaced: 40)


# -- 7. Filter and projection --------------------------------------------------------------------------


def test_filter_and_projection_shape_what_a_webhook_receives(redis_server, redis_client):
    doc = {**webhook("hooks", ""), "filter": "data.n >= 5 && data.tier == 'gold'", "fields": ["id", "type", "data.n"]}
    with Receiver() as receiver, Receiver() as everything, dispatcher(redis_server) as d:
        doc["webhook"]["url"] = receiver.url
        ConfigStore(redis_client).put(doc)
        ConfigStore(redis_client).put(webhook("all", everything.url))
        wait_running(d, "subscription/hooks", "subscription/all")
        pubs = [
            Publication(
                f"o{i}",
                "business.lead",
                {
                    "specversion": "1.0",
                    "id": f"o{i}",
                    "source": "esp/rule/r",
                    "type": "business.lead",
                    "subject": "c1",
                    "data": {"rule": "r", "n": i, "tier": "gold" if i % 2 else "silver", "secret": "s3cr3t"},
                },
            )
            for i in range(20)
        ]
        publish_all(redis_client, pubs)
        wanted = [f"o{i}" for i in range(5, 20, 2)]
        seen = receiver.wait_for(lambda r: len(r) >= len(wanted))
        everything.wait_for(lambda r: len(r) >= 20)
        stream = keys.subscription_stream("hooks")
        wait_settled(redis_client, stream)
        seen = receiver.seen()
        assert redis_client.xlen(stream) == len(wanted)  # filtered out at publish: nothing else can come
    assert sorted((r.json() for r in seen), key=lambda e: e["data"]["n"]) == [
        {"id": i, "type": "business.lead", "data": {"n": int(i[1:])}} for i in wanted
    ]
    assert "s3cr3t" not in b"".join(r.body for r in seen).decode()
    assert all(r.headers["webhook-id"] == message_id([{"source": "esp/rule/r", "id": r.json()["id"]}]) for r in seen)


def test_a_batch_redelivered_after_a_restart_keeps_its_webhook_id(redis_server, redis_client):
    healthy = threading.Event()

    def failing(n, request):
        return (200, {}, 0.0) if healthy.is_set() else (503, {}, 0.0)

    with Receiver(failing) as receiver:
        with dispatcher(redis_server) as d:
            ConfigStore(redis_client).put(webhook("hooks", receiver.url, batch=10, retry=["200ms"] * 20))
            wait_running(d, "subscription/hooks")
            publish(redis_client, 7)  # read as a batch of 7
            receiver.wait_for(lambda r: any(len(x.json()) == 7 for x in r), timeout_s=10)
            publish_all(redis_client, outputs(10, start=7))  # then a batch of 10
            receiver.wait_for(lambda r: any(len(x.json()) == 10 for x in r), timeout_s=10)
        before = {r.headers["webhook-id"] for r in receiver.seen()}
        healthy.set()
        with dispatcher(redis_server):
            receiver.wait_for(lambda r: sum(len(x.json()) for x in r if x.status == 200) >= 17, timeout_s=10)
        after = [r for r in receiver.seen() if r.status == 200]
    assert sorted(e["id"] for r in after for e in r.json()) == sorted(f"o{i}" for i in range(17))
    assert {r.headers["webhook-id"] for r in after} <= before
