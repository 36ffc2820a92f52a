"""The contact ledger (runtime/policy/ledger.py) and the policy stage's holds against a real
redis-server: idempotent decisions, trimming, opt-outs, the per-customer decision log, held
requests, and a held request surviving a restart of the stage."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

import orjson
import pytest
import redis

from runtime import keys
from runtime.config.store import ConfigStore
from runtime.policy import ledger as ledger_module
from runtime.policy.decide import DAY_MS, ContactRequest, PolicyRules
from runtime.policy.ledger import DECISIONS_KEPT, Ledger, decision_from
from runtime.policy.models import Campaign, Cap, Capacity, QuietHours
from runtime.policy.stage import PolicyStage
from runtime.subscriptions.outbox import Outbox, Publication
from runtime.subscriptions.pull import SubscriptionReader
from runtime.subscriptions.topics import TopicRouter
from tests.conftest import url_of
from tests.support.outputs import forget_published

SHARDS = 2
T0 = int(datetime(2025, 3, 10, 12, 0, tzinfo=timezone.utc).timestamp() * 1000)


def req(i: str, customer: str = "c1", channel: str = "sms", **kw: Any) -> ContactRequest:
    return ContactRequest(i, customer, kw.pop("kind", "notify"), channel, kw.pop("content", "t"), **kw)


def ledger_ids(client, customer: str) -> list[str]:
    return [orjson.loads(raw)["id"] for raw in client.zrange(keys.ledger(customer), 0, -1)]


def test_the_same_requests_decided_twice_are_counted_once(redis_client) -> None:
    ledger = Ledger(redis_client, horizon_s=3600)
    rules = PolicyRules(caps=(Cap(name="weekly", window="7d", max=5),), arbitrate=True)
    groups = [[req("a1"), req("a2", content="u")], [req("b1", customer="c2")]]
    first = ledger.decide(groups, rules, T0)
    assert {d.id: d.outcome for d in first} == {"a1": "sent", "a2": "lost_arbitration:a1", "b1": "sent"}
    again = ledger.decide(groups, rules, T0 + 60_000)  # a replay, later: the recorded decisions stand
    assert again == first
    assert ledger_ids(redis_client, "c1") == ["a1"] and ledger_ids(redis_client, "c2") == ["b1"]
    # and a third time one at a time, in another order
    assert ledger.decide([[req("b1", customer="c2")], [req("a2", content="u")]], rules, T0 + 120_000) == [
        first[2],
        first[1],
    ]
    assert redis_client.zcard(keys.ledger("c1")) == 1
    assert {d["id"] for d in ledger.recent("c1")} == {"a1", "a2"}


def test_the_ledger_is_trimmed_to_the_longest_window(redis_client) -> None:
    ledger = Ledger(redis_client, horizon_s=3600)
    rules = PolicyRules(
        caps=(Cap(name="weekly", window="7d", max=100), Cap(name="daily", window="1d", max=100)),
        campaigns={"x": Campaign(name="x", dedupe_days=3)},
    )
    assert rules.longest_window_ms == 7 * DAY_MS
    ledger.decide([[req("a")]], rules, T0)
    ledger.decide([[req("b")]], rules, T0 + 3 * DAY_MS)
    ledger.decide([[req("c")]], rules, T0 + 7 * DAY_MS)  # "a" is exactly 7 days old: out of the window
    assert ledger_ids(redis_client, "c1") == ["b", "c"]
    ledger.decide([[req("d")]], rules, T0 + 10 * DAY_MS + 1)
    assert ledger_ids(redis_client, "c1") == ["c", "d"]
    ttl = redis_client.ttl(keys.ledger("c1"))
    assert 7 * 86_400 <= ttl <= 7 * 86_400 + 60
    # a longer de-dup window keeps the ledger longer
    longer = PolicyRules(caps=rules.caps, campaigns={"x": Campaign(name="x", dedupe_days=30)})
    ledger.decide([[req("e")]], longer, T0 + 20 * DAY_MS)
    assert ledger_ids(redis_client, "c1") == ["c", "d", "e"]


def test_opt_out_and_remove(redis_client) -> None:
    ledger = Ledger(redis_client, horizon_s=3600)
    rules = PolicyRules()
    assert ledger.opt_out([("c1", "sms"), ("c2", "*")]) == 2
    decisions = ledger.decide(
        [[req("a")], [req("b", channel="email")], [req("c", customer="c2", channel="push")]], rules, T0
    )
    assert [d.outcome for d in decisions] == ["suppressed:opt_out", "sent", "suppressed:opt_out"]
    ledger.opt_out([("c1", "sms"), ("c2", "*")], remove=True)
    decisions = ledger.decide([[req("a2")], [req("c2", customer="c2", channel="push")]], rules, T0 + 1)
    assert [d.outcome for d in decisions] == ["sent", "sent"]
    # the earlier suppressions are final: replaying them does not send them now
    assert ledger.decide([[req("a")]], rules, T0 + 2)[0].outcome == "suppressed:opt_out"


def test_an_opt_out_between_read_and_commit_is_seen_on_the_retry(redis_client, monkeypatch) -> None:
    ledger = Ledger(redis_client, horizon_s=3600)
    original = Ledger._views
    reads = []

    def read_then_opt_out(self, *args):  # type: ignore[no-untyped-def]
        result = original(self, *args)
        reads.append(1)
        if len(reads) == 1:
            Ledger(redis_client, horizon_s=3600).opt_out([("c1", "*")])  # lands while the batch is decided
        return result

    monkeypatch.setattr(Ledger, "_views", read_then_opt_out)
    [decision] = ledger.decide([[req("a")]], PolicyRules(), T0)
    assert len(reads) == 2 and decision.outcome == "suppressed:opt_out"
    assert redis_client.zcard(keys.ledger("c1")) == 0


def test_the_decision_log_per_customer_is_capped(redis_client) -> None:
    ledger = Ledger(redis_client, horizon_s=3600)
    for n in range(DECISIONS_KEPT + 7):
        ledger.decide([[req(f"r{n:02d}")], [req(f"o{n:02d}", customer="other")]], PolicyRules(), T0 + n)
    assert redis_client.llen(keys.customer_decisions("c1")) == DECISIONS_KEPT
    recent = ledger.recent("c1")
    assert [d["id"] for d in recent] == [f"r{n:02d}" for n in range(DECISIONS_KEPT + 6, 6, -1)]  # newest first
    assert [d["id"] for d in ledger.recent("c1", limit=3)] == ["r26", "r25", "r24"]
    assert 0 < redis_client.ttl(keys.customer_decisions("c1")) <= 3600


def test_a_group_past_the_commit_scripts_chunk_is_recorded_whole_and_in_order(redis_client) -> None:
    """More contacts and decisions for one customer than one ZADD / LPUSH of the commit script
    carries (it writes them a thousand at a time): all recorded, the log newest first."""
    ledger = Ledger(redis_client, horizon_s=3600)
    group = [req(f"r{n:04d}", content=f"t{n}") for n in range(2500)]
    assert {d.outcome for d in ledger.decide([group], PolicyRules(), T0)} == {"sent"}
    assert redis_client.zcard(keys.ledger("c1")) == 2500
    assert [d["id"] for d in ledger.recent("c1")] == [f"r{n:04d}" for n in range(2499, 2499 - DECISIONS_KEPT, -1)]
    assert all(redis_client.get(keys.decision(r.id)) for r in group)


def test_held_set_changes_of_a_batch_are_written_once_in_order() -> None:
    changes = [(b"a", None), (b"b", 5), (b"c", None)]
    assert ledger_module.held_commands(changes) == [["ZREM", keys.HELD, b"a", b"c"], ["ZADD", keys.HELD, 5, b"b"]]
    twice = [(b"a", 5), (b"a", None)]  # the same member changed twice: one by one, the last stands
    assert ledger_module.held_commands(twice) == [["ZADD", keys.HELD, 5, b"a"], ["ZREM", keys.HELD, b"a"]]
    many = ledger_module.held_commands([(bytes([n % 256, n // 256]), None) for n in range(2500)])
    assert [len(c) - 2 for c in many] == [1000, 1000, 500]


def test_held_requests_wait_in_the_held_set_until_due(redis_client) -> None:
    ledger = Ledger(redis_client, horizon_s=3600)
    quiet = QuietHours(start="11:00", end="13:00", timezone="UTC", channels=["sms"])  # T0: 12:00 UTC
    rules = PolicyRules(quiet_hours=quiet, capacity={"email": Capacity(per_minute=1, deadline="1h")})
    release = T0 + 3_600_000
    request = req("q", requested_at=T0, event={"id": "q", "topic": "notifications.sms"})
    [held] = ledger.decide([[request]], rules, T0)
    assert (held.outcome, held.release_at) == ("held:quiet_hours", release)
    assert decision_from(redis_client.get(keys.decision("q"))) == held  # recorded as a hold: decided again later
    assert ledger.due_held(release - 1) == []
    assert ledger.due_held(release) == [request]
    assert ledger.due_held(release)[0].event == request.event  # the event travels with it
    # decided again at the end of the quiet hours: sent, and out of the held set
    assert ledger.decide([[request]], rules, release)[0].outcome == "sent"
    assert redis_client.zcard(keys.HELD) == 0 and ledger.due_held(release + DAY_MS) == []

    # capacity: held for a minute, then dropped past the deadline (counted from requested_at)
    assert ledger.decide([[req("e1", channel="email", requested_at=T0)]], rules, T0)[0].outcome == "sent"
    waiting = req("e2", customer="c2", channel="email", requested_at=T0)
    [d] = ledger.decide([[waiting]], rules, T0 + 1000)
    assert (d.outcome, d.release_at) == ("held:capacity", T0 + 61_000)
    assert redis_client.zscore(keys.HELD, ledger_module.held_member(waiting)) == T0 + 61_000
    [d] = ledger.decide([[waiting]], rules, T0 + 30_000)  # early: held again, the release moves
    assert redis_client.zscore(keys.HELD, ledger_module.held_member(waiting)) == T0 + 90_000
    assert ledger.decide([[waiting]], rules, T0 + 60_000)[0].outcome == "sent"  # e1 has left the minute
    assert redis_client.zcard(keys.HELD) == 0
    stale = req("e3", customer="c3", channel="email", requested_at=T0 - 3_600_000)
    assert ledger.decide([[stale]], rules, T0 + 60_001)[0].outcome == "suppressed:capacity"
    assert redis_client.zcard(keys.HELD) == 0


def test_an_error_in_the_middle_of_a_batch_leaves_the_connection_clean_and_the_retry_exact(redis_client) -> None:
    """The third piece's read fails (a key of the wrong type) while the second piece's commit
    is on its way: the pieces committed before it stand, the error reaches the caller, and
    deciding the batch again on the same ledger (the bad key fixed) decides every request once."""
    ledger = Ledger(redis_client, horizon_s=3600)
    customers = [f"c{i:03d}" for i in range(4 * ledger_module.PIECE)]
    groups = [[req(f"e-{c}", customer=c)] for c in customers]
    bad = ledger_module.pieces(groups, PolicyRules())[2][3][0].customer
    redis_client.set(keys.ledger(bad), "a string where a sorted set belongs")
    with pytest.raises(redis.ResponseError):
        ledger.decide(groups, PolicyRules(), T0)
    committed = [c for c in customers if c != bad and redis_client.zcard(keys.ledger(c))]
    assert committed == customers[: 2 * ledger_module.PIECE]  # the first two pieces
    redis_client.delete(keys.ledger(bad))
    decisions = ledger.decide(groups, PolicyRules(), T0 + 1)
    assert [d.outcome for d in decisions] == ["sent"] * len(customers)
    assert [d.at for d in decisions] == [T0] * len(committed) + [T0 + 1] * (len(customers) - len(committed))
    assert all(redis_client.zcard(keys.ledger(c)) == 1 for c in customers)
    assert redis_client.ping()


def test_only_requests_held_before_are_removed_from_the_held_set(redis_client) -> None:
    """A request never held is decided without a write to the held set (most requests)."""
    ledger = Ledger(redis_client, horizon_s=3600)
    redis_client.config_resetstat()
    groups = [[req(f"n{i}", customer=f"c{i}")] for i in range(3 * ledger_module.PIECE)]
    assert {d.outcome for d in ledger.decide(groups, PolicyRules(), T0)} == {"sent"}
    assert "cmdstat_zrem" not in redis_client.info("commandstats")


def test_a_held_member_left_from_before_is_cleaned_up_by_its_replay(redis_client) -> None:
    """A request in the held set without a recorded hold (held by an earlier version of ESP,
    which recorded none) is decided once when due; it leaves the held set when it comes due
    again, as a replay that decides and counts nothing twice."""
    ledger = Ledger(redis_client, horizon_s=3600)
    request = req("old", requested_at=T0, event={"id": "old", "topic": "notifications.sms"})
    redis_client.zadd(keys.HELD, {ledger_module.held_member(request): T0})
    [due] = ledger.due_held(T0)
    assert [d.outcome for d in ledger.decide([[due]], PolicyRules(), T0)] == ["sent"]
    [again] = ledger.due_held(T0 + 1)
    [replayed] = ledger.decide([[again]], PolicyRules(), T0 + 1)
    assert (replayed.outcome, replayed.at) == ("sent", T0)  # the first decision stands
    assert redis_client.zcard(keys.HELD) == 0 and ledger_ids(redis_client, "c1") == ["old"]
    assert len(ledger.recent("c1")) == 1


def test_capacity_is_respected_within_one_batch(redis_client) -> None:
    ledger = Ledger(redis_client, horizon_s=3600)
    rules = PolicyRules(capacity={"sms": Capacity(per_minute=1)})
    decisions = ledger.decide([[req("a", customer="c1")], [req("b", customer="c2")]], rules, T0)
    assert [d.outcome for d in decisions] == ["sent", "held:capacity"]


# -- a large batch, decided in pipelined pieces ------------------------------------------------


def _rounds(customers: int, seed: int) -> list[list[list[ContactRequest]]]:
    """Batches of competing requests for many customers (several pieces each), with replays of
    earlier requests and campaigns that de-duplicate and arbitrate."""
    import random

    rnd = random.Random(seed)
    made: list[ContactRequest] = []
    rounds = []
    for r in range(4):
        groups = []
        for c in rnd.sample(range(customers), customers * 3 // 4):
            group = [
                req(f"r{r}-c{c}-{k}", customer=f"c{c}", channel=rnd.choice(["sms", "email"]),
                    content=rnd.choice(["t1", "t2"]), campaign=rnd.choice(["promo", "news", None]))
                for k in range(rnd.randint(1, 3))
            ]  # fmt: skip
            if made and rnd.random() < 0.2:
                group.append(rnd.choice([m for m in made if m.customer == f"c{c}"] or [group[0]]))
            groups.append(list({m.id: m for m in group}.values()))
        made += [m for g in groups for m in g]
        rounds.append(groups)
    return rounds


def test_a_batch_in_pieces_is_decided_as_the_memory_ledger_decides_it_whole(redis_client) -> None:
    from runtime.policy.memory import MemoryLedger

    rules = PolicyRules(
        caps=(
            Cap(name="daily", window="1d", max=2),
            Cap(name="sms", scope="channel", channel="sms", window="7d", max=1),
        ),
        campaigns={
            "promo": Campaign(name="promo", priority=80, dedupe_days=7),
            "news": Campaign(name="news", priority=20, dedupe_days=3),
        },
        quiet_hours=QuietHours(start="11:00", end="13:00", timezone="UTC", channels=["email"]),  # T0: 12:00
        arbitrate=True,
    )
    customers = 5 * ledger_module.PIECE + 7
    assert len(ledger_module.pieces(_rounds(customers, 1)[0], rules)) >= 3  # the batch goes in pieces
    for seed in (1, 2):
        redis_client.flushdb()
        ledger, memory = Ledger(redis_client, horizon_s=3600), MemoryLedger()
        for n, groups in enumerate(_rounds(customers, seed)):
            now = T0 + n * 3_600_000
            due = ledger.due_held(now, limit=10_000)  # held in quiet hours, decided again after them
            assert sorted(due, key=lambda r: r.id) == sorted(memory.due_held(now, limit=10_000), key=lambda r: r.id)
            by_customer = {g[0].customer: g for g in groups}
            for request in due:
                if request.id not in {r.id for r in by_customer.setdefault(request.customer, [])}:
                    by_customer[request.customer].append(request)
            groups = list(by_customer.values())
            assert ledger.decide(groups, rules, now) == memory.decide(groups, rules, now)
        assert n > 0 and redis_client.zcard(keys.HELD) == len(memory.due_held(T0 + DAY_MS, limit=10_000)) == 0
        for c in range(customers):  # the same contacts and decision log per customer
            assert ledger.recent(f"c{c}") == memory.recent(f"c{c}")


def test_a_refused_piece_is_decided_again_and_the_others_once(redis_client, monkeypatch) -> None:
    """An opt-out lands between the read and the commit of the third piece of a batch: that
    piece's commit is refused and it is decided again (the opted-out customer suppressed);
    every other piece's customers are committed exactly once."""
    ledger = Ledger(redis_client, horizon_s=3600)
    customers = [f"c{i:03d}" for i in range(4 * ledger_module.PIECE)]
    groups = [[req(f"a-{c}", customer=c)] for c in customers]
    third = ledger_module.pieces(groups, PolicyRules())[2][0][0].customer  # its first customer
    target = ledger_module.pieces(groups, PolicyRules())[2][5][0].customer
    original, seen = Ledger._views, []

    def read_then_opt_out(self, piece, *args):  # type: ignore[no-untyped-def]
        seen.append(piece[0][0].customer)
        if seen.count(third) == 1 and piece[0][0].customer == third:
            Ledger(redis_client, horizon_s=3600).opt_out([(target, "*")])
        return original(self, piece, *args)

    monkeypatch.setattr(Ledger, "_views", read_then_opt_out)
    decisions = ledger.decide(groups, PolicyRules(), T0)
    assert [d.id for d in decisions] == [g[0].id for g in groups]  # in the batch's order
    assert {d.customer: d.outcome for d in decisions if d.outcome != "sent"} == {target: "suppressed:opt_out"}
    assert seen.count(third) == 2 and len(seen) == 5  # four pieces, the third twice
    versions = dict(zip(customers, redis_client.mget([keys.ledger_version(c) for c in customers]), strict=True))
    assert {c: int(v) for c, v in versions.items() if int(v) != 1} == {target: 2}  # its opt-out, then its commit
    assert sum(redis_client.zcard(keys.ledger(c)) for c in customers) == len(customers) - 1


# -- the stage: a hold survives a restart ----------------------------------------------------


def _notify(i: str, customer: str) -> Publication:
    event = {
        "specversion": "1.0",
        "id": i,
        "source": "esp/rule/r",
        "type": "notifications.sms",
        "subject": customer,
        "data": {"rule": "r", "notify": {"channel": "sms", "template": "offer", "campaign": "promo"}},
    }
    return Publication(i, "notifications.sms", event)


def _pull(client, name: str) -> list[dict]:
    reader = SubscriptionReader(client, visibility_timeout_ms=600_000)
    events = reader.pull(name, max_events=1000, wait_ms=0)["events"]
    if events:
        reader.ack(name, ack_ids=[e["ack_id"] for e in events])
    return events


def _run_until(stage: PolicyStage, done, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        stage.step(block_ms=20)
        if done():
            return
    raise AssertionError("timed out")


def test_a_request_held_for_quiet_hours_is_sent_once_by_a_new_stage_after_they_end(redis_client) -> None:
    now = datetime.now(timezone.utc)
    minute = now.hour * 60 + now.minute
    start, end = (minute - 60) % 1440, (minute + 60) % 1440  # quiet now, for another hour or so (UTC)
    quiet = {"start": f"{start // 60:02d}:{start % 60:02d}", "end": f"{end // 60:02d}:{end % 60:02d}"}
    store = ConfigStore(redis_client)
    store.put({"kind": "subscription", "name": "out", "topics": ["notifications.*"]})
    store.put({"kind": "subscription", "name": "dec", "topics": ["decisions"]})
    store.put({"kind": "campaign", "name": "promo"})
    store.put({"kind": "policy", "name": "p", "arbitration_window": "0s", "quiet_hours": {**quiet, "action": "hold"}})
    _, docs = store.snapshot()
    Outbox(redis_client, horizon_s=3600, maxlen=10_000).publish(
        [_notify("n1", "c1")], TopicRouter.from_docs(docs, policy_shards=SHARDS)
    )

    def stage(offset_s: float) -> PolicyStage:
        return PolicyStage(
            url_of(redis_client),
            list(range(SHARDS)),
            total_shards=SHARDS,
            horizon_s=3600,
            maxlen=10_000,
            clock=lambda: time.time() + offset_s,
        )

    first = stage(0)
    decisions: list[dict] = []

    def decided(n: int):  # type: ignore[no-untyped-def]
        return lambda: bool(decisions.extend(_pull(redis_client, "dec"))) or len(decisions) >= n

    _run_until(first, decided(1))
    [held] = decisions
    assert held["data"]["decision"] == "held:quiet_hours"
    ends = now.replace(second=0, microsecond=0).timestamp() * 1000 + 60 * 60_000
    release = datetime.fromisoformat(held["data"]["release_at"].replace("Z", "+00:00")).timestamp() * 1000
    assert release == ends
    assert redis_client.zcard(keys.HELD) == 1 and _pull(redis_client, "out") == []
    assert all(redis_client.xpending(keys.policy_requests(s), keys.POLICY_GROUP)["pending"] == 0 for s in range(SHARDS))
    first.step(block_ms=10)  # still quiet: nothing due
    assert _pull(redis_client, "dec") == [] and redis_client.zcard(keys.HELD) == 1
    del first  # the actor is gone; a new one starts two hours later

    second = stage(2 * 3600 + 60)
    _run_until(second, decided(2))
    assert [d["data"]["decision"] for d in decisions] == ["held:quiet_hours", "sent"]
    sent = _pull(redis_client, "out")
    assert [e["id"] for e in sent] == ["n1"]
    assert redis_client.zcard(keys.HELD) == 0 and ledger_ids(redis_client, "c1") == ["n1"]
    # yet another restart, with the request replayed from the stream: not sent again
    forget_published(redis_client, "n1", "c1")
    Outbox(redis_client, horizon_s=3600, maxlen=10_000).publish(
        [_notify("n1", "c1")], TopicRouter.from_docs(docs, policy_shards=SHARDS)
    )
    third = stage(2 * 3600 + 120)
    deadline = time.monotonic() + 0.5
    while time.monotonic() < deadline:
        third.step(block_ms=20)
    assert third.totals == {"sent": 1}  # the recorded decision, returned again
    assert all(redis_client.xpending(keys.policy_requests(s), keys.POLICY_GROUP)["pending"] == 0 for s in range(SHARDS))
    assert _pull(redis_client, "out") == [] and _pull(redis_client, "dec") == []  # publication de-duplicated
    assert ledger_ids(redis_client, "c1") == ["n1"]
