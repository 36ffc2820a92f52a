"""The contact-policy stage against a real redis-server: requests published by the outbox (as
partition actors do), gathered for arbitration, decided through the ledger, published."""

from __future__ import annotations

import time

from runtime import keys
from runtime.config.store import ConfigStore
from runtime.policy.stage import PolicyStage
from runtime.sources.quarantine import POISON_ATTEMPTS, PROCESSING_ERROR, QuarantineStore
from runtime.subscriptions.outbox import Outbox, Publication
from runtime.subscriptions.topics import TopicRouter
from tests.conftest import url_of
from tests.support.outputs import forget_published
from tests.support.runner import pulled

SHARDS = 2


def notify(i: str, customer: str, campaign: str, template: str = "offer", channel: str = "sms") -> Publication:
    event = {
        "specversion": "1.0",
        "id": i,
        "source": "esp/rule/r",
        "type": f"notifications.{channel}",
        "subject": customer,
        "data": {
            "rule": "r",
            "notify": {"channel": channel, "template": template, "campaign": campaign, "priority": 50},
        },
    }
    return Publication(i, f"notifications.{channel}", event)


def setup(client, **policy) -> PolicyStage:
    store = ConfigStore(client)
    store.put({"kind": "subscription", "name": "out", "topics": ["notifications.*"]})
    store.put({"kind": "subscription", "name": "dec", "topics": ["decisions"]})
    store.put({"kind": "campaign", "name": "gold", "priority": 90, "dedupe_days": 7})
    store.put({"kind": "campaign", "name": "silver", "priority": 40, "dedupe_days": 7})
    store.put({"kind": "policy", "name": "default", "arbitration_window": "300ms", **policy})
    return PolicyStage(url_of(client), list(range(SHARDS)), total_shards=SHARDS, horizon_s=3600, maxlen=100_000)


def send(client, pubs: list[Publication]) -> None:
    _, docs = ConfigStore(client).snapshot()
    Outbox(client, horizon_s=3600, maxlen=100_000).publish(pubs, TopicRouter.from_docs(docs, policy_shards=SHARDS))


def run(stage: PolicyStage, seconds: float = 1.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        stage.step(block_ms=50)


def test_the_best_offer_wins_and_the_others_lose_to_it(redis_client):
    stage = setup(redis_client)
    send(redis_client, [notify("n1", "c1", "silver"), notify("n2", "c1", "gold"), notify("n3", "c2", "silver")])
    run(stage)
    sent = sorted(e["id"] for e in pulled(redis_client, "out"))
    assert sent == ["n2", "n3"]
    decisions = {e["data"]["request"]: e["data"]["decision"] for e in pulled(redis_client, "dec")}
    assert decisions == {"n1": "lost_arbitration:n2", "n2": "sent", "n3": "sent"}


def test_caps_dedupe_and_replays(redis_client):
    stage = setup(redis_client, caps=[{"name": "weekly", "window": "7d", "max": 2, "max_by_tier": {"gold": 1}}])
    redis_client.hset("esp:profile:vip", "tier", '"gold"')
    send(redis_client, [notify("a1", "c1", "gold", "t1")])
    run(stage, 0.6)
    send(redis_client, [notify("a2", "c1", "gold", "t1")])  # same campaign and content within 7 days
    run(stage, 0.6)
    send(redis_client, [notify("a3", "c1", "silver", "t2")])
    run(stage, 0.6)
    send(redis_client, [notify("a4", "c1", "silver", "t3")])  # third in the week: over the cap of 2
    run(stage, 0.6)
    send(redis_client, [notify("v1", "vip", "gold", "t1"), notify("v2", "vip", "silver", "t9")])
    run(stage, 0.6)
    send(redis_client, [notify("v3", "vip", "silver", "t8")])  # gold tier: 1 a week
    run(stage, 0.6)
    decisions = {e["data"]["request"]: e["data"]["decision"] for e in pulled(redis_client, "dec")}
    assert decisions == {
        "a1": "sent",
        "a2": "suppressed:dedupe",
        "a3": "sent",
        "a4": "suppressed:cap:weekly",
        "v1": "sent",
        "v2": "lost_arbitration:v1",
        "v3": "suppressed:cap:weekly",
    }
    # the same request again (a partition replay) is decided once and sent once
    forget_published(redis_client, "a1", "c1")
    send(redis_client, [notify("a1", "c1", "gold", "t1")])
    run(stage, 0.6)
    assert [e["id"] for e in pulled(redis_client, "out")] == ["a1", "a3", "v1"]
    assert [d["id"] for d in stage.ledger.recent("c1")].count("a1") == 1  # the replay is not logged again


def test_a_request_whose_decision_keeps_raising_is_quarantined_and_the_stage_moves_on(redis_client, monkeypatch):
    """A customer id whose ledger key holds another type (a key collision) makes every decision
    for them raise: after POISON_ATTEMPTS tries their request is quarantined and acknowledged;
    the other customers' requests, and later ones, are decided and sent once."""
    stage = setup(redis_client)
    redis_client.set(keys.ledger("cbad"), "a string where a sorted set belongs")
    tries: list[str] = []
    failed = stage._failed

    def counting(customer, group, exc, now):
        tries.append(customer)
        return failed(customer, group, exc, now)

    monkeypatch.setattr(stage, "_failed", counting)
    send(redis_client, [notify("p1", "cbad", "gold"), notify("g1", "c1", "gold"), notify("g2", "c2", "silver")])
    run(stage, 2.0)
    send(redis_client, [notify("g3", "c3", "gold")])
    run(stage, 0.6)

    assert tries == ["cbad"] * POISON_ATTEMPTS
    assert sorted(e["id"] for e in pulled(redis_client, "out")) == ["g1", "g2", "g3"]
    quarantined = QuarantineStore(redis_client).list(reason=PROCESSING_ERROR)
    assert [(q["source"], q["id"]) for q in quarantined] == [("esp/rule/r", "p1")]
    assert "WRONGTYPE" in quarantined[0]["message"]
    assert stage.poison == 1
    pending = [redis_client.xpending(keys.policy_requests(s), keys.POLICY_GROUP)["pending"] for s in range(SHARDS)]
    assert pending == [0, 0]  # the poison request is acknowledged, not re-read forever


def test_an_unreadable_policy_request_is_quarantined_at_once(redis_client):
    stage = setup(redis_client)
    stage.step(block_ms=10)  # creates the consumer groups
    redis_client.xadd(keys.policy_requests(0), {"e": b"{not json"})
    send(redis_client, [notify("g1", "c1", "gold")])
    run(stage, 0.6)
    assert [e["id"] for e in pulled(redis_client, "out")] == ["g1"]
    quarantined = QuarantineStore(redis_client).list(reason=PROCESSING_ERROR)
    assert [q["source"] for q in quarantined] == ["esp/contact-policy"]
    assert quarantined[0]["raw"] == "{not json"
    assert stage.poison == 1
