"""Absence (A not followed by B within T), fired by timers, against a simple model of the rule.

Driver: before each event the engine's timers run up to that event's time; after the stream
they run to the end. Semantics: per customer, an 'after' event starts a wait when none is
pending (and no cooldown runs); a 'missing' event with start <= time < deadline cancels it; a
wait whose deadline passes fires the rule at the deadline with the 'after' event.
"""

from __future__ import annotations

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.events.envelope import Event
from runtime.rules import PartitionEngine, compile_rule


def rule(within: int, cooldown: int = 0) -> dict:
    return {
        "name": "abs",
        "when": {
            "absence": {
                "after": {"event": "order", "where": "data.v >= 1"},
                "missing": {"event": "pay"},
                "within": f"{within}ms",
            }
        },
        "then": [{"emit": "unpaid"}],
        "cooldown": f"{cooldown}ms",
    }


def model(within, cooldown, events):
    fired = []
    pending: dict[str, tuple[int, str]] = {}
    until: dict[str, int] = {}

    def due(now):
        for customer, (deadline, eid) in sorted(pending.items(), key=lambda kv: (kv[1][0], kv[0])):
            if deadline <= now:
                fired.append((customer, deadline, eid))
                del pending[customer]
                if cooldown:
                    until[customer] = deadline + cooldown

    for e in events:
        due(e.time)
        c = e.customer
        if e.time < until.get(c, -(10**18)):
            continue
        if c in pending and e.type == "pay" and pending[c][0] - within <= e.time < pending[c][0]:
            del pending[c]
        if c not in pending and e.type == "order" and e.data["v"] >= 1:
            pending[c] = (e.time + within, e.id)
    due(10**15)
    return fired


def drive(engine, events, *, split=None):
    out = []
    for i, e in enumerate(events):
        if split is not None and i == split:
            snapshot = msgspec.msgpack.decode(msgspec.msgpack.encode(engine.snapshot()))
            engine = PartitionEngine(engine_rules, resume_state=snapshot)
        out += engine.on_timer(e.time)
        out += engine.on_events([e])
    out += engine.on_timer(10**15)
    return [(o.event["subject"], _ms(o.event["time"]), o.event["data"]["events"][0]["id"]) for o in out]


def _ms(text: str) -> int:
    from runtime.events.envelope import parse_time_ms

    return parse_time_ms(text)


engine_rules: list = []


@st.composite
def streams(draw):
    n = draw(st.integers(1, 40))
    events, clock = [], 1_700_000_000_000
    for i in range(n):
        clock += draw(st.sampled_from([0, 1, 5, 20]))
        kind = draw(st.sampled_from(["order", "pay", "other"]))
        events.append(
            Event(f"e{i}", kind, clock, draw(st.sampled_from("xy")), "", "s", {"v": draw(st.integers(0, 1))}, 0)
        )
    for e in events:
        e.customer = e.subject
    return events


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([1, 5, 20, 50]), st.sampled_from([0, 30]), streams(), st.integers(0, 40))
def test_absence_matches_the_model_with_and_without_a_restart(within, cooldown, events, split):
    global engine_rules
    engine_rules = [compile_rule(rule(within, cooldown))]
    expected = model(within, cooldown, events)
    assert drive(PartitionEngine(engine_rules), events) == expected
    assert drive(PartitionEngine(engine_rules), events, split=split) == expected


def test_unpaid_order_fires_at_the_deadline_not_at_the_next_event():
    """order at 0, nothing else: the timer alone fires at 0 + 30 min."""
    engine = PartitionEngine([compile_rule(rule(30 * 60_000))])
    t0 = 1_790_000_000_000
    assert engine.on_events([Event("o1", "order", t0, "c", "c", "s", {"v": 1}, 0)]) == []
    assert engine.next_timer_at() == t0 + 30 * 60_000
    assert engine.on_timer(t0 + 30 * 60_000 - 1) == []
    fired = engine.on_timer(t0 + 30 * 60_000)
    assert [(o.topic, o.event["data"]["events"][0]["id"]) for o in fired] == [("business.unpaid", "o1")]
    assert engine.next_timer_at() is None
    # the fired wait is remembered (a late payment inside it would be a retraction) until it expires
    engine.expire(t0 + 30 * 60_000)
    assert engine.customers == 0
