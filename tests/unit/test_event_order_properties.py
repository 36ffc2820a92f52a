"""Arrival order against event time, for every operator and for composed rules (issue 14).

For random streams of a few customers and random arrival orders, fed as the partition runner
does: each log entry (a batch, in arrival order) goes through ``EventClock.push``; what it
releases goes to ``PartitionEngine.on_events``; then the timers run up to the watermark; after
the last entry everything held is released and every timer runs.

(a) **Within the bound.** When every event arrives less than ``out_of_order_ms`` (event time)
    behind the newest event seen, the outputs are exactly those of the event-time-ordered
    stream (same output ids).
(b) **Beyond the bound** (bound 0, any permutation). Every output satisfies its operator's
    definition with respect to the events, as /tmp/esp14/spec.md states it. The checks below
    are written from that text, not from the engine:

    - within T is 0 <= delta < T, everywhere;
    - count / aggregate (sliding): at least n matching events (the aggregate passes its bound),
      all in (t - T, t] where t is the output's time;
    - tumbling: every counted event and the output in one bucket [k T, (k + 1) T);
    - all: one occurrence of every condition, newest - oldest < within, output at the newest;
      any: one of its conditions' occurrences;
    - sequence: step occurrences in step order, non-decreasing in event time, last - first <
      within, output at the last; no ``not`` event (strict: no other event of the steps' types)
      strictly between two steps among the events that had arrived when the output was made
      (one arriving later is a retraction, which ESP counts but cannot undo);
    - absence: no ``missing`` in (after, after + T) among the events that had arrived when the
      timer fired (the watermark passed after + T), and it never fires before that; the output
      is at after + T;
    - duration: no ``stop`` in (start, start + gte) among the events that had arrived when the
      watermark passed start + gte; never earlier; output at start + gte;
    - geofence: entry = an in-zone location whose latest earlier known location (known when
      the entry was seen) is out of the zone; a first known location is not an entry. Dwell:
      an entry, and no out-of-zone location in (entry, entry + dwell) among the events that
      had arrived when the watermark passed entry + dwell; output at entry + dwell;
    - composed conditions occur at: enter -> the entry; dwell -> entry + dwell; absence ->
      after + within; duration -> start + gte; and each must itself be valid as above.

    Ties (two events at the same ms) are where arrival order is the only order there is, so
    the "strictly between" checks leave them out.

(a') **Within the reorder wait** (arrival time, ``EventClock(reorder_wait_ms=...)``): when every
     event arrives less than the wait after the events newer than it, the outputs are exactly
     those of the ordered stream.
(c)  **Lateness is per customer**: whole customers lagging far behind the others (a backfill
     mixed with live traffic), each customer's own events within the allowed lateness: every
     output still satisfies its definition (as in (b)).

The same validity checks also run over the ordered stream's outputs in (a). The engine is
driven as ``runtime/partition.py`` does: built with the allowed lateness, ``on_events(released,
watermark=clock.watermark)`` after each log entry, then ``on_timer(clock.watermark)``.

At the end: small cases the properties found, kept as plain examples.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, note, settings
from hypothesis import strategies as st

from runtime.events.envelope import Event, parse_time_ms
from runtime.log.eventtime import PACK_ABOVE, EventClock
from runtime.rules import Output, PartitionEngine, compile_rule
from tests.unit.test_engine_groups import Leaf, children_st
from tests.unit.test_engine_groups import rule_doc as all_doc
from tests.unit.test_engine_sequences import doc as sequence_doc
from tests.unit.test_engine_sequences import step_matches, steps_st

# No "explain" phase: on a failure it reruns many variations, which takes minutes here.
PHASES = [Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink]
SETTINGS = settings(max_examples=75, deadline=None, phases=PHASES, suppress_health_check=[HealthCheck.too_slow])
CUSTOMERS = ["x", "y", "z"]
BASE = 1_790_000_000_000
END = BASE + 10**9
MAX_EVENTS = 32
STEP = st.sampled_from([0, 1, 2, 3, 5, 8])
ZONE = ["IN", "IN2"]
ZONE_DOC = {"cells": ZONE}
FINAL = 10**9  # the batch index of the final flush


# -- events --------------------------------------------------------------------------------------


def v(e: Event) -> int:
    return int(e.data.get("v", 0))


def kinds_of(types: list[str], top: int = 2) -> st.SearchStrategy[tuple[str, dict[str, Any]]]:
    return st.tuples(st.sampled_from(types), st.builds(lambda n: {"v": n}, st.integers(0, top)))


LOCATION = st.one_of(
    st.tuples(st.just("loc"), st.builds(lambda c: {"cell": c}, st.sampled_from([*ZONE, "OUT", "OUT2"]))),
    st.just(("loc", {"signal": 1})),  # no location: changes nothing
)


def cell(e: Event) -> str | None:
    return e.data.get("cell") if e.type == "loc" else None


def in_zone(e: Event) -> bool:
    return cell(e) in ZONE


@st.composite
def streams(draw, vocab: st.SearchStrategy[tuple[str, dict[str, Any]]]) -> list[tuple[Event, int, bool]]:
    """Events of a few customers, times non-decreasing in the order drawn, each with a delay
    (how long after its time it arrives: what decides the arrival order) and whether its log
    entry starts with it. All of an event in one tuple, so that a failing case shrinks by
    deleting events and by zeroing delays (towards the ordered stream)."""
    delay = st.one_of(st.integers(0, 12), st.integers(0, 100))  # small disorder, and any
    one = st.tuples(STEP, vocab, st.sampled_from(CUSTOMERS), delay, st.booleans())
    # four short lists, not one: plain lists are mostly short (windows would rarely fill), and a
    # drawn minimum length would stop a failing case from shrinking by deleting events
    drawn = [x for _ in range(4) for x in draw(st.lists(one, max_size=MAX_EVENTS // 4))]
    now, events = BASE, []
    for i, (step, (type_, data), customer, delay, starts) in enumerate(drawn):
        now += step
        events.append((Event(f"e{i}", type_, now, customer, customer, "s", data, 0), delay, starts))
    return events


def arrive(stream: list[tuple[Event, int, bool]], delay: Callable[[int], int]) -> list[list[Event]]:
    """Log entries in arrival order: each event arrives at its time + ``delay(its delay)``
    (equal arrival times: in the order drawn); an event drawn as starting an entry does."""
    order = sorted(range(len(stream)), key=lambda i: (stream[i][0].time + delay(stream[i][1]), i))
    entries: list[list[Event]] = []
    for i in order:
        event, _, starts = stream[i]
        if starts or not entries:
            entries.append([])
        entries[-1].append(event)
    return entries


# -- driving the engine as the partition runner does ------------------------------------------------


def _accepts_watermark(engine: PartitionEngine) -> bool:
    return "watermark" in inspect.signature(engine.on_events).parameters


def on_events(engine: PartitionEngine, events: list[Event], watermark: int | None) -> list[Output]:
    """``on_events(events, watermark=...)`` (the spec's API); the old one until it lands."""
    if _accepts_watermark(engine):
        return engine.on_events(events, watermark=watermark)
    return engine.on_events(events)


def engine_for(rules, lateness: int) -> PartitionEngine:
    """As the partition runner builds it: with the allowed lateness (when the engine takes it)."""
    if "lateness_ms" in inspect.signature(PartitionEngine).parameters:
        return PartitionEngine(rules, lateness_ms=lateness)
    return PartitionEngine(rules)


def flush(clock: EventClock) -> list[Event]:
    release = getattr(clock, "release", None) or clock.release_until
    return release(END)


def arrival_clock_moved(clock: EventClock, arrival_ms: int) -> list[Event]:
    """The arrival clock moved on with nothing new: what the reorder wait no longer holds (the
    spec's ``release_until``; ``advance`` in the code)."""
    move = getattr(clock, "release_until", None) or clock.advance
    return move(arrival_ms)


def clocked(rules, batches: list[list[Event]], bound: int, lateness: int) -> list[tuple[int, Output]]:
    """(batch index, output) for each output; FINAL for the flush after the last batch."""
    engine, clock = engine_for(rules, lateness), EventClock(out_of_order_ms=bound, lateness_ms=lateness)
    got: list[tuple[int, Output]] = []
    for i, batch in enumerate(batches):
        released = clock.push(batch)
        outs = on_events(engine, released, clock.watermark) + engine.on_timer(clock.watermark)
        got += [(i, o) for o in outs]
    outs = on_events(engine, flush(clock), clock.watermark) + engine.on_timer(END)  # as an idle partition
    return got + [(FINAL, o) for o in outs]


def ordered_run(rules, ordered: list[Event]) -> list[tuple[int, Output]]:
    """The ordered stream, one event per batch (batching never changes the outputs)."""
    engine, got = PartitionEngine(rules), []
    for i, e in enumerate(ordered):
        got += [(i, o) for o in engine.on_events([e])]
    return got + [(FINAL, o) for o in engine.on_timer(END)]


# -- what was known when --------------------------------------------------------------------------


class Known:
    """The arrival history of a run: which events had arrived by each batch."""

    def __init__(self, batches: list[list[Event]]) -> None:
        self.arrived = [e for b in batches for e in b]
        self.ends: list[int] = []  # per batch: how many events had arrived by its end
        self.marks: list[int | None] = []  # per batch: the newest event time by its end
        self.batch_of: dict[str, int] = {}
        mark, size = None, 0
        for i, b in enumerate(batches):
            for e in b:
                self.batch_of[e.id] = i
                mark = e.time if mark is None else max(mark, e.time)
            size += len(b)
            self.ends.append(size)
            self.marks.append(mark)
        self.by_id = {e.id: e for e in self.arrived}
        self.pos = {e.id: i for i, e in enumerate(self.arrived)}

    def by(self, batch: int) -> list[Event]:
        """Events arrived up to and including ``batch``."""
        return self.arrived if batch >= len(self.ends) else self.arrived[: self.ends[batch]]

    def passed(self, deadline: int) -> int:
        """The first batch after which the watermark (bound 0: the newest time) is at or past
        ``deadline``; FINAL if none."""
        return next((i for i, m in enumerate(self.marks) if m is not None and m >= deadline), FINAL)


@dataclass
class Out:
    kind: str
    batch: int
    customer: str
    time: int
    events: list[Event]
    ids: list[str]

    def __str__(self) -> str:
        evs = ", ".join(f"{e.id}:{e.type}@{e.time - BASE}{e.data}" for e in self.events)
        at = "final flush" if self.batch == FINAL else f"batch {self.batch}"
        return f"{self.kind} output at {self.time - BASE} for {self.customer} ({at}) with [{evs}]"


def parse(kind: str, batch: int, o: Output, known: Known) -> Out:
    ids = [m["id"] for m in o.event["data"]["events"]]
    return Out(kind, batch, o.event["subject"], parse_time_ms(o.event["time"]), [known.by_id[i] for i in ids], ids)


def mine(events: list[Event], customer: str) -> list[Event]:
    return [e for e in events if e.customer == customer]


def ok(condition: bool, out: Out, why: str) -> None:
    assert condition, f"{why}: {out}"


# -- definitions of each operator, from the spec ------------------------------------------------------


def check_window(out: Out, within: int, matches: Callable[[Event], bool], n: int) -> None:
    ok(len(set(out.ids)) == len(out.ids) and len(out.ids) >= n, out, f"fewer than {n} distinct events")
    ok(all(matches(e) for e in out.events), out, "an event that does not match the condition")
    times = [e.time for e in out.events]
    ok(max(times) - min(times) < within, out, f"newest - oldest >= within {within}")
    ok(max(times) <= out.time, out, "output time before the window's newest event (t, the window's end)")
    ok(out.time - within < min(times), out, f"an event outside (t - {within}, t]")


def timer_fired_in_time(out: Out, deadline: int, known: Known) -> None:
    ok(
        out.batch == FINAL or known.passed(deadline) <= out.batch,
        out,
        f"fired before the watermark reached {deadline - BASE}",
    )


def none_between(out: Out, events: list[Event], lo: int, hi: int, matches: Callable[[Event], bool], why: str) -> None:
    bad = [e for e in events if lo < e.time < hi and matches(e) and e.id not in out.ids]
    ok(not bad, out, f"{why} ({', '.join(f'{e.id}@{e.time - BASE}' for e in bad)} strictly inside)")


def entry_valid(out: Out, entry: Event, known: Known) -> None:
    """An in-zone location whose latest earlier known location (known when it arrived; at equal
    times, the one that arrived earlier) is out of the zone."""
    ok(in_zone(entry), out, "the entry is not in the zone")
    pos = known.pos
    seen = [e for e in mine(known.by(known.batch_of[entry.id]), out.customer) if cell(e) is not None]
    earlier = [e for e in seen if (e.time, pos[e.id]) < (entry.time, pos[entry.id])]
    ok(bool(earlier), out, "an entry with no earlier known location (a first location is not an entry)")
    latest = max(earlier, key=lambda e: (e.time, pos[e.id]))
    ok(not in_zone(latest), out, f"the latest earlier location ({latest.id}@{latest.time - BASE}) is in the zone")


def dwell_valid(out: Out, entry: Event, dwell: int, known: Known) -> int:
    entry_valid(out, entry, known)
    deadline = entry.time + dwell
    timer_fired_in_time(out, deadline, known)
    at_timer = known.by(min(out.batch, known.passed(deadline)))
    left = lambda e: cell(e) is not None and not in_zone(e)  # noqa: E731
    none_between(out, mine(at_timer, out.customer), entry.time, deadline, left, "left the zone during the dwell")
    return deadline


def absence_valid(out: Out, after: Event, within: int, missing: Callable[[Event], bool], known: Known) -> int:
    deadline = after.time + within
    timer_fired_in_time(out, deadline, known)
    at_timer = known.by(min(out.batch, known.passed(deadline)))
    none_between(out, mine(at_timer, out.customer), after.time, deadline, missing, "a 'missing' event in the wait")
    return deadline


def duration_valid(out: Out, start: Event, gte: int, stop: Callable[[Event], bool], known: Known) -> int:
    deadline = start.time + gte
    timer_fired_in_time(out, deadline, known)
    at_timer = known.by(min(out.batch, known.passed(deadline)))
    none_between(out, mine(at_timer, out.customer), start.time, deadline, stop, "a 'stop' before gte")
    return deadline


def only(out: Out, types: set[str]) -> None:
    ok(all(e.customer == out.customer for e in out.events), out, "another customer's event")
    ok(all(e.type in types for e in out.events), out, f"an event not of {sorted(types)}")


def one(out: Out, type_: str) -> Event:
    found = [e for e in out.events if e.type == type_]
    ok(len(found) == 1, out, f"not exactly one {type_!r} event")
    return found[0]


# -- the operators and composed rules ------------------------------------------------------------------


@dataclass(frozen=True)
class Kind:
    name: str
    params: st.SearchStrategy[dict[str, Any]]
    doc: Callable[[dict[str, Any]], dict[str, Any]]
    vocab: Callable[[dict[str, Any]], st.SearchStrategy[tuple[str, dict[str, Any]]]]
    check: Callable[[dict[str, Any], Out, Known], None]


def rule(when: dict[str, Any]) -> dict[str, Any]:
    return {"name": "r", "when": when, "then": [{"emit": "r"}]}


WITHIN = st.sampled_from([5, 10, 20])
A1 = lambda e: e.type == "a" and v(e) >= 1  # noqa: E731


def check_count(p, out, known):
    only(out, {"a"})
    check_window(out, p["T"], A1, p["n"])


def check_tumbling(p, out, known):
    only(out, {"a"})
    ok(len(out.ids) >= p["n"] and all(A1(e) for e in out.events), out, f"fewer than {p['n']} matching events")
    buckets = {e.time // p["T"] for e in out.events} | {out.time // p["T"]}
    ok(len(buckets) == 1, out, f"events (and output) not in one bucket of {p['T']}")


def check_aggregate(p, out, known):
    only(out, {"a"})
    check_window(out, p["T"], lambda e: e.type == "a" and "v" in e.data, 1)
    values = [v(e) for e in out.events]
    if p["agg"] == "sum":
        ok(sum(values) >= p["bound"], out, f"sum {sum(values)} < {p['bound']}")
    else:
        ok(len(set(values)) >= p["bound"], out, f"distinct {len(set(values))} < {p['bound']}")


def check_all(p, out, known):
    children: list[list[Leaf]] = p["children"]
    only(out, {"a", "b", "c"})
    hits = [[e for e in out.events if any(leaf.matches(e) for leaf in child)] for child in children]
    ok(all(hits), out, "a condition of the 'all' with no occurrence")
    ok(all(any(leaf.matches(e) for child in children for leaf in child) for e in out.events), out, "a stray event")
    times = [e.time for e in out.events]
    ok(max(times) - min(times) < p["T"], out, f"newest - oldest >= within {p['T']}")
    ok(out.time == max(times), out, "output time is not the newest occurrence")


def check_any(p, out, known):
    only(out, {"a", "b"})
    if len(out.events) == 1 and out.events[0].type == "a":
        ok(v(out.events[0]) >= 2, out, "'a' without data.v >= 2")
        ok(out.time == out.events[0].time, out, "output time is not the occurrence")
    else:
        check_window(out, p["T"], lambda e: e.type == "b", 2)


def check_sequence(p, out, known):
    steps, guards, within, strict = p["steps"], p["guards"], p["T"], p["strict"]
    only(out, {"a", "b", "c", "x"})
    ok(len(out.events) == len(steps), out, "not one event per step")
    ok(all(step_matches(s, e) for s, e in zip(steps, out.events, strict=True)), out, "an event not matching its step")
    times = [e.time for e in out.events]
    ok(times == sorted(times), out, "steps not in event-time order")
    ok(times[-1] - times[0] < within, out, f"last - first >= within {within}")
    ok(out.time == times[-1], out, "output time is not the last step's")
    seen = mine(known.by(out.batch), out.customer)
    types = {s[0] for s in steps}
    for k in range(1, len(steps)):
        lo, hi = times[k - 1], times[k]
        if guards[k] is not None:
            guard = guards[k]
            none_between(
                out, seen, lo, hi, lambda e, g=guard: step_matches(g, e), f"a 'not' event between steps {k - 1} and {k}"
            )
        if strict:
            none_between(
                out,
                seen,
                lo,
                hi,
                lambda e: e.type in types,
                f"strict: another step-type event between steps {k - 1} and {k}",
            )


MISSING_B = lambda e: e.type == "b"  # noqa: E731


def check_absence(p, out, known):
    only(out, {"a"})
    after = one(out, "a")
    ok(v(after) >= 1, out, "'after' without data.v >= 1")
    deadline = absence_valid(out, after, p["W"], MISSING_B, known)
    ok(out.time == deadline, out, "output time is not after + within")


STOP_P = lambda e: e.type == "p"  # noqa: E731


def check_duration(p, out, known):
    only(out, {"s"})
    deadline = duration_valid(out, one(out, "s"), p["G"], STOP_P, known)
    ok(out.time == deadline, out, "output time is not start + gte")


def check_enter(p, out, known):
    only(out, {"loc"})
    entry = one(out, "loc")
    entry_valid(out, entry, known)
    ok(out.time == entry.time, out, "output time is not the entry's")


def check_dwell(p, out, known):
    only(out, {"loc"})
    deadline = dwell_valid(out, one(out, "loc"), p["D"], known)
    ok(out.time == deadline, out, "output time is not entry + dwell")


def check_enter_then_c(p, out, known):
    only(out, {"loc", "c"})
    entry, c = one(out, "loc"), one(out, "c")
    ok(out.ids == [entry.id, c.id], out, "steps out of order in the output")
    entry_valid(out, entry, known)
    ok(v(c) >= 1, out, "'c' without data.v >= 1")
    ok(entry.time <= c.time, out, "c before the entry")
    ok(c.time - entry.time < p["T"], out, f"c - entry >= within {p['T']}")
    ok(out.time == c.time, out, "output time is not the last step's")


def check_absence_and_c(p, out, known):
    only(out, {"a", "c"})
    after, c = one(out, "a"), one(out, "c")
    ok(v(after) >= 1, out, "'after' without data.v >= 1")
    deadline = absence_valid(out, after, p["W"], MISSING_B, known)
    ok(abs(deadline - c.time) < p["T"], out, f"|absence deadline - c| >= within {p['T']}")
    ok(out.time == max(deadline, c.time), out, "output time is not the newest occurrence")


def check_duration_then_c(p, out, known):
    only(out, {"s", "c"})
    start, c = one(out, "s"), one(out, "c")
    ok(out.ids == [start.id, c.id], out, "steps out of order in the output")
    occurred = duration_valid(out, start, p["G"], STOP_P, known)
    ok(occurred <= c.time, out, "c before the duration's occurrence (start + gte)")
    ok(c.time - occurred < p["T"], out, f"c - (start + gte) >= within {p['T']}")
    ok(out.time == c.time, out, "output time is not the last step's")


def check_dwell_or_c(p, out, known):
    only(out, {"loc", "c"})
    if len(out.events) == 1 and out.events[0].type == "c":
        ok(v(out.events[0]) >= 2, out, "'c' without data.v >= 2")
        ok(out.time == out.events[0].time, out, "output time is not the occurrence")
        return
    deadline = dwell_valid(out, one(out, "loc"), p["D"], known)
    ok(out.time == deadline, out, "output time is not entry + dwell")


def _absence(w: int) -> dict[str, Any]:
    return {"absence": {"after": {"event": "a", "where": "data.v >= 1"}, "missing": {"event": "b"}, "within": f"{w}ms"}}


def _duration(g: int) -> dict[str, Any]:
    return {"duration": {"start": {"event": "s"}, "stop": {"event": "p"}, "gte": f"{g}ms"}}


@st.composite
def sequence_params(draw) -> dict[str, Any]:
    steps = draw(steps_st)
    guards = [None] + [
        draw(st.one_of(st.none(), st.tuples(st.sampled_from(["a", "b", "c", "x"]), st.integers(0, 2))))
        for _ in steps[1:]
    ]
    return {"steps": steps, "guards": guards, "T": draw(st.sampled_from([3, 6, 10, 20])), "strict": draw(st.booleans())}


def P(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(fields)


def count_doc(p, **extra):
    return rule({"event": "a", "where": "data.v >= 1", "count": p["n"], "within": f"{p['T']}ms", **extra})


def aggregate_doc(p):
    return rule({"event": "a", p["agg"]: {"of": "data.v", "gte": p["bound"]}, "within": f"{p['T']}ms"})


KINDS = [
    Kind("count sliding", P(n=st.integers(2, 4), T=WITHIN), count_doc, lambda p: kinds_of(["a", "b"]), check_count),
    Kind(
        "count tumbling",
        P(n=st.integers(2, 3), T=WITHIN),
        lambda p: count_doc(p, window="tumbling"),
        lambda p: kinds_of(["a", "b"]),
        check_tumbling,
    ),
    Kind(
        "aggregate",
        st.one_of(
            P(agg=st.just("sum"), bound=st.integers(3, 7), T=WITHIN),
            P(agg=st.just("distinct"), bound=st.integers(2, 3), T=WITHIN),
        ),
        aggregate_doc,
        lambda p: kinds_of(["a", "b"], 3),
        check_aggregate,
    ),
    Kind(
        "all",
        P(children=children_st, T=st.sampled_from([3, 10, 30])),
        lambda p: all_doc(p["children"], p["T"], 0),
        lambda p: kinds_of(["a", "b", "c"], 3),
        check_all,
    ),
    Kind(
        "any",
        P(T=WITHIN),
        lambda p: rule(
            {"any": [{"event": "a", "where": "data.v >= 2"}, {"event": "b", "count": 2, "within": f"{p['T']}ms"}]}
        ),
        lambda p: kinds_of(["a", "b", "c"]),
        check_any,
    ),
    Kind(
        "sequence (not, strict)",
        sequence_params(),
        lambda p: sequence_doc(p["steps"], p["guards"], p["T"], p["strict"]),
        lambda p: kinds_of(["a", "b", "c", "x"]),
        check_sequence,
    ),
    Kind(
        "sequence [a, not g, b] / strict [a, b]",
        st.fixed_dictionaries(
            {"steps": st.just([("a", 0), ("b", 0)]), "T": st.sampled_from([10, 30]), "strict": st.booleans()}
        ).map(lambda p: {**p, "guards": [None, None if p["strict"] else ("g", 0)]}),
        lambda p: sequence_doc(p["steps"], p["guards"], p["T"], p["strict"]),
        lambda p: kinds_of(["a", "b", "g"], 0),
        check_sequence,
    ),
    Kind(
        "absence", P(W=WITHIN), lambda p: rule(_absence(p["W"])), lambda p: kinds_of(["a", "b", "x"], 1), check_absence
    ),
    Kind(
        "duration",
        P(G=WITHIN),
        lambda p: rule(_duration(p["G"])),
        lambda p: kinds_of(["s", "p", "x"], 1),
        check_duration,
    ),
    Kind(
        "geofence enter",
        P(),
        lambda p: rule({"geofence": {"event": "loc", "zone": ZONE_DOC, "enter": True}}),
        lambda p: LOCATION,
        check_enter,
    ),
    Kind(
        "geofence dwell",
        P(D=WITHIN),
        lambda p: rule({"geofence": {"event": "loc", "zone": ZONE_DOC, "dwell": f"{p['D']}ms"}}),
        lambda p: LOCATION,
        check_dwell,
    ),
    Kind(
        "sequence [enter, c]",
        P(T=st.sampled_from([5, 10, 20, 40])),
        lambda p: rule(
            {
                "sequence": [
                    {"geofence": {"event": "loc", "zone": ZONE_DOC, "enter": True}},
                    {"event": "c", "where": "data.v >= 1"},
                ],
                "within": f"{p['T']}ms",
            }
        ),
        lambda p: st.one_of(LOCATION, kinds_of(["c"], 1)),
        check_enter_then_c,
    ),
    Kind(
        "all [absence, c]",
        P(W=WITHIN, T=WITHIN),
        lambda p: rule({"all": [_absence(p["W"]), {"event": "c"}], "within": f"{p['T']}ms"}),
        lambda p: kinds_of(["a", "b", "c"], 1),
        check_absence_and_c,
    ),
    Kind(
        "sequence [duration, c]",
        P(G=WITHIN, T=WITHIN),
        lambda p: rule({"sequence": [_duration(p["G"]), {"event": "c"}], "within": f"{p['T']}ms"}),
        lambda p: kinds_of(["s", "p", "c"], 1),
        check_duration_then_c,
    ),
    Kind(
        "any [dwell, c]",
        P(D=WITHIN),
        lambda p: rule(
            {
                "any": [
                    {"geofence": {"event": "loc", "zone": ZONE_DOC, "dwell": f"{p['D']}ms"}},
                    {"event": "c", "where": "data.v >= 2"},
                ]
            }
        ),
        lambda p: st.one_of(LOCATION, kinds_of(["c"])),
        check_dwell_or_c,
    ),
]
IDS = [k.name for k in KINDS]


def describe(batches: list[list[Event]]) -> str:
    """The arrival order, batch by batch: id:type@ms-after-BASE/customer{data}."""
    return " | ".join(" ".join(f"{e.id}:{e.type}@{e.time - BASE}/{e.customer}{e.data}" for e in b) for b in batches)


def validate(kind: Kind, p: dict[str, Any], outputs: list[tuple[int, Output]], batches: list[list[Event]]) -> None:
    known = Known(batches)
    for batch, o in outputs:
        kind.check(p, parse(kind.name, batch, o, known), known)


# -- (a) within the bound -------------------------------------------------------------------------------


@st.composite
def within_bound(draw, kind: Kind):
    """Params, and log entries in which each event arrives less than the bound (event time)
    behind the newest event seen: it arrives at its time + a delay below the bound."""
    p = draw(kind.params)
    bound = draw(st.sampled_from([0, 1, 4, 10, 30]))
    lateness = draw(st.sampled_from([0, 5, 1000]))
    entries = arrive(draw(streams(kind.vocab(p))), lambda d: d % bound if bound else 0)
    return p, entries, bound, lateness


@pytest.mark.parametrize("kind", KINDS, ids=IDS)
def test_within_the_bound_outputs_equal_the_ordered_streams(kind: Kind) -> None:
    @SETTINGS
    @given(within_bound(kind))
    def prop(case) -> None:
        p, batches, bound, lateness = case
        arrived = [e for b in batches for e in b]
        note(f"params {p}; bound {bound}; lateness {lateness}; arrival: {describe(batches)}")
        rules = [compile_rule(kind.doc(p))]
        ordered = sorted(arrived, key=lambda e: e.time)  # equal times: arrival order is the only order
        reference = ordered_run(rules, ordered)
        validate(kind, p, reference, [[e] for e in ordered])  # the ordered stream is valid too
        got = clocked(rules, batches, bound, lateness)
        assert sorted(o.id for _, o in got) == sorted(o.id for _, o in reference)

    prop()


# -- (b) beyond the bound ------------------------------------------------------------------------------


@st.composite
def any_order(draw, kind: Kind):
    """Params, and log entries in any order: delays up to 100 ms, far beyond any window here."""
    p = draw(kind.params)
    return p, arrive(draw(streams(kind.vocab(p))), lambda d: d), 10**9  # within the allowed lateness


@pytest.mark.parametrize("kind", KINDS, ids=IDS)
def test_beyond_the_bound_no_output_violates_its_operator(kind: Kind) -> None:
    @SETTINGS
    @given(any_order(kind))
    def prop(case) -> None:
        p, batches, lateness = case
        note(f"params {p}; lateness {lateness}; arrival: {describe(batches)}")
        rules = [compile_rule(kind.doc(p))]
        validate(kind, p, clocked(rules, batches, 0, lateness), batches)

    prop()


# -- (a') within the reorder wait (arrival time) -------------------------------------------------------


@st.composite
def within_reorder_wait(draw, kind: Kind):
    """Params, and log entries each appended at an arrival time (ms, on the scale of event
    times, as for live traffic): each event arrives less than the reorder wait after its own
    time, so less than the wait after any newer event that came before it. One log entry per
    arrival ms."""
    p = draw(kind.params)
    wait = draw(st.sampled_from([1, 4, 10, 30]))
    lateness = draw(st.sampled_from([0, 5, 1000]))
    pack_above = draw(st.sampled_from([0, 2, PACK_ABOVE]), label="pack_above")  # held runs packed, or decoded
    stream = draw(streams(kind.vocab(p)))
    arrival = {e.id: e.time + d % wait for e, d, _ in stream}
    entries: list[tuple[int, list[Event]]] = []
    for e in sorted((e for e, _, _ in stream), key=lambda e: arrival[e.id]):  # stable: the order drawn
        if entries and entries[-1][0] == arrival[e.id]:
            entries[-1][1].append(e)
        else:
            entries.append((arrival[e.id], [e]))
    return p, entries, wait, lateness, pack_above


@pytest.mark.parametrize("kind", KINDS, ids=IDS)
def test_within_the_reorder_wait_outputs_equal_the_ordered_streams(kind: Kind) -> None:
    @SETTINGS
    @given(within_reorder_wait(kind))
    def prop(case) -> None:
        p, entries, wait, lateness, pack_above = case
        note(
            f"params {p}; reorder wait {wait}; lateness {lateness}; entries (arrival ms - BASE: events): "
            + " | ".join(f"{at - BASE}: {describe([b])}" for at, b in entries)
        )
        rules = [compile_rule(kind.doc(p))]
        arrived = [e for _, b in entries for e in b]
        ordered = sorted(arrived, key=lambda e: e.time)  # equal times: arrival order
        expected = sorted(o.id for _, o in ordered_run(rules, ordered))

        engine = engine_for(rules, lateness)
        clock = EventClock(out_of_order_ms=0, lateness_ms=lateness, reorder_wait_ms=wait, pack_above=pack_above)
        got: list[Output] = []
        for at, batch in entries:  # time passes until the entry's append time, then it arrives
            got += on_events(engine, arrival_clock_moved(clock, at), clock.watermark)
            got += engine.on_timer(clock.watermark)
            got += on_events(engine, clock.push(batch, arrival_ms=at), clock.watermark)
            got += engine.on_timer(clock.watermark)
        got += on_events(engine, arrival_clock_moved(clock, END + wait), clock.watermark) + engine.on_timer(END)
        assert sorted(o.id for o in got) == expected

    prop()


# -- (c) lateness is per customer: another customer far behind (a backfill) changes nothing ----------


@st.composite
def backfill_mix(draw, kind: Kind):
    """Params, and log entries in which whole customers lag behind the others by up to 1 s (a
    backfill mixed with live traffic; far more than the allowed lateness), while each event
    arrives at most the allowed lateness behind its own customer's newest: no event is late
    for its own customer, so the spec's guarantee holds for all of them."""
    p = draw(kind.params)
    lateness = draw(st.sampled_from([0, 3, 10]))
    lag = {c: draw(st.sampled_from([0, 0, 50, 1000]), label=f"lag of {c}") for c in CUSTOMERS}
    stream = draw(streams(kind.vocab(p)))
    by_id = {e.id: e for e, _, _ in stream}
    key = {e.id: e.time + lag[e.customer] + d % (lateness + 1) for e, d, _ in stream}
    starts = {e.id: s for e, _, s in stream}
    entries: list[list[Event]] = []
    for e in sorted(by_id.values(), key=lambda e: key[e.id]):  # stable: the order drawn
        if starts[e.id] or not entries:
            entries.append([])
        entries[-1].append(e)
    return p, entries, lateness


@pytest.mark.parametrize("kind", KINDS, ids=IDS)
def test_a_customer_far_behind_makes_no_output_invalid(kind: Kind) -> None:
    @SETTINGS
    @given(backfill_mix(kind))
    def prop(case) -> None:
        p, batches, lateness = case
        note(f"params {p}; lateness {lateness}; arrival: {describe(batches)}")
        rules = [compile_rule(kind.doc(p))]
        validate(kind, p, clocked(rules, batches, 0, lateness), batches)

    prop()


# -- small cases the properties found, kept as examples ----------------------------------------------

M = 60_000


def ev(i: str, kind: str, at: int, customer: str = "y", **data: Any) -> Event:
    return Event(i, kind, BASE + at, customer, customer, "s", data, 0)


def outputs_of(
    when: dict[str, Any], entries: list[list[Event]], lateness: int = 3_600_000
) -> list[tuple[int, list[str]]]:
    """(output time - BASE, event ids) of a rule over log entries (bound 0, the default lateness)."""
    got = clocked([compile_rule(rule(when))], entries, 0, lateness)
    return [(parse_time_ms(o.event["time"]) - BASE, [m["id"] for m in o.event["data"]["events"]]) for _, o in got]


def test_a_backfilling_customer_does_not_run_another_customers_timers_ahead():
    """y: order at 0, paid at 5 min (absence of 'b' within 10 min: no output). The log entry
    with y's payment also holds q's event at 20 min and an event of z from 2 h ago (a backfill,
    more than the allowed lateness behind): put in time order, z's event comes first and must
    not fire y's wait before y's payment (which lies before the deadline) is evaluated."""
    absence = {"absence": {"after": {"event": "a"}, "missing": {"event": "b"}, "within": "10m"}}
    entries = [[ev("a0", "a", 0)], [ev("b5", "b", 5 * M), ev("q20", "x", 20 * M, "q"), ev("z", "x", -120 * M, "z")]]
    assert outputs_of(absence, entries) == []


def test_an_ordered_log_entry_spanning_more_than_the_allowed_lateness_gives_the_ordered_outputs():
    """Every event in time order, nothing late: y starts a call at 0 and ends it at 5 min (a
    duration of at least 10 min: no output). The second log entry (an NDJSON batch of history,
    in order) spans 2 h: q at 0, y's stop at 5 min, q at 2 h. Its first event is more than the
    allowed lateness (1 h) behind the watermark the entry moves to, but that must not run y's
    timer (due at 10 min) before y's stop at 5 min is evaluated."""
    duration = {"duration": {"start": {"event": "s"}, "stop": {"event": "p"}, "gte": "10m"}}
    entries = [[ev("s0", "s", 0)], [ev("q0", "x", 0, "q"), ev("p5", "p", 5 * M), ev("q120", "x", 120 * M, "q")]]
    assert outputs_of(duration, entries) == []


def test_a_late_event_completing_a_window_outputs_at_the_windows_end():
    """count 2 within 5 ms: a at 1, then a at 0 arrives: the window [0, 1] fires; the output's
    time is the window's end (1), not the late event's time (0), so the output never lists an
    event after its own time. Likewise for 'all'."""
    entries = [[ev("a1", "a", 1)], [ev("a0", "a", 0)]]
    assert outputs_of({"event": "a", "count": 2, "within": "5ms"}, entries) == [(1, ["a0", "a1"])]
    entries = [[ev("a1", "a", 1)], [ev("b0", "b", 0)]]
    assert outputs_of({"all": [{"event": "a"}, {"event": "b"}], "within": "5ms"}, entries) == [(1, ["a1", "b0"])]


def test_a_not_event_seen_before_a_late_first_step_still_guards_it():
    """a, not g, b within 20 ms: g at 5 arrives, then a at 3 (late), then b at 8. g lies after
    the partial's last step (a at 3) and before b: no output may hold a at 3 and b at 8."""
    sequence = {"sequence": [{"event": "a"}, {"not": {"event": "g"}}, {"event": "b"}], "within": "20ms"}
    entries = [[ev("g5", "g", 5)], [ev("a3", "a", 3)], [ev("b8", "b", 8)]]
    assert all(ids != ["a3", "b8"] for _, ids in outputs_of(sequence, entries))


def test_strict_an_event_seen_before_a_late_first_step_still_breaks_the_match():
    """strict a then b within 20 ms: b at 5 arrives, then a at 3 (late), then b at 8: b at 5
    lies between a at 3 and b at 8, so (a at 3, b at 8) is not a strict match."""
    sequence = {"sequence": [{"event": "a"}, {"event": "b"}], "within": "20ms", "strict": True}
    entries = [[ev("b5", "b", 5)], [ev("a3", "a", 3)], [ev("b8", "b", 8)]]
    assert all(ids != ["a3", "b8"] for _, ids in outputs_of(sequence, entries))
