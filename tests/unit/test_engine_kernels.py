"""Rules that run as kernels over a whole batch (PartitionEngine._kernels) among rules that do
not (timers, gates, expressions reading more than ``data``), against the same engine with no
kernels, every rule event by event in one dispatch pass (what the engine did before kernels).

Outputs must be equal as lists: the same outputs in the same order (timers due before an event
first, then the event's rules in priority order), whatever the mix of rules and however the
stream is cut into batches; a batch in which a backfill may start goes event by event and must
agree too.
"""

from __future__ import annotations

from unittest.mock import patch

from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.events.columns import EventColumns, encode_rows
from runtime.events.envelope import Event
from runtime.rules import PartitionEngine, compile_rule
from runtime.rules import engine as engine_module

TYPES = ["a", "b", "c", "d"]
CUSTOMERS = ["c0", "c1", "c2"]


def pair(name: str, first: str, second: str, within: int, priority: int) -> dict:
    return {
        "name": name,
        "priority": priority,
        "when": {"sequence": [{"event": first}, {"event": second}], "within": f"{within}ms"},
        "then": [{"emit": f"{name}-fired"}],
    }


def steps3(name: str, kinds: list[str], within: int, priority: int) -> dict:
    return {
        "name": name,
        "priority": priority,
        "when": {"sequence": [{"event": k} for k in kinds], "within": f"{within}ms"},
        "then": [{"emit": f"{name}-fired"}, {"emit": f"{name}-again"}],
    }


def count(name: str, kind: str, threshold: int, within: int, where: str | None, priority: int) -> dict:
    when: dict = {"event": kind, "count": threshold}
    if within:
        when["within"] = f"{within}ms"
    if where:
        when["where"] = where
    return {"name": name, "priority": priority, "when": when, "then": [{"emit": f"{name}-fired"}]}


def total(name: str, kind: str, within: int, priority: int) -> dict:
    when = {"event": kind, "sum": {"of": "data.v", "gte": 3}, "within": f"{within}ms"}
    return {"name": name, "priority": priority, "when": when, "then": [{"emit": f"{name}-fired"}]}


def absence(name: str, after: str, missing: str, within: int, priority: int) -> dict:
    return {
        "name": name,
        "priority": priority,
        "when": {"absence": {"after": {"event": after}, "missing": {"event": missing}, "within": f"{within}ms"}},
        "then": [{"emit": f"{name}-fired"}],
    }


def gated(name: str, kind: str, priority: int) -> dict:
    return {
        "name": name,
        "priority": priority,
        "when": {"event": kind, "count": 1, "within": "5ms"},
        "valid_from": "1970-01-01T00:00:00.010Z",
        "then": [{"emit": f"{name}-fired"}],
    }


@st.composite
def rule_sets(draw) -> list[dict]:
    kind = st.sampled_from(TYPES)
    within = st.sampled_from([3, 10, 40])
    priority = st.integers(0, 3)
    makers = [
        lambda n: pair(n, *draw(st.lists(kind, min_size=2, max_size=2, unique=True)), draw(within), draw(priority)),
        lambda n: steps3(n, draw(st.lists(kind, min_size=3, max_size=3)), draw(within), draw(priority)),
        lambda n: count(
            n,
            draw(kind),
            draw(st.integers(1, 3)),
            draw(within),
            draw(st.sampled_from([None, "data.v >= 1"])),
            draw(priority),
        ),
        lambda n: count(n, draw(kind), 2, draw(within), "data.v >= 1 && subject == 'c1'", draw(priority)),
        lambda n: total(n, draw(kind), draw(within), draw(priority)),
        lambda n: {
            **count(n, draw(kind), draw(st.integers(1, 3)), draw(within), None, draw(priority)),
            "cooldown": "15ms",
        },
        lambda n: count(n, draw(kind), 1, 0, draw(st.sampled_from([None, "data.v >= 1"])), draw(priority)),
        lambda n: absence(n, *draw(st.lists(kind, min_size=2, max_size=2, unique=True)), draw(within), draw(priority)),
        lambda n: gated(n, draw(kind), draw(priority)),
    ]
    picks = draw(st.lists(st.integers(0, len(makers) - 1), min_size=1, max_size=5))
    return [makers[k](f"r{i}") for i, k in enumerate(picks)]


@st.composite
def streams(draw) -> list[Event]:
    """Events mostly in time order per customer, some behind (late within the lateness)."""
    size = draw(st.integers(0, 60))
    clock = 0
    events = []
    for n in range(size):
        clock += draw(st.sampled_from([0, 1, 2, 5, 12]))
        behind = draw(st.sampled_from([0, 0, 0, 0, 3, 20]))
        customer = draw(st.sampled_from(CUSTOMERS))
        events.append(
            Event(
                f"e{n}",
                draw(st.sampled_from(TYPES)),
                max(0, clock - behind),
                customer,
                customer,
                "s",
                {"v": draw(st.integers(0, 2))},
                0,
            )
        )
    return events


def engine(rules: list[dict], lateness_ms: int = 3_600_000) -> PartitionEngine:
    return PartitionEngine([compile_rule(r) for r in rules], lateness_ms=lateness_ms)


def one_at_a_time(rules: list[dict], events: list[Event]) -> list:
    single = engine(rules)
    return [o for e in events for o in single.on_events([e])]


def without_kernels(rules: list[dict]) -> PartitionEngine:
    """The engine as it was before kernels: every rule event by event, in one dispatch pass."""
    with patch.object(engine_module, "KERNELS_MAX", 0):
        return engine(rules)


@settings(max_examples=300, deadline=None)
@given(rule_sets(), streams(), st.data())
def test_batches_equal_every_rule_event_by_event(rules, events, data):
    reference = without_kernels(rules)
    assert not reference._kernels
    expected = reference.on_events(events) + reference.on_timer(10**9)
    whole = engine(rules)
    assert whole.on_events(events) + whole.on_timer(10**9) == expected
    cuts = sorted(data.draw(st.lists(st.integers(0, len(events)), max_size=4)))
    pieces = [events[a:b] for a, b in zip([0, *cuts], [*cuts, len(events)], strict=True)]
    cut = engine(rules)
    assert [o for p in pieces for o in cut.on_events(p)] + cut.on_timer(10**9) == expected
    # as partition actors get them: each piece a log entry's columns, decoded
    logged = engine(rules)
    entries = [EventColumns.decode(encode_rows(p, columns_from=data.draw(st.sampled_from([0, 16])))) for p in pieces]
    assert [o for e in entries for o in logged.on_events(e)] + logged.on_timer(10**9) == expected


@settings(max_examples=150, deadline=None)
@given(rule_sets(), streams())
def test_kernel_rules_run_as_kernels_and_agree_when_a_backfill_may_start(rules, events):
    """With a watermark far ahead every batch may start a backfill: the rules then go event by
    event, kernels included. Without timers (a backfill moves those to the customer's own
    clock) they give what they give with no watermark."""
    rules = [r for r in rules if "absence" not in r["when"]]
    plain = engine(rules).on_events(events)
    far = engine(rules, lateness_ms=1)
    assert far.on_events(events, watermark=10**6) == plain


def test_a_kernel_needs_types_no_other_kind_of_rule_reads_and_at_most_three_beside_it():
    assert len(engine([pair("p", "a", "b", 10, 0)])._kernels) == 1
    assert not engine([pair("p", "a", "b", 10, 0), absence("q", "b", "c", 10, 0)])._kernels  # b is shared
    assert not engine([gated("g", "a", 0)])._kernels
    four = [count(f"n{i}", kind, 1, 10, None, 0) for i, kind in enumerate(TYPES)]
    assert len(engine(four[:3])._kernels) == 3 and not engine(four)._kernels


def test_a_timer_due_before_an_event_fires_before_the_kernels_output_for_it():
    rules = [absence("wait", "a", "b", 5, 0), count("each-c", "c", 1, 5, None, 0)]
    events = [Event(f"e{n}", kind, t, "c0", "c0", "s", {}, 0) for n, (kind, t) in enumerate([("a", 0), ("c", 10)])]
    batch = engine(rules)
    assert batch._kernels  # each-c runs as a kernel, the absence event by event
    topics = [o.topic for o in batch.on_events(events)]
    assert topics == ["business.wait-fired", "business.each-c-fired"]
    assert [o.topic for o in one_at_a_time(rules, events)] == topics


def test_a_pair_kernel_over_a_batch_of_more_than_256_types_equals_event_by_event():
    """Past 256 distinct types a batch's type codes are a list, not bytes: the kernel then
    hands the compiled loop each event's role instead."""
    rules = [pair("p", "a", "b", 50, 0)]
    kinds = [f"other-{n}" for n in range(300)] + ["a", "b", "a", "other-1", "b", "b"]
    events = [Event(f"e{n}", kind, n, CUSTOMERS[n % 2], CUSTOMERS[n % 2], "s", {}, 0) for n, kind in enumerate(kinds)]
    columns = EventColumns.decode(encode_rows(events, columns_from=0))
    assert type(columns.coded_types.codes) is not bytes
    outputs = engine(rules).on_events(columns)
    assert outputs == without_kernels(rules).on_events(events)
    assert len(outputs) == 1  # c0: a at 302, then b at 304 (c1 has no a)
