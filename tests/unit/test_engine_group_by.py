"""Counts and aggregates grouped by an attribute: each value has its own window. Checked
against a brute-force oracle that keeps every event per (customer, value)."""

from __future__ import annotations

from collections import defaultdict

from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.events.envelope import Event
from runtime.rules import PartitionEngine, compile_rule

M = 60_000


def pay(i: int, minute: int, merchant: str | None, amount: int = 1, customer: str = "c") -> Event:
    data = {"amount": amount} if merchant is None else {"merchant": merchant, "amount": amount}
    return Event(f"p{i}", "card.payment", minute * M, customer, customer, "s", data, 0)


def engine(**condition) -> PartitionEngine:
    when = {"event": "card.payment", "group_by": "data.merchant", **condition}
    return PartitionEngine([compile_rule({"name": "g", "when": when, "then": [{"emit": "same-merchant"}]})])


def fired(outputs) -> list[list[str]]:
    return [[m["id"] for m in o.event["data"]["events"]] for o in outputs]


def test_each_value_counts_alone():
    """3 payments at the same merchant within 10 min: A A B A fires on the third A only"""
    e = engine(count=3, within="10m")
    events = [pay(0, 0, "A"), pay(1, 1, "A"), pay(2, 2, "B"), pay(3, 3, "A"), pay(4, 4, "B")]
    assert fired(e.on_events(events)) == [["p0", "p1", "p3"]]


def test_events_without_the_attribute_do_not_count():
    e = engine(count=2, within="10m")
    assert e.on_events([pay(0, 0, None), pay(1, 1, None)]) == []


def test_grouped_sum():
    """sum of amount per merchant >= 100 within 1 h"""
    e = engine(sum={"of": "data.amount", "gte": 100}, within="1h")
    events = [pay(0, 0, "A", 60), pay(1, 1, "B", 60), pay(2, 2, "A", 40)]
    assert fired(e.on_events(events)) == [["p0", "p2"]]


def test_grouped_windows_expire_and_snapshot():
    e = engine(count=2, within="10m")
    e.on_events([pay(0, 0, "A")])
    resumed = PartitionEngine(list(e.rules.values()), resume_state=e.snapshot())
    assert fired(resumed.on_events([pay(1, 5, "A")])) == [["p0", "p1"]]
    e.expire(60 * M)
    assert e.customers == 0


EVENTS = st.lists(
    st.tuples(st.sampled_from(["c0", "c1"]), st.sampled_from(["A", "B", "C", None]), st.integers(0, 15)),
    max_size=60,
)


def oracle(stream: list[tuple[str, str | None, int, str]], threshold: int, window: int) -> list[list[str]]:
    """Per (customer, value): keep events with time > newest - window; at the threshold fire with
    them and start again."""
    kept: dict[tuple[str, str], list[tuple[int, str]]] = defaultdict(list)
    fires = []
    for customer, value, t, eid in stream:
        if value is None:
            continue
        events = [(et, i) for et, i in kept[(customer, value)] if et > t - window] + [(t, eid)]
        if len(events) >= threshold:
            fires.append([i for _, i in events])
            events = []
        kept[(customer, value)] = events
    return fires


@settings(max_examples=300, deadline=None)
@given(EVENTS, st.integers(1, 4), st.integers(1, 40))
def test_against_the_oracle(raw, threshold, window):
    if threshold == 1:
        threshold = 2  # group_by needs a count above 1
    e = engine(count=threshold, within=f"{window}ms")
    now, stream, got = dict.fromkeys(["c0", "c1"], 0), [], []
    for i, (customer, value, step) in enumerate(raw):
        now[customer] += step
        stream.append((customer, value, now[customer], f"p{i}"))
        data = {} if value is None else {"merchant": value}
        got += fired(e.on_events([Event(f"p{i}", "card.payment", now[customer], customer, customer, "s", data, 0)]))
    assert got == oracle(stream, threshold, window)
