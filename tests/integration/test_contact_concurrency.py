"""Concurrent deciders on one real redis-server: separate OS processes (spawn) decide requests
for the same customers at the same time; the compare-and-set commit of the ledger must keep
every cap exact — never one contact more than it allows — whether the requests come through
``Ledger.decide`` directly or through a batch campaign and the policy stage."""

from __future__ import annotations

import multiprocessing
import queue
import time
from collections import Counter
from typing import Any

import redis

from runtime import keys
from runtime.config.store import ConfigStore
from runtime.config.types import document_body
from runtime.policy.decide import ContactRequest, PolicyRules
from runtime.policy.ledger import ConflictingWrite, Ledger
from runtime.policy.models import Campaign, Policy
from runtime.policy.requests import campaign_requests
from runtime.policy.stage import PolicyStage
from runtime.subscriptions.outbox import Outbox
from runtime.subscriptions.pull import SubscriptionReader
from runtime.subscriptions.topics import TopicRouter

SPAWN = multiprocessing.get_context("spawn")
PROCESSES, REQUESTS, CAP = 3, 50, 10
SHARDS = 2
CUSTOMERS = ["k0", "k1", "k2", "k3"]
BATCH_CAP, CHUNKS, DIRECT_ROUNDS = 5, 12, 30


class _Counts:
    conflicts = 0
    commits = 0


def _count_conflicts() -> type[_Counts]:
    """Wrap Ledger._settle in this (child) process: count refused and accepted commits, and
    widen the window between read and commit a little so the deciders really interleave."""
    settle, views = Ledger._settle, Ledger._views

    def counting_settle(reply: Any, *args: Any) -> None:
        if int(reply):
            _Counts.commits += 1
        else:
            _Counts.conflicts += 1
        settle(reply, *args)

    def slow_views(self: Ledger, *args: Any) -> Any:
        result = views(self, *args)
        time.sleep(0.0005)
        return result

    Ledger._settle = staticmethod(counting_settle)  # type: ignore[method-assign, assignment]
    Ledger._views = slow_views  # type: ignore[method-assign]
    return _Counts


def _decide_all(ledger: Ledger, groups: list[list[ContactRequest]], rules: PolicyRules) -> tuple[list, int]:
    gave_up = 0
    while True:
        try:
            return ledger.decide(groups, rules), gave_up
        except ConflictingWrite:  # MAX_ATTEMPTS refusals in a row: the caller tries again later
            gave_up += 1


def _direct_worker(url: str, worker: int, barrier: Any, out: Any) -> None:
    counts = _count_conflicts()
    ledger = Ledger(redis.Redis.from_url(url), horizon_s=3600)
    rules = PolicyRules(caps=(Policy.model_validate({"name": "p", "caps": [_weekly(CAP)]}).caps[0],))
    outcomes: Counter[str] = Counter()
    gave_up = 0
    barrier.wait(timeout=60)
    for i in range(REQUESTS):
        request = ContactRequest(f"w{worker}-{i:03d}", "c1", "notify", "sms", f"t{i}")
        decisions, refused = _decide_all(ledger, [[request]], rules)
        outcomes.update(d.outcome for d in decisions)
        gave_up += refused
    out.put({"worker": worker, "outcomes": dict(outcomes), "conflicts": counts.conflicts, "gave_up": gave_up})


def _weekly(limit: int) -> dict[str, Any]:
    return {"name": "weekly", "window": "7d", "max": limit}


def test_processes_deciding_for_one_customer_never_exceed_the_cap(redis_server) -> None:
    out, barrier = SPAWN.Queue(), SPAWN.Barrier(PROCESSES)
    workers = [SPAWN.Process(target=_direct_worker, args=(redis_server.url, w, barrier, out)) for w in range(PROCESSES)]
    reports = _run(workers, out)

    outcomes = sum((Counter(r["outcomes"]) for r in reports), Counter())
    conflicts, gave_up = sum(r["conflicts"] for r in reports), sum(r["gave_up"] for r in reports)
    print(
        f"\n{PROCESSES}x{REQUESTS} decisions, cap {CAP}: {dict(outcomes)}, {conflicts} compare-and-set conflicts, "
        f"{gave_up} calls gave up after MAX_ATTEMPTS"
    )
    assert outcomes == {"sent": CAP, "suppressed:cap:weekly": PROCESSES * REQUESTS - CAP}
    client = redis.Redis.from_url(redis_server.url)
    assert client.zcard(keys.ledger("c1")) == CAP
    assert int(client.get(keys.ledger_version("c1"))) == PROCESSES * REQUESTS  # one commit per decision
    assert conflicts > 0  # the deciders did interleave: otherwise this test proves nothing


# -- batch campaign through the stage vs real-time decisions ---------------------------------


def _batch_worker(url: str, barrier: Any, out: Any) -> None:
    """A batch campaign run as the endpoint does it, decided by a policy stage."""
    counts = _count_conflicts()
    client = redis.Redis.from_url(url)
    _, docs = ConfigStore(client).snapshot()
    router, outbox = TopicRouter.from_docs(docs, policy_shards=SHARDS), Outbox(client, horizon_s=3600, maxlen=100_000)
    stage = PolicyStage(url, list(range(SHARDS)), total_shards=SHARDS, horizon_s=3600, maxlen=100_000)
    stage.step(block_ms=1)
    barrier.wait(timeout=60)
    for chunk in range(CHUNKS):
        contacts = [{"customer": c, "channel": "sms", "template": f"b{chunk}"} for c in CUSTOMERS]
        publications = campaign_requests("promo", {"run": f"run-{chunk}", "contacts": contacts}, now_ms=0)
        outbox.publish(publications, router)
        stage.step(block_ms=5)
    deadline = time.monotonic() + 20
    while sum(stage.totals.values()) < CHUNKS * len(CUSTOMERS) and time.monotonic() < deadline:
        stage.step(block_ms=20)
    out.put({"worker": "batch", "totals": dict(stage.totals), "conflicts": counts.conflicts})


def _realtime_worker(url: str, barrier: Any, out: Any) -> None:
    counts = _count_conflicts()
    client = redis.Redis.from_url(url)
    _, docs = ConfigStore(client).snapshot()
    rules = PolicyRules.combine(
        [Policy.model_validate(document_body(d)) for d in docs["policy"]],
        [Campaign.model_validate(document_body(d)) for d in docs["campaign"]],
    )
    ledger = Ledger(client, horizon_s=3600)
    sent: Counter[str] = Counter()
    barrier.wait(timeout=60)
    for i in range(DIRECT_ROUNDS):
        groups = [[ContactRequest(f"rt-{c}-{i}", c, "notify", "sms", f"r{i}", campaign="promo")] for c in CUSTOMERS]
        decisions, _ = _decide_all(ledger, groups, rules)
        sent.update(d.customer for d in decisions if d.outcome == "sent")
        time.sleep(0.03)  # leave the batch path room to take part
    out.put({"worker": "realtime", "sent": dict(sent), "conflicts": counts.conflicts})


def test_a_batch_campaign_and_real_time_decisions_share_the_cap(redis_server) -> None:
    client = redis.Redis.from_url(redis_server.url)
    store = ConfigStore(client)
    store.put({"kind": "subscription", "name": "out", "topics": ["notifications.*"]})
    store.put({"kind": "subscription", "name": "dec", "topics": ["decisions"]})
    store.put({"kind": "campaign", "name": "promo", "priority": 60})
    store.put({"kind": "policy", "name": "p", "arbitration_window": "0s", "caps": [_weekly(BATCH_CAP)]})

    out, barrier = SPAWN.Queue(), SPAWN.Barrier(2)
    reports = _run(
        [
            SPAWN.Process(target=_batch_worker, args=(redis_server.url, barrier, out)),
            SPAWN.Process(target=_realtime_worker, args=(redis_server.url, barrier, out)),
        ],
        out,
    )
    batch = next(r for r in reports if r["worker"] == "batch")
    realtime = next(r for r in reports if r["worker"] == "realtime")
    assert sum(batch["totals"].values()) == CHUNKS * len(CUSTOMERS)  # every batch request was decided

    reader = SubscriptionReader(client, visibility_timeout_ms=600_000)
    decisions = reader.pull("dec", max_events=10_000, wait_ms=0)["events"]
    stage_sent = Counter(e["subject"] for e in decisions if e["data"]["decision"] == "sent")
    delivered = reader.pull("out", max_events=10_000, wait_ms=0)["events"]
    assert Counter(e["subject"] for e in delivered) == stage_sent
    print(
        f"\nbatch sent {dict(stage_sent)}, real-time sent {realtime['sent']}; conflicts: "
        f"stage {batch['conflicts']}, real-time {realtime['conflicts']}"
    )
    for customer in CUSTOMERS:
        assert stage_sent[customer] + realtime["sent"].get(customer, 0) == BATCH_CAP, customer
        assert client.zcard(keys.ledger(customer)) == BATCH_CAP
    assert sum(stage_sent.values()) > 0 and sum(realtime["sent"].values()) > 0  # both paths took part


def _run(workers: list[Any], out: Any, timeout_s: float = 40) -> list[dict[str, Any]]:
    for w in workers:
        w.start()
    reports = []
    try:
        deadline = time.monotonic() + timeout_s
        while len(reports) < len(workers):
            try:
                reports.append(out.get(timeout=max(deadline - time.monotonic(), 0.1)))
            except queue.Empty:
                raise AssertionError(f"only {len(reports)} of {len(workers)} workers reported") from None
        for w in workers:
            w.join(timeout=10)
            assert w.exitcode == 0
    finally:
        for w in workers:
            if w.is_alive():
                w.terminate()
                w.join(timeout=5)
    return reports
