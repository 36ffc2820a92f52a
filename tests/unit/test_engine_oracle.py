"""PartitionEngine against a brute-force oracle (hypothesis).

The oracle is written from the semantics in runtime/rules/engine.py's docstring, per customer
and rule: a matching event whose time is before cooldown_until is ignored (the cooldown then
still runs; one at or after it ends the cooldown); otherwise keep the matching events whose
time > newest - window; when the count reaches the threshold, fire with those events, clear
the window and, if the rule has a cooldown, set cooldown_until = time + cooldown. Rules of one
event type are evaluated in priority order (highest first, then by name). It keeps every event
in plain lists and recomputes the window from scratch each time; nothing here calls the
engine to decide what is expected.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.events.envelope import Event
from runtime.rules import CompiledRule, PartitionEngine, compile_rule

CUSTOMERS = ["c0", "c1", "c2"]
TYPES = ["a", "b"]
SETTINGS = settings(max_examples=150, deadline=None)


@dataclass(frozen=True)
class Spec:
    name: str
    event_type: str
    priority: int
    threshold: int
    window_ms: int
    cooldown_ms: int
    where_min: int | None  # where: data.v >= where_min

    def compile(self) -> CompiledRule:
        when: dict[str, object] = {"event": self.event_type, "count": self.threshold, "within": f"{self.window_ms}ms"}
        if self.where_min is not None:
            when["where"] = f"data.v >= {self.where_min}"
        doc = {
            "kind": "rule",
            "name": self.name,
            "priority": self.priority,
            "when": when,
            "then": [{"emit": f"{self.name}-fired"}],
            "cooldown": f"{self.cooldown_ms}ms",
        }
        return compile_rule(doc)

    def matches(self, event: Event) -> bool:
        if event.type != self.event_type:
            return False
        v = event.data.get("v")
        return self.where_min is None or (v is not None and v >= self.where_min)


@st.composite
def specs(draw) -> list[Spec]:
    count = draw(st.integers(1, 3))
    return [
        Spec(
            name=f"r{i}",
            event_type=draw(st.sampled_from(TYPES)),
            priority=draw(st.integers(0, 100)),
            threshold=draw(st.integers(1, 5)),
            window_ms=draw(st.one_of(st.sampled_from([10, 20, 50, 100]), st.integers(1, 100))),
            cooldown_ms=draw(st.one_of(st.sampled_from([0, 10, 20, 50]), st.integers(0, 50))),
            where_min=draw(st.one_of(st.none(), st.integers(0, 9))),
        )
        for i in range(count)
    ]


def make_event(n: int, customer: str, type_: str, time: int, v: int | None) -> Event:
    data = {} if v is None else {"v": v}
    return Event(f"e{n}", type_, time, customer, customer, "src", data, 0)


def raw_events(draw, max_size: int) -> list[tuple[str, str, int, int | None]]:
    # Draw the length first: plain st.lists() mostly yields very short streams, in which
    # windows rarely fill up and rules rarely fire.
    size = draw(st.integers(0, max_size))
    return draw(st.lists(RAW, min_size=size, max_size=size))


RAW = st.tuples(
    st.sampled_from(CUSTOMERS),
    st.sampled_from(TYPES),
    # time step: bursts, round steps (which land events exactly on window edges), gaps
    st.one_of(st.integers(0, 3), st.sampled_from([5, 10, 25]), st.integers(0, 40)),
    st.one_of(st.none(), st.integers(0, 9)),
)


@st.composite
def ordered_events(draw, max_size: int = 60) -> list[Event]:
    """Events whose times never decrease per customer; customers interleave freely."""
    last = dict.fromkeys(CUSTOMERS, 0)
    events = []
    for n, (customer, type_, step, v) in enumerate(raw_events(draw, max_size)):
        last[customer] += step
        events.append(make_event(n, customer, type_, last[customer], v))
    return events


@st.composite
def globally_ordered_events(draw, max_size: int = 60) -> list[Event]:
    """Events whose times never decrease across the whole stream (a partition's watermark)."""
    now = 0
    events = []
    for n, (customer, type_, step, v) in enumerate(raw_events(draw, max_size)):
        now += step
        events.append(make_event(n, customer, type_, now, v))
    return events


@st.composite
def unordered_events(draw, max_size: int = 60) -> list[Event]:
    """Events in any order: each time drawn on its own from 0..200."""
    raw = raw_events(draw, max_size)
    times = draw(st.lists(st.integers(0, 200), min_size=len(raw), max_size=len(raw)))
    return [make_event(n, c, t, times[n], v) for n, (c, t, _, v) in enumerate(raw)]


# -- the oracle ------------------------------------------------------------------------------

Fired = tuple[str, str, list[str]]


class Oracle:
    """Brute force. ``in_order=False`` documents the engine's behaviour for late events: the
    window is kept sorted by event time (a late event goes after equal times), "newest" is the
    largest time in the window, the rule fires at that time and its cooldown runs from it, and
    the cooldown test uses the arriving event's own time (so once an event at or after
    cooldown_until has ended the cooldown, a later-arriving older event counts again)."""

    def __init__(self, rules: list[Spec], *, in_order: bool = True) -> None:
        self.rules = sorted(rules, key=lambda s: (-s.priority, s.name))
        self.in_order = in_order  # False: keep each window sorted by event time
        self.window: dict[tuple[str, str], list[tuple[int, str]]] = defaultdict(list)
        self.cooldown_until: dict[tuple[str, str], int] = {}

    def run(self, events: list[Event]) -> list[Fired]:
        out: list[Fired] = []
        for event in events:
            for spec in self.rules:
                if spec.matches(event):
                    out += self._match(spec, event)
        return out

    def _match(self, spec: Spec, event: Event) -> list[Fired]:
        key = (event.customer, spec.name)
        until = self.cooldown_until.get(key)
        if until is not None:
            if event.time < until:
                return []  # ignored: the cooldown runs
            del self.cooldown_until[key]
        window = self.window[key]
        window.append((event.time, event.id))
        if not self.in_order:
            window.sort(key=lambda item: item[0])  # stable: a late event goes after equal times
        newest = max(t for t, _ in window)
        window[:] = [(t, i) for t, i in window if t > newest - spec.window_ms]
        if len(window) >= spec.threshold:
            fired = [(spec.name, event.customer, [i for _, i in window])]
            window.clear()
            if spec.cooldown_ms:
                self.cooldown_until[key] = newest + spec.cooldown_ms  # the fire time: the window's newest
            return fired
        return []

    def customers_after_expire(self, watermark_ms: int) -> set[str]:
        """Who still holds state once windows and cooldowns that ended by the watermark go."""
        held = set()
        windows = {s.name: s.window_ms for s in self.rules}
        for (customer, name), window in self.window.items():
            if window and max(t for t, _ in window) > watermark_ms - windows[name]:
                held.add(customer)
        for (customer, _), until in self.cooldown_until.items():
            if until > watermark_ms:
                held.add(customer)
        return held


def fired(outputs) -> list[Fired]:
    return [
        (o.event["data"]["rule"], o.event["subject"], [r["id"] for r in o.event["data"]["events"]]) for o in outputs
    ]


# -- properties ------------------------------------------------------------------------------


@SETTINGS
@given(specs(), ordered_events())
def test_engine_matches_oracle_for_ordered_customers(rules, events):
    engine = PartitionEngine([s.compile() for s in rules])
    outputs = engine.on_events(events)
    oracle = Oracle(rules)
    assert fired(outputs) == oracle.run(events)
    # one output per firing, each with its own deterministic id
    assert len({o.id for o in outputs}) == len(outputs)
    assert all(o.topic == f"business.{o.event['data']['rule']}-fired" for o in outputs)


@SETTINGS
@given(specs(), ordered_events(), st.data())
def test_one_event_at_a_time_equals_one_batch(rules, events, data):
    whole = PartitionEngine([s.compile() for s in rules]).on_events(events)
    engine = PartitionEngine([s.compile() for s in rules])
    cuts = sorted(data.draw(st.lists(st.integers(0, len(events)), max_size=5)))
    pieces = [events[a:b] for a, b in zip([0, *cuts], [*cuts, len(events)], strict=True)]
    assert [o for piece in pieces for o in engine.on_events(piece)] == whole


@SETTINGS
@given(specs(), unordered_events())
def test_engine_matches_oracle_for_late_events(rules, events):
    engine = PartitionEngine([s.compile() for s in rules])
    assert fired(engine.on_events(events)) == Oracle(rules, in_order=False).run(events)


@SETTINGS
@given(specs(), ordered_events(), st.data())
def test_snapshot_and_resume_equal_one_uninterrupted_engine(rules, events, data):
    split = data.draw(st.integers(0, len(events)), label="split")
    uninterrupted = PartitionEngine([s.compile() for s in rules]).on_events(events)

    before = PartitionEngine([s.compile() for s in rules])
    outputs = before.on_events(events[:split])
    checkpoint = msgspec.msgpack.decode(msgspec.msgpack.encode(before.snapshot()))  # what the store keeps
    after = PartitionEngine([s.compile() for s in reversed(rules)], resume_state=checkpoint)
    assert after.snapshot() == checkpoint  # nothing lost or invented on the way
    outputs += after.on_events(events[split:])

    assert outputs == uninterrupted  # same firings, same ids, same CloudEvents


@SETTINGS
@given(specs(), globally_ordered_events(), st.data())
def test_expire_at_the_watermark_changes_no_output(rules, events, data):
    split = data.draw(st.integers(1, max(1, len(events))), label="split")
    expected = Oracle(rules).run(events)
    engine = PartitionEngine([s.compile() for s in rules])
    outputs = engine.on_events(events[:split])
    if events[:split]:
        engine.expire(events[split - 1].time)  # the partition's watermark: the newest time seen
    outputs += engine.on_events(events[split:])
    assert fired(outputs) == expected


@SETTINGS
@given(specs(), ordered_events(), st.integers(0, 400))
def test_expire_keeps_exactly_the_customers_with_live_state(rules, events, watermark_ms):
    engine = PartitionEngine([s.compile() for s in rules])
    engine.on_events(events)
    oracle = Oracle(rules)
    oracle.run(events)
    engine.expire(watermark_ms)
    assert set(engine.snapshot()["customers"]) == oracle.customers_after_expire(watermark_ms)
    assert engine.customers == len(oracle.customers_after_expire(watermark_ms))


@SETTINGS
@given(specs(), ordered_events())
def test_replay_gives_the_same_output_ids(rules, events):
    first = [o.id for o in PartitionEngine([s.compile() for s in rules]).on_events(events)]
    second = [o.id for o in PartitionEngine([s.compile() for s in rules]).on_events(events)]
    assert first == second
