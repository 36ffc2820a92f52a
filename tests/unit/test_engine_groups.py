"""Correlation rules (``all`` / ``any`` within a window) against a brute-force oracle.

Semantics (runtime/rules/engine.py): per customer, an ``all`` fires at the first event after
which every condition has occurred since the rule last fired (or started) and the latest
occurrence of each lies within a span shorter than ``within``; the output lists those latest
occurrences in condition order. An ``any`` condition occurs when one of its conditions does.
During a cooldown the customer's events are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.events.envelope import Event
from runtime.rules import PartitionEngine, compile_rule

TYPES = ["a", "b", "c"]


@dataclass(frozen=True)
class Leaf:
    kind: str
    min_v: int

    def doc(self) -> dict:
        return {"event": self.kind, "where": f"data.v >= {self.min_v}"}

    def matches(self, e: Event) -> bool:
        return e.type == self.kind and e.data["v"] >= self.min_v


def rule_doc(children: list[list[Leaf]], within: int, cooldown: int) -> dict:
    conditions = [c[0].doc() if len(c) == 1 else {"any": [leaf.doc() for leaf in c]} for c in children]
    when = {"all": conditions, "within": f"{within}ms"}
    return {"name": "g", "when": when, "then": [{"emit": "g"}], "cooldown": f"{cooldown}ms"}


def oracle(children: list[list[Leaf]], within: int, cooldown: int, events: list[Event]) -> list[tuple[str, list[str]]]:
    fired = []
    history: dict[str, list[Event]] = {}
    cooldown_until: dict[str, int] = {}
    for e in events:
        if e.time < cooldown_until.get(e.customer, -(10**18)):
            continue
        history.setdefault(e.customer, []).append(e)
        since = history[e.customer]
        latest = []
        for child in children:
            hits = [x for x in since if any(leaf.matches(x) for leaf in child)]
            if not hits:
                break
            latest.append(hits[-1])  # the most recent occurrence
        else:
            times = [x.time for x in latest]
            if max(times) - min(times) < within:
                fired.append((e.customer, list(dict.fromkeys(x.id for x in latest))))
                history[e.customer] = []
                if cooldown:
                    cooldown_until[e.customer] = e.time + cooldown
    return fired


leaves = st.builds(Leaf, st.sampled_from(TYPES), st.integers(0, 3))
children_st = st.lists(st.lists(leaves, min_size=1, max_size=2), min_size=1, max_size=3)


@st.composite
def streams(draw) -> list[Event]:
    n = draw(st.integers(1, 60))
    events, clock = [], 0
    for i in range(n):
        clock += draw(st.sampled_from([0, 1, 5, 10, 40]))
        customer = draw(st.sampled_from(["x", "y"]))
        kind = draw(st.sampled_from(TYPES))
        events.append(Event(f"e{i}", kind, clock, customer, customer, "s", {"v": draw(st.integers(0, 3))}, 0))
    return events


def run(engine: PartitionEngine, events: list[Event]) -> list[tuple[str, list[str]]]:
    return [(o.event["subject"], [m["id"] for m in o.event["data"]["events"]]) for o in engine.on_events(events)]


@settings(max_examples=300, deadline=None)
@given(children_st, st.integers(1, 60), st.sampled_from([0, 0, 20]), streams())
def test_all_of_any_matches_the_oracle(children, within, cooldown, events):
    engine = PartitionEngine([compile_rule(rule_doc(children, within, cooldown))])
    assert run(engine, events) == oracle(children, within, cooldown, events)


@settings(max_examples=150, deadline=None)
@given(children_st, st.integers(1, 60), streams(), st.integers(0, 60))
def test_a_restart_from_a_snapshot_changes_nothing(children, within, events, split):
    import msgspec

    rules = [compile_rule(rule_doc(children, within, 0))]
    whole = run(PartitionEngine(rules), events)
    first = PartitionEngine(rules)
    before = run(first, events[:split])
    snapshot = msgspec.msgpack.decode(msgspec.msgpack.encode(first.snapshot()))
    after = run(PartitionEngine(rules, resume_state=snapshot), events[split:])
    assert before + after == whole


def ev(i: int, kind: str, time: int, **data) -> Event:
    return Event(f"e{i}", kind, time, "c", "c", "s", data, 0)


def test_wealth_lead_shape_web_or_app_then_hotline_within_30_minutes():
    """(web >= 120 s OR app >= 120 s) AND a service call, within 30 min.

    time (min)  0     10      25        70      80
    web 200s    x
    call              x  -> fire (web@0, call@10)
    app 130s                  x
    call                                x  (55 min after the app session: too far)
    app 300s                                    x -> fire (call@70, app@80)
    """
    rule = compile_rule(
        {
            "name": "wealth",
            "when": {
                "all": [
                    {
                        "any": [
                            {"event": "web.session", "where": "data.duration_s >= 120"},
                            {"event": "app.session", "where": "data.duration_s >= 120"},
                        ]
                    },
                    {"event": "call.inbound", "where": "data.line == 'service'"},
                ],
                "within": "30m",
            },
            "then": [{"emit": "business.wealth_lead"}],
        }
    )
    m = 60_000
    engine = PartitionEngine([rule])
    events = [
        ev(1, "web.session", 0, duration_s=200),
        ev(2, "call.inbound", 10 * m, line="service"),
        ev(3, "app.session", 25 * m, duration_s=130),
        ev(4, "call.inbound", 70 * m, line="service"),
        ev(5, "app.session", 80 * m, duration_s=300),
    ]
    assert run(engine, events) == [("c", ["e1", "e2"]), ("c", ["e5", "e4"])]


def test_counts_inside_an_all():
    """two failed logins within 1 min AND a transfer, within 10 min."""
    rule = compile_rule(
        {
            "name": "takeover",
            "when": {
                "all": [
                    {"event": "login", "where": "data.ok == false", "count": 2, "within": "1m"},
                    {"event": "transfer"},
                ],
                "within": "10m",
            },
            "then": [{"emit": "risk"}],
        }
    )
    engine = PartitionEngine([rule])
    events = [ev(1, "login", 0, ok=False), ev(2, "transfer", 1000), ev(3, "login", 2000, ok=False)]
    assert run(engine, events) == [("c", ["e1", "e3", "e2"])]
    assert engine.customers == 0  # the fire restarted everything


def test_a_rule_only_counts_events_in_its_validity_period():
    rule = compile_rule(
        {
            "name": "campaign",
            "valid_from": "2026-01-01T00:00:00Z",
            "valid_until": 1_767_225_600_000 + 1000,
            "when": {"event": "t"},
            "then": [{"emit": "x"}],
        }
    )
    t = 1_767_225_600_000  # 2026-01-01T00:00:00Z
    engine = PartitionEngine([rule])
    events = [Event(f"e{i}", "t", t + d, "c", "c", "s", {}, 0) for i, d in enumerate([-1, 0, 999, 1000])]
    assert [o.event["data"]["events"][0]["id"] for o in engine.on_events(events)] == ["e1", "e2"]
