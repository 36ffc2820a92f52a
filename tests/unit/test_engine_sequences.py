"""Sequences (followed-by, with ``within``, ``not`` between steps, strict or relaxed) against a
brute-force oracle.

Semantics: per customer, a sequence fires at the first event that ends a valid match among the
events since the rule last fired: events i1 < ... < in (arrival order) matching the steps in
order, the last within ``within`` of the first (``t(in) - t(i1) < within``), no event matching
the ``not`` condition of a gap strictly inside that gap, and, when strict, no other event of the
steps' types strictly inside any gap. The output lists a valid match.
"""

from __future__ import annotations

from itertools import combinations

from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.events.envelope import Event
from runtime.rules import CompiledRule, PartitionEngine, compile_rule
from runtime.rules.compiled import plain_steps

TYPES = ["a", "b", "c", "x"]


def step_matches(step, e):
    return e.type == step[0] and e.data["v"] >= step[1]


def valid(match, history, steps, guards, within, strict):
    events = [history[i] for i in match]
    if not all(step_matches(s, e) for s, e in zip(steps, events, strict=True)):
        return False
    if events[-1].time - events[0].time >= within:
        return False
    step_types = {s[0] for s in steps}
    for k in range(1, len(match)):
        between = history[match[k - 1] + 1 : match[k]]
        if guards[k] is not None and any(step_matches(guards[k], e) for e in between):
            return False
        if strict and any(e.type in step_types for e in between):
            return False
    return True


def oracle(steps, guards, within, strict, events):
    fired, history = [], []
    for e in events:
        history.append(e)
        last = len(history) - 1
        for earlier in combinations(range(last), len(steps) - 1):
            if valid((*earlier, last), history, steps, guards, within, strict):
                fired.append(e.id)
                history = []
                break
    return fired, None


def checked(steps, guards, within, strict, events, outputs):
    """Each output must be a valid match over the events since the previous output."""
    by_id = {e.id: i for i, e in enumerate(events)}
    start = 0
    for o in outputs:
        ids = [m["id"] for m in o.event["data"]["events"]]
        positions = [by_id[i] - start for i in ids]
        history = events[start : by_id[ids[-1]] + 1]
        assert valid(tuple(positions), history, steps, guards, within, strict), ids
        start = by_id[ids[-1]] + 1


steps_st = st.lists(st.tuples(st.sampled_from(TYPES[:3]), st.integers(0, 2)), min_size=2, max_size=3)


@st.composite
def case(draw):
    steps = draw(steps_st)
    guards = [None] + [
        draw(st.one_of(st.none(), st.tuples(st.sampled_from(TYPES), st.integers(0, 2)))) for _ in steps[1:]
    ]
    n = draw(st.integers(1, 30))
    events, clock = [], 0
    for i in range(n):
        clock += draw(st.sampled_from([0, 1, 2, 5]))
        events.append(
            Event(f"e{i}", draw(st.sampled_from(TYPES)), clock, "c", "c", "s", {"v": draw(st.integers(0, 2))}, 0)
        )
    return steps, guards, draw(st.sampled_from([1, 3, 6, 20])), draw(st.booleans()), events


def doc(steps, guards, within, strict):
    sequence = []
    for step, guard in zip(steps, guards, strict=True):
        if guard is not None:
            sequence.append({"not": {"event": guard[0], "where": f"data.v >= {guard[1]}"}})
        sequence.append({"event": step[0], "where": f"data.v >= {step[1]}"})
    return {
        "name": "s",
        "when": {"sequence": sequence, "within": f"{within}ms", "strict": strict},
        "then": [{"emit": "s"}],
    }


@settings(max_examples=400, deadline=None)
@given(case())
def test_sequences_fire_exactly_where_a_valid_match_ends(c):
    steps, guards, within, strict, events = c
    engine = PartitionEngine([compile_rule(doc(steps, guards, within, strict))])
    outputs = engine.on_events(events)
    expected, _ = oracle(steps, guards, within, strict, events)
    assert [o.event["data"]["events"][-1]["id"] for o in outputs] == expected
    checked(steps, guards, within, strict, events, outputs)


@settings(max_examples=150, deadline=None)
@given(case(), st.integers(0, 30))
def test_a_restart_mid_sequence_changes_nothing(c, split):
    import msgspec

    steps, guards, within, strict, events = c
    rules = [compile_rule(doc(steps, guards, within, strict))]
    whole = [o.id for o in PartitionEngine(rules).on_events(events)]
    first = PartitionEngine(rules)
    before = [o.id for o in first.on_events(events[:split])]
    snapshot = msgspec.msgpack.decode(msgspec.msgpack.encode(first.snapshot()))
    after = [o.id for o in PartitionEngine(rules, resume_state=snapshot).on_events(events[split:])]
    assert before + after == whole


def test_expire_keeps_live_partials_and_drops_stale_ones():
    rules = [compile_rule(doc([("a", 0), ("b", 0)], [None, None], 100, False))]
    engine = PartitionEngine(rules)
    engine.on_events([Event("e1", "a", 1000, "c", "c", "s", {"v": 0}, 0)])
    engine.expire(1050)  # the partial may still complete until 1100
    assert engine.customers == 1
    engine.expire(1100)
    assert engine.customers == 0


@st.composite
def plain_case(draw, *, pair=False):
    """A sequence of plain steps (no ``where``, no ``not``, relaxed), several customers, event
    times out of order (late events) and repeated step types. ``pair``: two steps of two types,
    the shape the engine has its own path for."""
    if pair:
        steps = draw(st.lists(st.sampled_from(TYPES[:3]), min_size=2, max_size=2, unique=True))
    else:
        steps = draw(st.lists(st.sampled_from(TYPES[:3]), min_size=2, max_size=4))
    events = []
    for i in range(draw(st.integers(1, 40))):
        time_ms = draw(st.integers(0, 40))
        customer = draw(st.sampled_from(["c1", "c2"]))
        events.append(Event(f"e{i}", draw(st.sampled_from(TYPES)), time_ms, customer, customer, "s", {"v": 0}, 0))
    return steps, draw(st.sampled_from([1, 3, 6, 20])), events


@settings(max_examples=300, deadline=None)
@given(st.one_of(plain_case(), plain_case(pair=True)), st.integers(0, 40))
def test_plain_sequences_take_the_fast_path_with_the_generic_results(c, split):
    """A step without ``where`` takes the engine's plain-sequence path; ``where: data.v >= 0``
    (always true) keeps the same rule on the generic path. Outputs, state and a restart from
    the state must be the same on both."""
    steps, within, events = c

    def rule(where):
        sequence = [{"event": s, **({"where": where} if where else {})} for s in steps]
        return compile_rule(
            {"name": "s", "when": {"sequence": sequence, "within": f"{within}ms"}, "then": [{"emit": "s"}]}
        )

    assert plain_steps(rule(None)) is not None and plain_steps(rule("data.v >= 0")) is None  # both paths are taken
    plain, generic = PartitionEngine([rule(None)]), PartitionEngine([rule("data.v >= 0")])
    assert [o.id for o in plain.on_events(events[:split])] == [o.id for o in generic.on_events(events[:split])]
    assert plain.snapshot()["customers"] == generic.snapshot()["customers"]
    resumed = PartitionEngine([rule(None)], resume_state=plain.snapshot())
    rest = [o.id for o in generic.on_events(events[split:])]
    assert [o.id for o in plain.on_events(events[split:])] == rest
    assert [o.id for o in resumed.on_events(events[split:])] == rest
    plain.expire(20), generic.expire(20)
    assert plain.snapshot()["customers"] == generic.snapshot()["customers"]
    assert [plain.explain(c) for c in ("c1", "c2")] == [generic.explain(c) for c in ("c1", "c2")]


@settings(max_examples=150, deadline=None)
@given(st.one_of(plain_case(), plain_case(pair=True)), st.integers(0, 40), st.integers(1, 30))
def test_a_plain_sequence_given_a_cooldown_by_a_reload_goes_on_from_its_partial_matches(c, split, cooldown):
    """A reload that adds a cooldown keeps the rule's shape, so its partial matches survive,
    but the rule leaves the plain-sequence path: it must go on exactly as the generic path does
    from the same partial matches."""
    steps, within, events = c

    def rule(where, cooldown_ms):
        sequence = [{"event": s, **({"where": where} if where else {})} for s in steps]
        return compile_rule(
            {
                "name": "s",
                "when": {"sequence": sequence, "within": f"{within}ms"},
                "then": [{"emit": "s"}],
                "cooldown": f"{cooldown_ms}ms",
            }
        )

    plain, generic = PartitionEngine([rule(None, 0)]), PartitionEngine([rule("data.v >= 0", 0)])
    first, second = events[:split], events[split:]
    assert [o.id for o in plain.on_events(first)] == [o.id for o in generic.on_events(first)]
    plain.update_rules([rule(None, cooldown)])
    generic.update_rules([rule("data.v >= 0", cooldown)])
    assert plain_steps(rule(None, cooldown)) is None  # the reload took it off the plain path
    assert [o.id for o in plain.on_events(second)] == [o.id for o in generic.on_events(second)]
    assert plain.snapshot()["customers"] == generic.snapshot()["customers"]


def test_a_pair_that_loses_its_cooldown_in_a_reload_completes_its_partial_match():
    """The reverse recast: a pair with a cooldown keeps a GroupState; the reload that drops the
    cooldown puts it on the pair's path, whose state is the partial's (time, ref) alone. The
    first event's partial must still complete, with both events in the output."""

    def rule(cooldown: str) -> CompiledRule:
        when = {"sequence": [{"event": "a"}, {"event": "b"}], "within": "10ms"}
        return compile_rule({"name": "p", "when": when, "then": [{"emit": "p"}], "cooldown": cooldown})

    engine = PartitionEngine([rule("5ms")])
    assert plain_steps(rule("5ms")) is None and plain_steps(rule("0ms")) is not None
    engine.on_events([Event("e1", "a", 100, "c", "c", "s", {}, 0)])
    engine.update_rules([rule("0ms")])
    (output,) = engine.on_events([Event("e2", "b", 105, "c", "c", "s", {}, 0)])
    assert [e["id"] for e in output.event["data"]["events"]] == ["e1", "e2"]
    assert engine.customers == 0
