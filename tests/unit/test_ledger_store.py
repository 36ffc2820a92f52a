"""The contact ledger's contract, checked on both implementations: Redis (on a real
redis-server) and in memory. Redis-only properties (key layout, expiry, compare-and-set under
concurrent writers) are in tests/integration/test_contact_ledger.py and test_contact_concurrency.py."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from runtime.events.memory import MemoryProfileStore
from runtime.events.profiles import ProfileStorage, ProfileStore
from runtime.policy.decide import DAY_MS, ContactRequest, PolicyRules
from runtime.policy.ledger import DECISIONS_KEPT, PIECE, Ledger, LedgerStorage, pieces
from runtime.policy.memory import MemoryLedger
from runtime.policy.models import Campaign, Cap, Capacity, QuietHours

T0 = int(datetime(2025, 3, 10, 12, 0, tzinfo=timezone.utc).timestamp() * 1000)


@dataclass
class Stores:
    ledger: LedgerStorage
    profiles: ProfileStorage


@pytest.fixture(params=["memory", "redis"])
def stores(request: pytest.FixtureRequest) -> Stores:
    if request.param == "memory":
        profiles = MemoryProfileStore()
        return Stores(MemoryLedger(profiles=profiles), profiles)
    client = request.getfixturevalue("redis_client")
    return Stores(Ledger(client, horizon_s=3600), ProfileStore(client))


def req(i: str, customer: str = "c1", channel: str = "sms", **kw: Any) -> ContactRequest:
    return ContactRequest(i, customer, kw.pop("kind", "notify"), channel, kw.pop("content", "t"), **kw)


def outcomes(ledger: LedgerStorage, groups: list[list[ContactRequest]], rules: PolicyRules, now: int) -> list[str]:
    return [d.outcome for d in ledger.decide(groups, rules, now)]


def test_replayed_requests_keep_their_first_decision_and_count_once(stores: Stores) -> None:
    ledger = stores.ledger
    rules = PolicyRules(caps=(Cap(name="weekly", window="7d", max=2),), arbitrate=True)
    groups = [[req("a1"), req("a2", content="u")], [req("b1", customer="c2")]]
    first = ledger.decide(groups, rules, T0)
    assert {d.id: d.outcome for d in first} == {"a1": "sent", "a2": "lost_arbitration:a1", "b1": "sent"}
    assert ledger.decide(groups, rules, T0 + 60_000) == first  # a replay, later: the decisions stand
    assert ledger.decide([[req("b1", customer="c2")], [req("a2", content="u")]], rules, T0 + 1) == [first[2], first[1]]
    assert outcomes(ledger, [[req("a3")]], rules, T0 + 2) == ["sent"]  # a1 counted once: 2 of 2 now
    assert outcomes(ledger, [[req("a4")]], rules, T0 + 3) == ["suppressed:cap:weekly"]
    assert {d["id"] for d in ledger.recent("c1")} == {"a1", "a2", "a3", "a4"}


def test_caps_count_the_window_and_the_ledger_is_trimmed_to_the_longest(stores: Stores) -> None:
    ledger = stores.ledger
    weekly = PolicyRules(caps=(Cap(name="weekly", window="7d", max=1),))
    assert outcomes(ledger, [[req("a")]], weekly, T0) == ["sent"]
    assert outcomes(ledger, [[req("b")]], weekly, T0 + 7 * DAY_MS - 1) == ["suppressed:cap:weekly"]
    assert outcomes(ledger, [[req("c")]], weekly, T0 + 7 * DAY_MS) == ["sent"]  # "a" is exactly 7 days old
    # a 30-day de-dup sees a contact a 7-day policy has not trimmed yet, and not one it has
    month = PolicyRules(campaigns={"x": Campaign(name="x", dedupe_days=30)})
    for customer in ("kept", "trimmed"):
        assert outcomes(ledger, [[req(f"{customer}-x", customer, campaign="x")]], month, T0) == ["sent"]
    assert outcomes(ledger, [[req("later", "trimmed")]], weekly, T0 + 8 * DAY_MS) == ["sent"]
    again = [[req("kept-x2", "kept", campaign="x")], [req("trimmed-x2", "trimmed", campaign="x")]]
    assert outcomes(ledger, again, month, T0 + 9 * DAY_MS) == ["suppressed:dedupe", "sent"]


def test_opt_outs_suppress_until_removed_and_suppressions_are_final(stores: Stores) -> None:
    ledger, rules = stores.ledger, PolicyRules()
    assert ledger.opt_out([("c1", "sms"), ("c2", "*")]) == 2
    groups = [[req("a")], [req("b", channel="email")], [req("c", customer="c2", channel="push")]]
    assert outcomes(ledger, groups, rules, T0) == ["suppressed:opt_out", "sent", "suppressed:opt_out"]
    assert ledger.opt_out([("c1", "sms"), ("c2", "*")], remove=True) == 2
    assert outcomes(ledger, [[req("a2")], [req("c2", customer="c2", channel="push")]], rules, T0 + 1) == [
        "sent",
        "sent",
    ]
    assert outcomes(ledger, [[req("a")]], rules, T0 + 2) == ["suppressed:opt_out"]


def test_the_decision_log_per_customer_is_newest_first_and_capped(stores: Stores) -> None:
    for n in range(DECISIONS_KEPT + 7):
        stores.ledger.decide([[req(f"r{n:02d}")], [req(f"o{n:02d}", customer="other")]], PolicyRules(), T0 + n)
    recent = stores.ledger.recent("c1")
    assert [d["id"] for d in recent] == [f"r{n:02d}" for n in range(DECISIONS_KEPT + 6, 6, -1)]
    assert recent[0] == {"id": "r26", "customer": "c1", "outcome": "sent", "at": T0 + 26, "release_at": None}
    assert [d["id"] for d in stores.ledger.recent("c1", limit=3)] == ["r26", "r25", "r24"]
    assert stores.ledger.recent("nobody") == []


def test_held_requests_wait_until_due_then_are_decided_again(stores: Stores) -> None:
    ledger = stores.ledger
    quiet = QuietHours(start="11:00", end="13:00", timezone="UTC", channels=["sms"])  # T0: 12:00 UTC
    rules = PolicyRules(quiet_hours=quiet, capacity={"email": Capacity(per_minute=1, deadline="1h")})
    release = T0 + 3_600_000
    request = req("q", requested_at=T0, event={"id": "q", "topic": "notifications.sms"})
    [held] = ledger.decide([[request]], rules, T0)
    assert (held.outcome, held.release_at) == ("held:quiet_hours", release)
    assert ledger.due_held(release - 1) == [] and ledger.due_held(release) == [request]
    assert ledger.due_held(release)[0].event == request.event  # the event travels with it
    assert outcomes(ledger, [[request]], rules, release) == ["sent"]
    assert ledger.due_held(release + DAY_MS) == []
    # capacity: held a minute at a time, then sent; or dropped past the deadline
    assert outcomes(ledger, [[req("e1", channel="email", requested_at=T0)]], rules, T0) == ["sent"]
    waiting = req("e2", customer="c2", channel="email", requested_at=T0)
    assert [(d.outcome, d.release_at) for d in ledger.decide([[waiting]], rules, T0 + 1000)] == [
        ("held:capacity", T0 + 61_000)
    ]
    ledger.decide([[waiting]], rules, T0 + 30_000)  # early: held again, the release moves
    assert ledger.due_held(T0 + 61_000) == [] and ledger.due_held(T0 + 90_000) == [waiting]
    assert outcomes(ledger, [[waiting]], rules, T0 + 60_000) == ["sent"]  # e1 has left the minute
    stale = req("e3", customer="c3", channel="email", requested_at=T0 - 3_600_000)
    assert outcomes(ledger, [[stale]], rules, T0 + 60_001) == ["suppressed:capacity"]
    assert ledger.due_held(T0 + DAY_MS) == []


def test_capacity_is_shared_by_the_groups_of_one_batch(stores: Stores) -> None:
    rules = PolicyRules(capacity={"sms": Capacity(per_minute=1)})
    assert outcomes(stores.ledger, [[req("a")], [req("b", customer="c2")]], rules, T0) == ["sent", "held:capacity"]


def test_profiles_decide_caps_by_tier_and_arbitration_by_score(stores: Stores) -> None:
    stores.profiles.put_many({"gold": {"tier": "gold", "scores": {"p2": 90}}, "plain": {"scores": {"p1": 90}}})
    cap = Cap(name="daily", window="1d", max=1, max_by_tier={"gold": 2}, tier_attribute="tier")
    campaigns = {"one": Campaign(name="one", product="p1"), "two": Campaign(name="two", product="p2")}
    rules = PolicyRules(caps=(cap,), campaigns=campaigns, arbitrate=True)
    first = [
        [req(f"{c}-1", c, campaign="one"), req(f"{c}-2", c, campaign="two", content="u")] for c in ("gold", "plain")
    ]
    assert {d.id: d.outcome for d in stores.ledger.decide(first, rules, T0)} == {
        "gold-2": "sent",
        "gold-1": "lost_arbitration:gold-2",
        "plain-1": "sent",
        "plain-2": "lost_arbitration:plain-1",
    }
    later = [[req("gold-3", "gold", content="v")], [req("plain-3", "plain", content="v")]]
    assert outcomes(stores.ledger, later, rules, T0 + 1) == ["sent", "suppressed:cap:daily"]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 300), st.integers(1, 3)), max_size=400),
    st.booleans(),
)
@example(drawn=[(c, 1) for c in range(40)], capacity=True)  # more customers than a piece, kept whole
@example(drawn=[(c, 1) for c in range(40)], capacity=False)  # the same, split
def test_pieces_keep_every_group_once_and_each_customer_in_one_piece(
    drawn: list[tuple[int, int]], capacity: bool
) -> None:
    groups = [[req(f"{n}-{k}", customer=f"c{c}") for k in range(size)] for n, (c, size) in enumerate(drawn)]
    rules = PolicyRules(capacity={"sms": Capacity(per_minute=5)} if capacity else {})
    split = pieces(groups, rules)
    assert sorted(id(g) for p in split for g in p) == sorted(id(g) for g in groups)  # each group once
    for piece in split:  # in the batch's order within a piece
        assert [groups.index(g) for g in piece] == sorted(groups.index(g) for g in piece)
    owners = [{g[0].customer for g in p} for p in split]
    assert all(not a & b for i, a in enumerate(owners) for b in owners[i + 1 :])
    if capacity or len(groups) <= PIECE:
        assert split == [groups]  # a batch with a capacity channel stays whole, however many its customers
    else:
        assert all(len(o) <= PIECE for o in owners)
