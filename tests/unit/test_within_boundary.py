"""The one boundary convention (issue 14): "within T" means 0 <= delta < T, for every operator.

An event T - 1 ms after its reference is inside (it fires, cancels or counts); one exactly T
after it is outside. Each case below is a tiny timeline in ms offsets from an epoch-aligned base
(so tumbling buckets start at the base), fed in time order; then every timer runs. A case
names the events expected in the outputs (by id, in output order).

Spec (/tmp/esp14/spec.md): within T is 0 <= delta < T for count, aggregate, all, sequence,
absence and the composed conditions; tumbling buckets are [k T, (k + 1) T); a cooldown ends at
``until`` (an event at until - 1 is silent, one at until fires); ``valid_until`` is exclusive;
dwell and duration fire once the stay / state has lasted the full time (leaving or stopping at
entry + dwell - 1 / start + gte - 1 cancels it; at entry + dwell / start + gte it fires). A
composed condition occurs at: enter -> the entry event's time; dwell -> entry + dwell; absence
-> after + within; duration -> start + gte.
"""

from __future__ import annotations

from typing import Any

import pytest

from runtime.events.envelope import Event, parse_time_ms
from runtime.rules import PartitionEngine, compile_rule

T = 1000  # every "within" below
BASE = 1_790_000_000_000  # a multiple of T: tumbling buckets start here
END = BASE + 10**9

ZONE = {"cells": ["IN"]}


def ev(i: str, kind: str, at: int, **data: Any) -> Event:
    """Event ``i`` of type ``kind`` at BASE + ``at`` ms. ``loc`` events carry a cell."""
    return Event(i, kind, BASE + at, "c", "c", "s", data, 0)


def out(i: str, at: int) -> Event:
    return ev(i, "loc", at, cell="OUT")


def inside(i: str, at: int) -> Event:
    return ev(i, "loc", at, cell="IN")


def rule(when: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"name": "r", "when": when, "then": [{"emit": "r"}], **extra}


def run(doc: dict[str, Any], events: list[Event]) -> list[tuple[int, list[str]]]:
    """(output time - BASE, ids of the output's events) per output; every timer runs at the end."""
    engine = PartitionEngine([compile_rule(doc)])
    outputs = engine.on_events(sorted(events, key=lambda e: e.time)) + engine.on_timer(END)
    return [(parse_time_ms(o.event["time"]) - BASE, [m["id"] for m in o.event["data"]["events"]]) for o in outputs]


def fired_ids(doc: dict[str, Any], events: list[Event]) -> list[list[str]]:
    return [ids for _, ids in run(doc, events)]


A_THEN_B = {"sequence": [{"event": "a"}, {"event": "b"}], "within": f"{T}ms"}
A_NOT_C_B = {"sequence": [{"event": "a"}, {"not": {"event": "c"}}, {"event": "b"}], "within": f"{T}ms"}
ABSENCE = {"absence": {"after": {"event": "a"}, "missing": {"event": "b"}, "within": f"{T}ms"}}
DURATION = {"duration": {"start": {"event": "s"}, "stop": {"event": "p"}, "gte": f"{T}ms"}}
ENTER = {"geofence": {"event": "loc", "zone": ZONE, "enter": True}}
DWELL = {"geofence": {"event": "loc", "zone": ZONE, "dwell": f"{T}ms"}}

# (id, rule, events, expected outputs' event ids)
CASES: list[tuple[str, dict[str, Any], list[Event], list[list[str]]]] = []


def case(name: str, when_or_rule: dict[str, Any], events: list[Event], expected: list[list[str]]) -> None:
    doc = when_or_rule if "when" in when_or_rule else rule(when_or_rule)
    CASES.append((name, doc, events, expected))


# count (sliding): the first event and one at +0 / +T-1 count together; at +T the first has left
COUNT = {"event": "a", "count": 2, "within": f"{T}ms"}
case("count delta 0 inside", COUNT, [ev("a1", "a", 0), ev("a2", "a", 0)], [["a1", "a2"]])
case("count T-1 inside", COUNT, [ev("a1", "a", 0), ev("a2", "a", T - 1)], [["a1", "a2"]])
case("count T outside", COUNT, [ev("a1", "a", 0), ev("a2", "a", T)], [])

# aggregate (sliding sum)
SUM = {"event": "a", "sum": {"of": "data.v", "gte": 10}, "within": f"{T}ms"}
case("sum T-1 inside", SUM, [ev("a1", "a", 0, v=5), ev("a2", "a", T - 1, v=5)], [["a1", "a2"]])
case("sum T outside", SUM, [ev("a1", "a", 0, v=5), ev("a2", "a", T, v=5)], [])
MAX_DISTINCT = {"event": "a", "distinct": {"of": "data.v", "gte": 2}, "within": f"{T}ms"}
case("distinct T-1 inside", MAX_DISTINCT, [ev("a1", "a", 0, v=1), ev("a2", "a", T - 1, v=2)], [["a1", "a2"]])
case("distinct T outside", MAX_DISTINCT, [ev("a1", "a", 0, v=1), ev("a2", "a", T, v=2)], [])

# tumbling buckets [k T, (k + 1) T)
TUMBLING = {"event": "a", "count": 2, "within": f"{T}ms", "window": "tumbling"}
case("tumbling first and last ms of a bucket", TUMBLING, [ev("a1", "a", 0), ev("a2", "a", T - 1)], [["a1", "a2"]])
case("tumbling last ms and next bucket", TUMBLING, [ev("a1", "a", T - 1), ev("a2", "a", T)], [])
case("tumbling across the bucket start", TUMBLING, [ev("a1", "a", -1), ev("a2", "a", 0)], [])

# all
ALL = {"all": [{"event": "a"}, {"event": "b"}], "within": f"{T}ms"}
case("all delta 0 inside", ALL, [ev("a1", "a", 0), ev("b1", "b", 0)], [["a1", "b1"]])
case("all T-1 inside", ALL, [ev("a1", "a", 0), ev("b1", "b", T - 1)], [["a1", "b1"]])
case("all T outside", ALL, [ev("a1", "a", 0), ev("b1", "b", T)], [])
case("all T-1 inside, b first", ALL, [ev("b1", "b", 0), ev("a1", "a", T - 1)], [["a1", "b1"]])
case("all T outside, b first", ALL, [ev("b1", "b", 0), ev("a1", "a", T)], [])

# sequence
case("sequence delta 0 inside", A_THEN_B, [ev("a1", "a", 0), ev("b1", "b", 0)], [["a1", "b1"]])
case("sequence T-1 inside", A_THEN_B, [ev("a1", "a", 0), ev("b1", "b", T - 1)], [["a1", "b1"]])
case("sequence T outside", A_THEN_B, [ev("a1", "a", 0), ev("b1", "b", T)], [])
THREE = {"sequence": [{"event": "a"}, {"event": "b"}, {"event": "c"}], "within": f"{T}ms"}
case(
    "3-step sequence, last T-1 after the first",
    THREE,
    [ev("a1", "a", 0), ev("b1", "b", 1), ev("c1", "c", T - 1)],
    [["a1", "b1", "c1"]],
)
case("3-step sequence, last T after the first", THREE, [ev("a1", "a", 0), ev("b1", "b", 1), ev("c1", "c", T)], [])

# sequence with a 'not' step: the same within boundary, and the guard counts inside the gap
case(
    "sequence+not T-1 inside", A_NOT_C_B, [ev("a1", "a", 0), ev("b1", "b", T - 1), ev("c1", "c", T + 5)], [["a1", "b1"]]
)
case("sequence+not T outside", A_NOT_C_B, [ev("a1", "a", 0), ev("b1", "b", T)], [])
case(
    "sequence+not guard inside the gap cancels",
    A_NOT_C_B,
    [ev("a1", "a", 0), ev("c1", "c", 1), ev("b1", "b", T - 1)],
    [],
)
STRICT = {"sequence": [{"event": "a"}, {"event": "b"}], "within": f"{T}ms", "strict": True}
case("strict sequence T-1 inside", STRICT, [ev("a1", "a", 0), ev("b1", "b", T - 1)], [["a1", "b1"]])
case("strict sequence T outside", STRICT, [ev("a1", "a", 0), ev("b1", "b", T)], [])

# absence: a 'missing' at after + T - 1 cancels the wait; one at after + T does not
case("absence: missing at T-1 cancels", ABSENCE, [ev("a1", "a", 0), ev("b1", "b", T - 1)], [])
case("absence: missing at T does not cancel", ABSENCE, [ev("a1", "a", 0), ev("b1", "b", T)], [["a1"]])
case("absence: missing at delta 0 cancels", ABSENCE, [ev("a1", "a", 0), ev("b1", "b", 0)], [])
case("absence: nothing missing fires", ABSENCE, [ev("a1", "a", 0)], [["a1"]])

# cooldown: fired at 0 with cooldown T -> silent until T; an event at T - 1 is silent, at T fires
COOLDOWN = rule({"event": "a"}, cooldown=f"{T}ms")
case(
    "cooldown: until-1 silent, until fires",
    COOLDOWN,
    [ev("a1", "a", 0), ev("a2", "a", T - 1), ev("a3", "a", T)],
    [["a1"], ["a3"]],
)
GROUP_COOLDOWN = rule(A_THEN_B, cooldown=f"{T}ms")
case(
    "cooldown of a sequence: until-1 silent, until fires",
    GROUP_COOLDOWN,
    [
        ev("a1", "a", 0),
        ev("b1", "b", 0),
        ev("a2", "a", T - 1),
        ev("b2", "b", T - 1),
        ev("a3", "a", T),
        ev("b3", "b", T),
    ],
    [["a1", "b1"], ["a3", "b3"]],
)

# validity: [valid_from, valid_until)
VALIDITY = rule({"event": "a"}, valid_from=BASE, valid_until=BASE + T)
case(
    "validity: from inclusive, until exclusive",
    VALIDITY,
    [ev("a0", "a", -1), ev("a1", "a", 0), ev("a2", "a", T - 1), ev("a3", "a", T)],
    [["a1"], ["a2"]],
)

# dwell T: entered at 0 (after an out-of-zone location)
case("dwell: leaving at entry+T-1 does not fire", DWELL, [out("o0", -10), inside("i1", 0), out("o1", T - 1)], [])
case("dwell: leaving at entry+T fires", DWELL, [out("o0", -10), inside("i1", 0), out("o1", T)], [["i1"]])
case("dwell: staying fires at entry+T", DWELL, [out("o0", -10), inside("i1", 0)], [["i1"]])

# duration gte T
case("duration: stop at start+T-1 does not fire", DURATION, [ev("s1", "s", 0), ev("p1", "p", T - 1)], [])
case("duration: stop at start+T fires", DURATION, [ev("s1", "s", 0), ev("p1", "p", T)], [["s1"]])

# composed: sequence [geofence enter, event] within T (the enter occurs at the entry event's time)
ENTER_THEN_C = {"sequence": [ENTER, {"event": "c"}], "within": f"{T}ms"}
case(
    "seq[enter, c]: c at delta 0 inside",
    ENTER_THEN_C,
    [out("o0", -10), inside("i1", 0), ev("c1", "c", 0)],
    [["i1", "c1"]],
)
case(
    "seq[enter, c]: c at T-1 inside",
    ENTER_THEN_C,
    [out("o0", -10), inside("i1", 0), ev("c1", "c", T - 1)],
    [["i1", "c1"]],
)
case("seq[enter, c]: c at T outside", ENTER_THEN_C, [out("o0", -10), inside("i1", 0), ev("c1", "c", T)], [])

# composed: sequence [dwell, event] within T (the dwell occurs at entry + dwell)
DWELL_THEN_C = {"sequence": [DWELL, {"event": "c"}], "within": f"{T}ms"}
case(
    "seq[dwell, c]: c at dwell+T-1 inside",
    DWELL_THEN_C,
    [out("o0", -10), inside("i1", 0), ev("c1", "c", 2 * T - 1)],
    [["i1", "c1"]],
)
case("seq[dwell, c]: c at dwell+T outside", DWELL_THEN_C, [out("o0", -10), inside("i1", 0), ev("c1", "c", 2 * T)], [])

# composed: sequence [duration, event] within T (the duration occurs at start + gte)
DURATION_THEN_C = {"sequence": [DURATION, {"event": "c"}], "within": f"{T}ms"}
case(
    "seq[duration, c]: c at start+gte+T-1 inside",
    DURATION_THEN_C,
    [ev("s1", "s", 0), ev("c1", "c", 2 * T - 1)],
    [["s1", "c1"]],
)
case("seq[duration, c]: c at start+gte+T outside", DURATION_THEN_C, [ev("s1", "s", 0), ev("c1", "c", 2 * T)], [])
case(
    "seq[duration, c]: stop at start+gte-1 cancels the step",
    DURATION_THEN_C,
    [ev("s1", "s", 0), ev("p1", "p", T - 1), ev("c1", "c", T)],
    [],
)

# composed: all [absence, event] within T (the absence occurs at after + within: here at T)
ABSENCE_AND_C = {"all": [ABSENCE, {"event": "c"}], "within": f"{T}ms"}
case(
    "all[absence, c]: c at deadline+T-1 inside",
    ABSENCE_AND_C,
    [ev("a1", "a", 0), ev("c1", "c", 2 * T - 1)],
    [["a1", "c1"]],
)
case("all[absence, c]: c at deadline+T outside", ABSENCE_AND_C, [ev("a1", "a", 0), ev("c1", "c", 2 * T)], [])
case("all[absence, c]: c at deadline-(T-1) inside", ABSENCE_AND_C, [ev("c1", "c", 1), ev("a1", "a", 0)], [["a1", "c1"]])
case("all[absence, c]: c at deadline-T outside", ABSENCE_AND_C, [ev("a1", "a", 0), ev("c1", "c", 0)], [])
case(
    "all[absence, c]: missing at after+T-1 cancels",
    ABSENCE_AND_C,
    [ev("a1", "a", 0), ev("b1", "b", T - 1), ev("c1", "c", T)],
    [],
)
case(
    "all[absence, c]: missing at after+T does not cancel",
    ABSENCE_AND_C,
    [ev("a1", "a", 0), ev("b1", "b", T), ev("c1", "c", T)],
    [["a1", "c1"]],
)

# composed: any [dwell, event]: the dwell branch keeps its own boundary
DWELL_OR_C = {"any": [DWELL, {"event": "c"}]}
case(
    "any[dwell, c]: leaving at entry+T-1 does not fire",
    DWELL_OR_C,
    [out("o0", -10), inside("i1", 0), out("o1", T - 1)],
    [],
)
case("any[dwell, c]: leaving at entry+T fires", DWELL_OR_C, [out("o0", -10), inside("i1", 0), out("o1", T)], [["i1"]])


@pytest.mark.parametrize(("doc", "events", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_within_boundary(doc: dict[str, Any], events: list[Event], expected: list[list[str]]) -> None:
    assert fired_ids(doc, events) == expected


# -- fire times at the boundary: timers fire at exactly their deadline, not a ms earlier ------------


@pytest.mark.parametrize(
    ("when", "events", "deadline", "ref"),
    [
        (ABSENCE, [ev("a1", "a", 0)], T, "a1"),
        (DURATION, [ev("s1", "s", 0)], T, "s1"),
        (DWELL, [out("o0", -10), inside("i1", 0)], T, "i1"),
        ({"any": [DWELL, {"event": "c"}]}, [out("o0", -10), inside("i1", 0)], T, "i1"),
    ],
    ids=["absence", "duration", "dwell", "any[dwell, c]"],
)
def test_timers_fire_at_the_deadline_not_before(when, events, deadline, ref) -> None:
    engine = PartitionEngine([compile_rule(rule(when))])
    assert engine.on_events(events) == []
    assert engine.on_timer(BASE + deadline - 1) == []
    fired = engine.on_timer(BASE + deadline)
    assert [(parse_time_ms(o.event["time"]) - BASE, [m["id"] for m in o.event["data"]["events"]]) for o in fired] == [
        (deadline, [ref])
    ]


def test_composed_all_absence_fires_when_its_deadline_passes_with_c_already_there() -> None:
    """all [absence (a, not b within T), c] within T: a at 0, c at 1: the absence occurs at T
    (c is T - 1 before it: inside), so the rule fires when the timer reaches T, at T."""
    engine = PartitionEngine([compile_rule(rule(ABSENCE_AND_C))])
    assert engine.on_events([ev("a1", "a", 0), ev("c1", "c", 1)]) == []
    assert engine.on_timer(BASE + T - 1) == []
    fired = engine.on_timer(BASE + T)
    assert [(parse_time_ms(o.event["time"]) - BASE, [m["id"] for m in o.event["data"]["events"]]) for o in fired] == [
        (T, ["a1", "c1"])
    ]
