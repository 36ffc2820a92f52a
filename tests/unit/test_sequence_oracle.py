"""The sequence workload's oracle (runtime/dev/sequence_oracle.py) and its generator: hand-checked
cases, and against PartitionEngine on in-order streams (hypothesis), where the engine is the
ordered reference the oracle must agree with."""

from __future__ import annotations

from collections import Counter

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.dev.sequence_oracle import expected_matches, invalid, score, sequence_rule, violation
from runtime.dev.synthetic import START_MS, ab_sequence_batches, ab_sequence_events
from runtime.events.envelope import Event
from runtime.rules import PartitionEngine, compile_rule

A, B, C = "ab.a", "ab.b", "ab.c"


def ev(i: str, kind: str, time: int, customer: str = "c1") -> dict:
    return {"id": i, "type": kind, "time": time, "subject": customer, "data": {}}


def output(a: str, b: str, customer: str = "c1", oid: str | None = None) -> dict:
    refs = [{"source": "s", "id": a}, {"source": "s", "id": b}]
    return {"id": oid or f"o-{a}-{b}", "subject": customer, "data": {"events": refs}}


# --- expected_matches ----------------------------------------------------------------------


def test_a_then_b_within_matches_and_the_boundary_is_exclusive():
    events = [ev("a1", A, 0), ev("b1", B, 59_999), ev("a2", A, 100_000), ev("b2", B, 160_000)]
    assert expected_matches(events, 60_000) == {("c1", "a1", "b1")}


def test_b_before_a_never_matches_even_if_it_arrives_later():
    events = [ev("a1", A, 5_000), ev("b1", B, 1_000)]  # arrival order a, b; event time b first
    assert expected_matches(events, 60_000) == set()


def test_the_sequence_restarts_after_a_match():
    events = [ev("a1", A, 0), ev("b1", B, 10), ev("b2", B, 20), ev("a2", A, 30), ev("c", C, 35), ev("b3", B, 40)]
    assert expected_matches(events, 60_000) == {("c1", "a1", "b1"), ("c1", "a2", "b3")}


def test_the_latest_started_partial_is_the_one_kept():
    events = [ev("a1", A, 0), ev("a2", A, 10), ev("b1", B, 20)]
    assert expected_matches(events, 60_000) == {("c1", "a2", "b1")}


def test_an_expired_partial_does_not_match_but_a_newer_one_does():
    events = [ev("a1", A, 0), ev("b1", B, 60_000), ev("a2", A, 60_001), ev("b2", B, 60_002)]
    assert expected_matches(events, 60_000) == {("c1", "a2", "b2")}


def test_equal_times_keep_arrival_order():
    assert expected_matches([ev("a1", A, 7), ev("b1", B, 7)], 10) == {("c1", "a1", "b1")}
    assert expected_matches([ev("b1", B, 7), ev("a1", A, 7)], 10) == set()


def test_customers_are_separate():
    events = [ev("a1", A, 0, "x"), ev("b1", B, 1, "y"), ev("b2", B, 2, "x")]
    assert expected_matches(events, 60_000) == {("x", "a1", "b2")}


# --- invalid ------------------------------------------------------------------------------


def test_invalid_names_every_kind_of_violation():
    events = [
        ev("a1", A, 100_000),
        ev("b0", B, 50_000),
        ev("b1", B, 100_010),
        ev("b9", B, 160_000),
        ev("c1", C, 100_020),
        ev("bx", B, 100_030, "other"),
    ]
    by_id = {e["id"]: e for e in events}
    good = output("a1", "b1")
    assert violation(good, by_id, 60_000) is None
    cases = {
        "before": output("a1", "b0"),
        "after": output("a1", "b9"),  # exactly 60 s: outside
        "types": output("a1", "c1"),
        "customers": output("a1", "bx"),
        "reversed": output("b1", "a1"),
        "unknown": output("a1", "nope"),
        "count": {"id": "o", "subject": "c1", "data": {"events": [{"source": "s", "id": "a1"}]}},
        "subject": output("a1", "b1", customer="other"),
    }
    assert violation(cases["before"], by_id, 60_000) == "ab.b 50000 ms before ab.a"
    assert "within 60000 ms" in violation(cases["after"], by_id, 60_000)
    assert invalid([good, *cases.values()], by_id, 60_000) == list(cases.values())


def test_equal_times_are_a_valid_match():
    events = [ev("a1", A, 5), ev("b1", B, 5)]
    assert invalid([output("a1", "b1")], {e["id"]: e for e in events}, 10) == []


def test_score_counts_duplicates_missing_and_unexpected():
    events = [ev("a1", A, 0), ev("b1", B, 10), ev("a2", A, 20), ev("a3", A, 30), ev("b2", B, 40), ev("b3", B, 15)]
    # expected: (a1, b1) then (a3, b2); received: (a1, b1) twice, (a2, b2) (valid, not the
    # ordered stream's), (a2, b3) (b before a: invalid)
    outputs = [output("a1", "b1"), output("a1", "b1"), output("a2", "b2"), output("a2", "b3")]
    result = score(outputs, events, 60_000)
    assert {k: v for k, v in result.items() if k != "examples"} == {
        "expected": 2,
        "outputs": 4,
        "got": 3,
        "invalid": 1,
        "duplicates": 1,
        "missing": 1,
        "unexpected": 1,
    }
    assert result["examples"]["missing"] == [("c1", "a3", "b2")]
    assert result["examples"]["invalid"][0]["events"] == ["a2", "b3"]


# --- against the engine on in-order streams -------------------------------------------------


@st.composite
def ordered_streams(draw):
    n = draw(st.integers(0, 60))
    events, clock = [], 0
    for i in range(n):
        clock += draw(st.sampled_from([0, 1, 2, 3, 5, 8]))
        events.append(ev(f"e{i}", draw(st.sampled_from([A, B, C])), clock, draw(st.sampled_from(["x", "y", "z"]))))
    return events, draw(st.sampled_from([1, 3, 6, 10, 25]))


@settings(max_examples=400, deadline=None)
@given(ordered_streams())
def test_the_oracle_agrees_with_the_engine_on_ordered_streams(case):
    events, within = case
    rule = sequence_rule(within=f"{within}ms")
    engine = PartitionEngine([compile_rule(rule)])
    wire = [Event(e["id"], e["type"], e["time"], e["subject"], e["subject"], "s", e["data"], 0) for e in events]
    published = engine.on_events(wire)
    assert {o.topic for o in published} <= {rule["then"][0]["emit"]}  # a topic a subscription can name
    outputs = [o.event for o in published]
    result = score(outputs, events, within)
    assert invalid(outputs, {e["id"]: e for e in events}, within) == []
    assert (result["missing"], result["unexpected"], result["duplicates"]) == (0, 0, 0), result
    assert result["got"] == result["expected"] == len(expected_matches(events, within))


# --- the workload --------------------------------------------------------------------------


def test_the_workload_is_deterministic_and_shaped_as_specified():
    first = list(ab_sequence_events(customers=50, events=20_000, seed=3))
    assert first == list(ab_sequence_events(customers=50, events=20_000, seed=3))
    assert first != list(ab_sequence_events(customers=50, events=20_000, seed=4))
    assert [e["time"] for e in first[:3]] == [START_MS, START_MS + 3, START_MS + 6]
    shares = Counter(e["type"] for e in first)
    assert abs(shares[A] / 20_000 - 0.2) < 0.02 and abs(shares[B] / 20_000 - 0.2) < 0.02
    assert len({e["subject"] for e in first}) == 50 and len({e["id"] for e in first}) == 20_000


def test_batches_carry_the_events_in_order():
    batches = ab_sequence_batches(customers=5, events=2_500, batch_size=1_000, seed=1, prefix="r1-")
    assert [body.count(b"\n") + 1 for body in batches] == [1_000, 1_000, 500]
    decoded = [orjson.loads(line) for body in batches for line in body.split(b"\n")]
    assert decoded == list(ab_sequence_events(customers=5, events=2_500, seed=1, prefix="r1-"))
    assert decoded[0]["id"].startswith("r1-s") and decoded[0]["subject"].startswith("r1-c")
