"""Webhook delivery against a real redis-server and real HTTP receivers on loopback: the
dispatcher runs in-process (``runtime.subscriptions.dispatch.Dispatcher``).

The helpers here (``dispatcher``, ``webhook``, ``publish``, ``wait_until``) are shared by the
other ``test_delivery_*.py`` files."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from runtime import keys
from runtime.config.store import ConfigStore
from runtime.subscriptions.deadletters import list_dead, replay_dead
from runtime.subscriptions.dispatch import DeliveryMetrics, Dispatcher
from runtime.subscriptions.outbox import Outbox, Publication
from runtime.subscriptions.topics import TopicRouter
from runtime.subscriptions.webhooks import generate_secret
from tests.support.receiver import Receiver
from tests.unit.test_webhooks import spec_verify


@contextmanager
def dispatcher(server, *, metrics: DeliveryMetrics | None = None) -> Iterator[Dispatcher]:
    """A Dispatcher running in its own thread and event loop; leaving the block stops it the way
    the actor stops (its destinations are cancelled, unacknowledged events stay pending)."""
    d = Dispatcher(server.url, horizon_s=3600, metrics=metrics)
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    thread = threading.Thread(target=lambda: loop.run_until_complete(d.run(stop)), daemon=True)
    thread.start()
    try:
        yield d
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=30)  # generous: a loaded 2-core machine; a hung stop never ends at all
        assert not thread.is_alive(), "the dispatcher did not stop within 30 s"


def wait_until(predicate: Callable[[], Any], timeout_s: float = 15.0, what: str = "condition") -> Any:
    """Poll ``predicate`` every 20 ms until it returns something truthy (returned), or fail."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not met within {timeout_s}s (last: {value!r})")
        time.sleep(0.02)


def wait_running(d: Dispatcher, *names: str) -> None:
    """Until the dispatcher runs a destination for each of ``names`` ("subscription/x", ...)."""
    wait_until(lambda: all(n in d.running for n in names), 10, f"dispatcher running {names}")


def webhook(name: str, url: str, **endpoint) -> dict:
    return {
        "kind": "subscription",
        "name": name,
        "topics": ["business.*"],
        "mode": "webhook",
        "webhook": {"url": url, "internal": True, "retry": ["50ms", "100ms", "100ms"], **endpoint},
    }


def outputs(n: int, *, prefix: str = "o", customer: str = "c1", start: int = 0) -> list[Publication]:
    return [
        Publication(
            f"{prefix}{i}",
            "business.lead",
            {
                "specversion": "1.0",
                "id": f"{prefix}{i}",
                "source": "esp/rule/r",
                "type": "business.lead",
                "subject": customer,
                "data": {"rule": "r", "n": i},
            },
        )
        for i in range(start, start + n)
    ]


def publish_all(client, pubs: list[Publication]) -> list[str]:
    """Fan ``pubs`` out through the real outbox, routed by the stored config."""
    _, docs = ConfigStore(client).snapshot()
    Outbox(client, horizon_s=3600, maxlen=100_000).publish(pubs, TopicRouter.from_docs(docs))
    return [p.id for p in pubs]


def publish(client, n: int, *, prefix: str = "o", customer: str = "c1") -> list[str]:
    return publish_all(client, outputs(n, prefix=prefix, customer=customer))


def pending(client, stream: str) -> int:
    return int(client.xpending(stream, keys.SUBSCRIPTION_GROUP)["pending"])


def wait_settled(client, stream: str, timeout_s: float = 10.0) -> None:
    """Until the dispatcher has read and acknowledged (delivered or dead-lettered) every entry:
    then no request, retry or duplicate can follow, so "nothing more came" checked after this
    holds however slow the machine is (a fixed sleep would just stop looking)."""

    def done() -> bool:
        names = (keys.SUBSCRIPTION_GROUP, keys.SUBSCRIPTION_GROUP.encode())
        group = next(g for g in client.xinfo_groups(stream) if g["name"] in names)
        return int(group["pending"]) == 0 and int(group.get("lag") or 0) == 0

    wait_until(done, timeout_s, f"{stream} read and acknowledged")


def test_signed_delivery_verifies_with_an_independent_check(redis_server, redis_client):
    secret = generate_secret()
    with Receiver() as receiver, dispatcher(redis_server) as d:
        ConfigStore(redis_client).put(webhook("hooks", receiver.url, secrets=[secret]))
        wait_running(d, "subscription/hooks")
        ids = publish(redis_client, 20)
        seen = receiver.wait_for(lambda r: len(r) >= 20)
    assert sorted(r.json()["id"] for r in seen) == sorted(ids)
    assert all(spec_verify(secret, r.headers, r.body) for r in seen)
    assert len({r.headers["webhook-id"] for r in seen}) == 20


def test_failures_then_success_give_one_effective_delivery_with_one_id(redis_server, redis_client):
    def flaky(n, request):
        return (503, {}, 0.0) if n <= 2 else (200, {}, 0.0)

    with Receiver(flaky) as receiver, dispatcher(redis_server) as d:
        ConfigStore(redis_client).put(webhook("hooks", receiver.url))
        wait_running(d, "subscription/hooks")
        publish(redis_client, 1)
        seen = receiver.wait_for(lambda r: len(r) >= 3)
        wait_settled(redis_client, keys.subscription_stream("hooks"))
    assert len(receiver.requests) == 3  # two failures, one success, nothing after
    assert len({r.headers["webhook-id"] for r in seen}) == 1
    assert redis_client.xpending(keys.subscription_stream("hooks"), keys.SUBSCRIPTION_GROUP)["pending"] == 0


def test_exhausted_retries_dead_letter_and_replay_delivers_again(redis_server, redis_client):
    state = {"healthy": False}

    def down(n, request):
        return (200, {}, 0.0) if state["healthy"] else (500, {}, 0.0)

    with Receiver(down) as receiver, dispatcher(redis_server) as d:
        ConfigStore(redis_client).put(webhook("hooks", receiver.url))
        wait_running(d, "subscription/hooks")
        publish(redis_client, 2)
        stream = keys.subscription_stream("hooks")
        deadline = time.monotonic() + 10
        while list_dead(redis_client, stream)["total"] < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        dead = list_dead(redis_client, stream)
        assert dead["total"] == 2 and all(d["status"] == 500 and d["attempts"] == 4 for d in dead["items"])
        state["healthy"] = True
        assert replay_dead(redis_client, stream) == 2
        seen = receiver.wait_for(lambda r: sum(1 for x in r if x.at and state["healthy"]) >= 10)
    ok_ids = [r.headers["webhook-id"] for r in seen[8:]]
    assert len(ok_ids) == 2 and list_dead(redis_client, stream)["total"] == 0
