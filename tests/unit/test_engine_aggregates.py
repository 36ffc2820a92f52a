"""Aggregate conditions (sum, min, max, avg, distinct) over sliding and tumbling windows,
against a brute-force oracle.

Semantics: per customer, the events of the type that carry a usable ``of`` value are collected
since the rule last fired. Sliding: the window is those newer than the newest minus ``within``.
Tumbling: those in the newest event's bucket ``[k*within, (k+1)*within)``. After each event the
aggregate of the window is compared with the bound; when it holds the rule fires with the
window's events and starts again.
"""

from __future__ import annotations

import operator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.events.envelope import Event
from runtime.rules import PartitionEngine, compile_rule
from runtime.rules import engine as engine_module

OPS = {"gte": operator.ge, "gt": operator.gt, "lte": operator.le, "lt": operator.lt}
FNS = {
    "sum": sum,
    "min": min,
    "max": max,
    "avg": lambda v: sum(v) / len(v),
    "distinct": lambda v: len(set(v)),
}


def oracle(fn, op, bound, within, tumbling, events):
    fired, since = [], {}
    for e in events:
        value = e.data.get("v")
        if e.type != "t" or value is None:
            continue
        history = since.setdefault(e.customer, [])
        history.append(e)
        if tumbling:
            window = [x for x in history if x.time // within == e.time // within]
        else:
            window = [x for x in history if x.time > e.time - within]
        if OPS[op](FNS[fn]([x.data["v"] for x in window]), bound):
            fired.append((e.customer, [x.id for x in window]))
            since[e.customer] = []
    return fired


@st.composite
def streams(draw):
    n = draw(st.integers(1, 50))
    events, clock = [], 0
    for i in range(n):
        clock += draw(st.sampled_from([0, 1, 3, 10, 30]))
        data = {} if draw(st.integers(0, 9)) == 0 else {"v": draw(st.integers(-5, 20))}
        kind = draw(st.sampled_from(["t", "t", "t", "other"]))
        events.append(Event(f"e{i}", kind, clock, draw(st.sampled_from("xy")), "", "s", data, 0))
    for e in events:
        e.customer = e.subject
    return events


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from(sorted(FNS)),
    st.sampled_from(sorted(OPS)),
    st.integers(-5, 40),
    st.sampled_from([1, 3, 10, 13, 30, 40]),  # steps of the clock, so window edges are hit exactly
    st.booleans(),
    streams(),
)
def test_aggregates_match_the_oracle(fn, op, bound, within, tumbling, events):
    rule = compile_rule(
        {
            "name": "agg",
            "when": {
                "event": "t",
                fn: {"of": "data.v", op: bound},
                "within": f"{within}ms",
                "window": "tumbling" if tumbling else "sliding",
            },
            "then": [{"emit": "agg"}],
        }
    )
    engine = PartitionEngine([rule])
    got = [(o.event["subject"], [m["id"] for m in o.event["data"]["events"]]) for o in engine.on_events(events)]
    assert got == oracle(fn, op, bound, within, tumbling, events)


def ev(i, time, **data):
    return Event(f"e{i}", "card.tx", time, "c", "c", "s", data, 0)


def test_spend_over_a_tumbling_hour():
    """sum(data.amount) >= 1000 per calendar hour (UTC buckets).

    minute   10    50  | 70   80
    amount   600   300 | 500  600   -> the first hour ends at 900; the second reaches 1100
    """
    m = 60_000
    rule = compile_rule(
        {
            "name": "spend",
            "when": {
                "event": "card.tx",
                "sum": {"of": "data.amount", "gte": 1000},
                "within": "1h",
                "window": "tumbling",
            },
            "then": [{"emit": "big_spend"}],
        }
    )
    engine = PartitionEngine([rule])
    events = [
        ev(1, 10 * m, amount=600),
        ev(2, 50 * m, amount=300),
        ev(3, 70 * m, amount=500),
        ev(4, 80 * m, amount=600),
    ]
    fired = [[m_["id"] for m_ in o.event["data"]["events"]] for o in engine.on_events(events)]
    assert fired == [["e3", "e4"]]


def test_distinct_cells_within_ten_minutes():
    rule = compile_rule(
        {
            "name": "moving",
            "when": {"event": "card.tx", "distinct": {"of": "data.cell", "gte": 3}, "within": "10m"},
            "then": [{"emit": "moving"}],
        }
    )
    engine = PartitionEngine([rule])
    events = [ev(1, 0, cell="A"), ev(2, 1000, cell="A"), ev(3, 2000, cell="B"), ev(4, 3000, cell="C")]
    assert [len(o.event["data"]["events"]) for o in engine.on_events(events)] == [4]


def test_an_aggregate_and_a_count_together_are_refused():
    import pytest

    from runtime.config.documents import parse_document
    from runtime.errors import ConfigError

    with pytest.raises(ConfigError):
        parse_document(
            {
                "kind": "rule",
                "name": "bad",
                "when": {"event": "t", "count": 2, "sum": {"of": "data.v", "gte": 1}, "within": "1m"},
                "then": [{"emit": "x"}],
            }
        )


@st.composite
def unordered_streams(draw):
    """Mostly in order, some events late, small ints and floats whose sums round: where a
    kept running aggregate could drift from a recomputed one."""
    n = draw(st.integers(1, 60))
    values = st.one_of(st.integers(-5, 20), st.sampled_from([0.1, 0.2, 0.3, 1e16, -1e16, 2.5]))
    events, clock = [], 0
    for i in range(n):
        clock += draw(st.sampled_from([0, 1, 3, 10]))
        time = clock - draw(st.sampled_from([0, 0, 0, 0, 2, 15]))  # a late one now and then
        data = {"v": draw(values)} if draw(st.integers(0, 9)) else {}
        events.append(Event(f"e{i}", "t", time, draw(st.sampled_from("xy")), "", "s", data, 0))
    for e in events:
        e.customer = e.subject
    return events


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(sorted(FNS)),
    st.sampled_from(sorted(OPS)),
    st.sampled_from([-3, 0, 0.6, 10, 25, 40, 60]),
    st.sampled_from([7, 30, 100]),
    st.booleans(),
    st.booleans(),
    unordered_streams(),
)
def test_kept_running_aggregates_equal_recomputing(fn, op, bound, within, tumbling, grouped, events):
    """Windows that keep their aggregator's state fire exactly as windows that recompute it
    from their values on every event (the engine before states were kept)."""
    when = {"event": "t", fn: {"of": "data.v", op: bound}, "within": f"{within}ms"}
    when["window"] = "tumbling" if tumbling else "sliding"
    if grouped:
        when["group_by"] = "data.v"
    rule = compile_rule({"name": "agg", "when": when, "then": [{"emit": "agg"}]})
    kept = [o.id for o in PartitionEngine([rule]).on_events(events)]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(engine_module, "new_window", lambda leaf: [])
        recomputed = [o.id for o in PartitionEngine([rule]).on_events(events)]
    assert kept == recomputed
