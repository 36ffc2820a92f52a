"""The dispatcher follows config changes however often a destination's document changes: each
change stops the old delivery loop (it is usually blocked in a Redis read) and starts a new
one, and a loop that is slow to end must never stop the dispatcher from starting the others."""

from __future__ import annotations

import time

from runtime import keys
from runtime.config.store import ConfigStore
from tests.integration.test_delivery import dispatcher, publish, wait_settled, wait_until, webhook
from tests.support.receiver import Receiver

CHANGES = 40


def version_running(d, key: str) -> int | None:
    running = d.running.get(key)
    return running[0].version if running else None


def test_many_changes_of_one_destination_never_stall_the_others(redis_server, redis_client):
    store = ConfigStore(redis_client)
    with Receiver() as receiver, dispatcher(redis_server) as d:
        for i in range(CHANGES):  # each change restarts the destination's loop mid-read
            store.put(webhook("churn", receiver.url, timeout=f"{1000 + i}ms"))
            wait_until(lambda i=i: version_running(d, "subscription/churn") == i + 1, 10, f"churn v{i + 1} running")
            time.sleep(0.05)  # let the new loop block in its read
        store.put(webhook("fresh", receiver.url))
        wait_until(lambda: "subscription/fresh" in d.running, 10, "the fresh destination running")
        ids = publish(redis_client, 5, prefix="f")
        wait_settled(redis_client, keys.subscription_stream("fresh"))
        delivered = {r.json()["id"] for r in receiver.requests}
    assert set(ids) <= delivered
