"""Duration (a state from a start to a stop event lasting at least T), drawn as timelines and
checked against a brute-force oracle."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.events.envelope import Event
from runtime.rules import PartitionEngine, compile_rule

M = 60_000


def ev(i: int, type_: str, minute: float, customer: str = "c") -> Event:
    return Event(f"e{i}", type_, int(minute * M), customer, customer, "s", {}, 0)


def engine(gte: str = "10m", cooldown: str = "0ms") -> PartitionEngine:
    when = {"duration": {"start": {"event": "call.start"}, "stop": {"event": "call.end"}, "gte": gte}}
    rule = {"name": "long-call", "when": when, "then": [{"emit": "long-call"}], "cooldown": cooldown}
    return PartitionEngine([compile_rule(rule)])


def starts(outputs) -> list[str]:
    return [o.event["data"]["events"][0]["id"] for o in outputs]


def test_timer_fires_while_the_state_is_open():
    """start 0 ... timer at 10 fires; the stop at 15 fires nothing more"""
    e = engine()
    assert e.on_events([ev(0, "call.start", 0)]) == []
    assert e.next_timer_at() == 10 * M
    assert e.on_timer(10 * M - 1) == []
    assert starts(e.on_timer(10 * M)) == ["e0"]
    assert e.on_events([ev(1, "call.end", 15)]) == []


def test_short_state_is_cancelled_by_its_stop():
    """start 0, stop 9 (too short); start 20, stop 31 arrives before the timer ran: fires"""
    e = engine()
    assert e.on_events([ev(0, "call.start", 0), ev(1, "call.end", 9)]) == []
    assert e.next_timer_at() is None
    assert starts(e.on_events([ev(2, "call.start", 20), ev(3, "call.end", 31)])) == ["e2"]
    assert e.next_timer_at() is None
    e.expire(31 * 60_000)  # the newest stop is remembered (to place a late start) until it expires
    assert e.customers == 0  # nothing open, nothing held


def test_timer_and_late_stop_give_the_same_output_id():
    a, b = engine(), engine()
    a.on_events([ev(0, "call.start", 0)])
    by_timer = a.on_timer(10 * M)
    by_stop = b.on_events([ev(0, "call.start", 0), ev(1, "call.end", 12)])
    assert [o.id for o in by_timer] == [o.id for o in by_stop] != []


def test_second_start_while_open_does_not_restart_the_clock():
    e = engine()
    assert e.on_events([ev(0, "call.start", 0), ev(1, "call.start", 5)]) == []
    assert starts(e.on_timer(10 * M)) == ["e0"]


def test_snapshot_keeps_the_open_state_and_its_timer():
    e = engine()
    e.on_events([ev(0, "call.start", 0)])
    resumed = PartitionEngine(list(e.rules.values()), resume_state=e.snapshot())
    assert resumed.next_timer_at() == 10 * M
    assert starts(resumed.on_timer(11 * M)) == ["e0"]


STEP = st.tuples(st.sampled_from(["call.start", "call.end", "tick"]), st.integers(0, 8))


def oracle(stream: list[tuple[str, int]], gte: int) -> list[str]:
    """Periods: a start opens one when none is open; a stop closes it. A period fires once if it
    lasted gte: time (a tick or any event) reached start + gte while it was open."""
    fired, open_at, open_id, done = [], None, None, False
    for i, (kind, t) in enumerate(stream):
        if open_at is not None and not done and t >= open_at + gte:
            fired.append(open_id)
            done = True
        if kind == "call.end" and open_at is not None:
            open_at, done = None, False
        elif kind == "call.start" and open_at is None:
            open_at, open_id, done = t, f"e{i}", False
    return fired


@settings(max_examples=300, deadline=None)
@given(st.lists(STEP, max_size=40), st.integers(1, 20))
def test_against_the_oracle(steps, gte):
    """Events with non-decreasing times; a 'tick' runs the timers at that time."""
    e = engine(gte=f"{gte}ms")
    stream, now, got = [], 0, []
    for i, (kind, step) in enumerate(steps):
        now += step
        stream.append((kind, now))
        if kind == "tick":
            got += starts(e.on_timer(now))
        else:
            got += starts(e.on_events([Event(f"e{i}", kind, now, "c", "c", "s", {}, 0)]))
    assert got == oracle(stream, gte)
