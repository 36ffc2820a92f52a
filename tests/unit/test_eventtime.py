"""The partition's event-time clock: the reorder buffer, late events, and the guarantee that
disorder within the out-of-order bound gives exactly the outputs of the ordered stream."""

from __future__ import annotations

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.events.columns import EventColumns, encode_rows
from runtime.events.envelope import Event
from runtime.log.eventtime import EventClock, Packed
from runtime.rules import PartitionEngine, compile_rule


def ev(i: int, time: int, type_: str = "a", customer: str = "c") -> Event:
    return Event(f"e{i}", type_, time, customer, customer, "s", {}, 0)


def ids(events) -> list[str]:
    return [e.id for e in events]


def test_events_wait_for_the_watermark_and_leave_in_time_order():
    clock = EventClock(out_of_order_ms=10, lateness_ms=100)
    assert ids(clock.push([ev(0, 100), ev(1, 95)])) == []  # watermark 90
    assert ids(clock.push([ev(2, 108)])) == ["e1"]  # watermark 98
    assert clock.held == 2 and ids(clock.push([ev(3, 111)])) == ["e0"]  # watermark 101
    assert ids(clock.release(10**12)) == ["e2", "e3"]


def test_without_a_bound_each_batch_is_put_in_order_and_nothing_waits():
    clock = EventClock(out_of_order_ms=0, lateness_ms=0)
    assert ids(clock.push([ev(0, 30), ev(1, 10), ev(2, 20), ev(3, 10)])) == ["e1", "e3", "e2", "e0"]
    assert clock.held == 0


def test_late_is_measured_against_the_events_own_customer():
    """Lateness is per customer: an event is late when it is older than the newest event already
    evaluated for its own customer minus the allowed lateness; other customers' events (a live
    stream next to a backfill) never make it late."""
    rule = compile_rule({"name": "r", "when": {"event": "a"}, "then": [{"emit": "x"}]})
    engine = PartitionEngine([rule], lateness_ms=20)
    assert engine.late([ev(0, 0)]) == []  # nothing seen yet: nothing is late
    engine.on_events([ev(1, 100, customer="c"), ev(2, 10_000, customer="live")])
    late = engine.late([ev(3, 79, customer="c"), ev(4, 80, customer="c"), ev(5, 5, customer="backfill")])
    assert [(e.id, behind) for e, behind in late] == [("e3", 21)]


def test_arrivals_wait_for_the_requests_still_on_their_way():
    """Reorder wait 1 s, no event-time bound: an entry's events wait until the entries that
    arrived within 1 s after it are in, then leave in event-time order."""
    clock = EventClock(out_of_order_ms=0, lateness_ms=0, reorder_wait_ms=1000)
    assert ids(clock.push([ev(0, 300), ev(1, 310)], arrival_ms=10_000)) == []
    assert ids(clock.push([ev(2, 100), ev(3, 200)], arrival_ms=10_400)) == []  # the older request, later
    assert ids(clock.push([ev(4, 400)], arrival_ms=11_000)) == ["e2", "e3", "e0", "e1"]  # 10_000 has settled
    assert clock.watermark == 310 and clock.held == 1
    assert ids(clock.advance(11_399)) == [] and ids(clock.advance(12_000)) == ["e4"]  # idle: the wall clock


def test_the_wait_and_the_bound_both_hold_an_event():
    """The watermark is the lower of the two: an event leaves when both let it."""
    clock = EventClock(out_of_order_ms=50, lateness_ms=0, reorder_wait_ms=1000)
    clock.push([ev(0, 100)], arrival_ms=0)
    assert ids(clock.push([ev(1, 200)], arrival_ms=2000)) == ["e0"]  # arrival settles 100; 200 - 50 = 150
    assert ids(clock.push([ev(2, 120)], arrival_ms=2500)) == []  # watermark still min(150, 100)
    assert ids(clock.advance(3000)) == ["e2"]  # 200 has settled: min(150, 200); e1 waits for the bound


def test_the_arrival_wait_survives_a_checkpoint():
    clock = EventClock(out_of_order_ms=0, lateness_ms=0, reorder_wait_ms=1000)
    clock.push([ev(0, 300)], arrival_ms=10_000)
    wire = msgspec.msgpack.decode(msgspec.msgpack.encode(clock.snapshot()))
    resumed = EventClock(out_of_order_ms=0, lateness_ms=0, reorder_wait_ms=1000, resume=wire)
    assert ids(resumed.push([ev(1, 100)], arrival_ms=10_500)) == []
    assert ids(resumed.advance(11_000)) == ["e1", "e0"]


def test_a_packed_run_decodes_back_to_its_events():
    for n in (0, 1, 15, 16, 65_535, 65_536):
        events = [Event(f"e{i}", "a", i, "c", "c", "s", {"v": i} if i % 2 else {}, 7) for i in range(n)]
        packed = Packed.of(EventColumns.of(events))
        assert len(packed) == n and list(packed.columns()) == events
        read = EventColumns.decode(encode_rows(events, columns_from=0))[3:9]  # a slice of an entry as read
        assert list(Packed.of(read).columns()) == events[3:9]


@settings(max_examples=150, deadline=None)
@given(
    entries=st.lists(
        st.tuples(st.integers(0, 300), st.lists(st.integers(0, 60), min_size=1, max_size=12)), min_size=1, max_size=25
    ),
    pack_above=st.sampled_from([0, 1, 5]),
    resume_at=st.integers(0, 25),
    columns_from=st.sampled_from([0, 4, 16]),
)
def test_packed_runs_release_what_decoded_runs_do(entries, pack_above, resume_at, columns_from):
    """Arrival-stamped entries (arrival gaps, event times) through a clock that packs what it
    holds past ``pack_above``, each entry as a partition actor reads it from the log (columns
    from ``columns_from`` events on, rows below), and one that never packs and takes lists:
    checkpointed and resumed once on the way, the same events leave at the same steps, in the
    same order."""

    def run(pack_above: int, as_read: bool) -> list[list[str]]:
        clock = EventClock(out_of_order_ms=5, lateness_ms=0, reorder_wait_ms=40, pack_above=pack_above)
        steps, arrival, i = [], 1_000, 0
        for step, (gap, times) in enumerate(entries):
            if step == resume_at:
                wire = msgspec.msgpack.decode(msgspec.msgpack.encode(clock.snapshot()))
                clock = EventClock(
                    out_of_order_ms=5, lateness_ms=0, reorder_wait_ms=40, resume=wire, pack_above=pack_above
                )
            arrival += gap
            batch = [ev(i + k, 1_000 + t) for k, t in enumerate(times)]
            i += len(times)
            entry = EventColumns.decode(encode_rows(batch, columns_from)) if as_read else batch
            steps.append(ids(clock.push(entry, arrival_ms=arrival)))
            assert ids(clock.held_events()) == [e.id for e in sorted(clock.held_events(), key=lambda e: e.time)]
        steps.append(ids(clock.advance(arrival + 10_000)))
        steps.append(ids(clock.release(10**9)))  # what the event-time bound still held
        assert clock.held == 0
        return steps

    assert run(pack_above, as_read=True) == run(10_000, as_read=False)


def test_packed_runs_hold_a_fraction_of_the_memory():
    """The reason to pack: 20,000 held events of a realistic shape, decoded and packed."""
    import tracemalloc

    def held_bytes(pack_above: int) -> int:
        tracemalloc.start()
        clock = EventClock(out_of_order_ms=0, lateness_ms=0, reorder_wait_ms=60_000, pack_above=pack_above)
        for entry in range(20):
            batch = [
                Event(f"req-{entry}-{k:06d}", "ab.a", 1_000 + k, f"cust-{k % 997}", f"cust-{k % 997}", "bench", {}, 5)
                for k in range(1_000)
            ]
            clock.push(batch, arrival_ms=entry)
            del batch
        used = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        assert clock.held == 20_000
        return used

    assert held_bytes(0) < held_bytes(100_000) / 4  # ~75 B against ~370 B an event here


def test_how_far_behind_entries_arrive_is_counted():
    clock = EventClock(out_of_order_ms=0, lateness_ms=0)
    clock.push([ev(0, 10_000)])
    assert clock.last_delay_ms is None
    clock.push([ev(1, 9_000), ev(2, 12_000)])
    clock.push([ev(3, 11_990)])
    assert clock.max_delay_ms == 1000 and clock.delay_quantile_ms(0.99) == 1000 and clock.delay_quantile_ms(0.5) == 10


def test_held_events_survive_a_checkpoint():
    clock = EventClock(out_of_order_ms=50, lateness_ms=0)
    clock.push([ev(0, 100), ev(1, 90)])
    wire = msgspec.msgpack.decode(msgspec.msgpack.encode(clock.snapshot()))
    resumed = EventClock(out_of_order_ms=50, lateness_ms=0, resume=wire)
    assert resumed.newest == 100
    assert ids(resumed.push([ev(2, 160)])) == ["e1", "e0"]


def test_a_checkpoint_written_before_runs_still_resumes():
    """Checkpoints from before held runs were written as log entries hold the events as rows."""
    old = {"newest": 100, "settled": 100, "arrivals": [], "held": [ev(1, 90), ev(0, 100)]}
    wire = msgspec.msgpack.decode(msgspec.msgpack.encode(old))
    resumed = EventClock(out_of_order_ms=50, lateness_ms=0, resume=wire)
    assert resumed.held == 2 and ids(resumed.push([ev(2, 160)])) == ["e1", "e0"]


RULES = [
    {
        "name": "seq",
        "when": {"sequence": [{"event": "a"}, {"not": {"event": "c"}}, {"event": "b"}], "within": "30ms"},
        "then": [{"emit": "seq"}],
    },
    {
        "name": "abs",
        "when": {"absence": {"after": {"event": "a"}, "missing": {"event": "b"}, "within": "20ms"}},
        "then": [{"emit": "abs"}],
    },
    {"name": "cnt", "when": {"event": "c", "count": 3, "within": "25ms"}, "then": [{"emit": "cnt"}]},
    {
        "name": "dur",
        "when": {"duration": {"start": {"event": "a"}, "stop": {"event": "c"}, "gte": "15ms"}},
        "then": [{"emit": "dur"}],
    },
]
END = 10**12


def outputs(engine_outputs) -> list[tuple[str, str]]:
    return [(o.event["data"]["rule"], o.id) for o in engine_outputs]


@st.composite
def disordered(draw):
    """A stream, and an arrival order in which no event comes after the watermark
    (newest seen - bound) has passed it: each event arrives at its time plus a jitter <= bound."""
    bound = draw(st.sampled_from([0, 5, 20, 60]))
    n = draw(st.integers(1, 50))
    now, events = 0, []
    for i in range(n):
        now += draw(st.sampled_from([0, 1, 3, 8, 15]))
        events.append(ev(i, now, draw(st.sampled_from("abc")), draw(st.sampled_from(["x", "y"]))))
    jitter = [draw(st.integers(0, bound)) for _ in events]
    arrival = sorted(range(n), key=lambda i: (events[i].time + jitter[i], i))
    cuts = sorted(draw(st.sets(st.integers(1, max(n - 1, 1)), max_size=5)))
    return bound, events, [events[i] for i in arrival], cuts


@settings(max_examples=300, deadline=None)
@given(disordered())
def test_disorder_within_the_bound_gives_the_outputs_of_the_ordered_stream(case):
    bound, _, arrived, cuts = case
    ordered = sorted(arrived, key=lambda e: e.time)  # equal times: arrival order is the only order there is
    rules = [compile_rule(r) for r in RULES]
    reference = PartitionEngine(rules)
    expected = outputs(reference.on_events(ordered) + reference.on_timer(END))

    engine, clock, got = PartitionEngine(rules), EventClock(out_of_order_ms=bound, lateness_ms=0), []
    batches = [arrived[a:b] for a, b in zip([0, *cuts], [*cuts, len(arrived)], strict=True)]
    for batch in batches:  # as the partition runner does: push a log entry, then run timers
        got += outputs(engine.on_events(clock.push(batch)))
        got += outputs(engine.on_timer(clock.watermark))
    got += outputs(engine.on_events(clock.release(END)) + engine.on_timer(END))
    assert sorted(got) == sorted(expected)


@st.composite
def arrivals(draw):
    """Log entries (event times, arrival ms) and, after some, a pure advance of the arrival
    clock or a checkpoint and resume."""
    steps, arrival, n = [], 0, 0
    for _ in range(draw(st.integers(1, 12))):
        arrival += draw(st.integers(0, 40))
        times = draw(st.lists(st.integers(0, 60), max_size=6))
        steps.append(
            (arrival, [ev(n + k, t) for k, t in enumerate(times)], draw(st.sampled_from(["", "advance", "resume"])))
        )
        n += len(times)
    return draw(st.integers(0, 20)), draw(st.integers(0, 30)), steps


@settings(max_examples=300, deadline=None)
@given(arrivals())
def test_the_buffer_releases_what_a_brute_force_buffer_releases(case):
    """Against the definition: after each entry, every held event at or before the watermark
    leaves, ordered by (event time, arrival), whatever the entries' sizes and disorder."""
    out_of_order, wait, steps = case
    clock = EventClock(out_of_order_ms=out_of_order, lateness_ms=10**6, reorder_wait_ms=wait)
    held: list[tuple[int, int, Event]] = []
    order = 0
    for arrival, events, then in steps:
        for e in events:
            held.append((e.time, order, e))
            order += 1
        got = list(clock.push(events, arrival))
        if then == "advance":
            arrival += wait
            got += clock.advance(arrival)
        expected = sorted(h for h in held if h[0] <= clock.watermark)
        held = [h for h in held if h[0] > clock.watermark]
        assert ids(got) == ids(e for _, _, e in expected)
        assert clock.held == len(held)
        assert clock.oldest_held == (min(h[0] for h in held) if held else None)
        if then == "resume":
            snapshot = msgspec.msgpack.decode(msgspec.msgpack.encode(clock.snapshot()))
            runs = [e for start, body in snapshot["runs"] for e in EventColumns.decode(body)[start:]]  # arrival order
            assert ids(sorted(runs, key=lambda e: e.time)) == ids(e for _, _, e in sorted(held))
            clock = EventClock(out_of_order_ms=out_of_order, lateness_ms=10**6, reorder_wait_ms=wait, resume=snapshot)
