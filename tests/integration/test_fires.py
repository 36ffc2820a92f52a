"""The last fires kept per customer by the outbox, against a real redis-server: recorded once in
the publishing Lua call, newest first, capped, and never for atomic re-publications."""

from __future__ import annotations

from typing import Any

import orjson

from runtime import keys
from runtime.log.partitioning import DEFAULT_PARTITIONS, partition_of
from runtime.subscriptions.outbox import FIRES_KEPT, Outbox, Publication, last_fires
from runtime.subscriptions.topics import TopicRouter

ROUTER = TopicRouter({"s": ["business.*"]})


def fire(i: int, rule: str = "r", customer: str = "ann") -> Publication:
    events = [{"source": "src", "id": f"e{i}"}]
    event: dict[str, Any] = {
        "id": f"o{i}",
        "type": "business.x",
        "time": f"2026-01-01T00:00:{i:02d}.000Z",
        "subject": customer,
        "data": {"rule": rule, "rule_version": 2, "count": 1, "events": events},
    }
    return Publication(f"o{i}", "business.x", event, (("src", f"e{i}"),))


def atomic(i: int, customer: str = "ann") -> Publication:
    event = {"id": f"a{i}", "type": "x", "subject": customer, "data": {"rule": "looks-like-one"}}
    return Publication(f"atomic/src/a{i}", "atomic.x", event)


def test_fires_are_kept_once_newest_first_and_trimmed(redis_client):
    outbox = Outbox(redis_client, horizon_s=60, maxlen=10_000)
    first = [fire(i) for i in range(3)] + [fire(3, rule="q"), atomic(0)]
    assert outbox.publish(first, ROUTER) == 5
    assert outbox.publish(first, ROUTER) == 0  # a replay: nothing new, nothing recorded twice
    fires = last_fires(redis_client, "ann")
    assert [f["id"] for f in fires["r"]] == ["o2", "o1", "o0"]
    assert fires["q"] == [
        {
            "rule": "q",
            "version": 2,
            "topic": "business.x",
            "id": "o3",
            "time": "2026-01-01T00:00:03.000Z",
            "events": [{"source": "src", "id": "e3"}],
        }
    ]
    assert "looks-like-one" not in fires  # atomic re-publications are not rule fires
    assert last_fires(redis_client, "ann", rule="q") == {"q": fires["q"]}
    assert last_fires(redis_client, "ann", limit=2)["r"] == fires["r"][:2]
    assert last_fires(redis_client, "bob") == {}
    assert 0 < redis_client.pttl(keys.fires(partition_of("ann", DEFAULT_PARTITIONS), "ann")) <= 60_000

    more = [fire(i) for i in range(4, 4 + FIRES_KEPT)]
    outbox.publish(more + first, ROUTER)  # the replayed ones in the same batch are skipped
    kept = [
        orjson.loads(raw)["id"]
        for raw in redis_client.lrange(keys.fires(partition_of("ann", DEFAULT_PARTITIONS), "ann"), 0, -1)
    ]
    assert kept == [f"o{i}" for i in reversed(range(4, 4 + FIRES_KEPT))]
    assert "q" not in last_fires(redis_client, "ann")  # trimmed away by newer fires of r
