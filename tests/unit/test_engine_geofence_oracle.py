"""Geofence enter and dwell against a brute-force oracle (hypothesis).

The oracle works on whole timelines, not on a state machine like the engine's. Per customer,
the events with a cell are the known positions (events without one are ignored). A *stay*
starts at a position inside the zone whose previous known position was outside (the first known
position is no entry) and ends at the next position outside, if any. With cooldown C:

- enter: a stay fires at its start when that is at or after the previous firing + C;
- dwell D: a stay that lasts at least D fires at start + D, when its start is at or after
  the previous firing + C (a stay entered during the cooldown never fires). A timer due at or
  before an event's time fires before it (the engine's contract), so a stay that ends exactly
  at start + D fires.

The engine gets the events in time order, in batches of random sizes (batching must not
change the outputs), and after the last one every timer runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.events.envelope import Event
from runtime.rules import PartitionEngine, compile_rule

ZONE = ["Z1", "Z2"]
CELLS = [*ZONE, "OUT1", "OUT2", None]  # None: an event without a location
CUSTOMERS = ["c0", "c1"]
SETTINGS = settings(max_examples=300, deadline=None)

Fired = tuple[str, int, str]  # customer, fire time (ms), the event that started the stay


@dataclass(frozen=True)
class Stay:
    start_ms: int
    end_ms: int | None  # None: still inside at the end of the stream
    event_id: str


def stays(events: list[Event]) -> list[Stay]:
    """One customer's stays in the zone, from the whole list of positions."""
    known = [e for e in events if e.data.get("cell") is not None]
    starts = [
        i for i, e in enumerate(known) if e.data["cell"] in ZONE and i > 0 and known[i - 1].data["cell"] not in ZONE
    ]
    result = []
    for i in starts:
        leave = next((e.time for e in known[i + 1 :] if e.data["cell"] not in ZONE), None)
        result.append(Stay(known[i].time, leave, known[i].id))
    return result


def oracle(events: list[Event], dwell_ms: int, cooldown_ms: int) -> list[Fired]:
    fired: list[Fired] = []
    for customer in CUSTOMERS:
        last: int | None = None
        for stay in stays([e for e in events if e.customer == customer]):
            if last is not None and cooldown_ms and stay.start_ms < last + cooldown_ms:
                continue
            at = stay.start_ms + dwell_ms
            if dwell_ms and stay.end_ms is not None and stay.end_ms - stay.start_ms < dwell_ms:
                continue
            fired.append((customer, at, stay.event_id))
            last = at
    return sorted(fired)


def run_engine(events: list[Event], dwell_ms: int, cooldown_ms: int, batch: int = 1) -> list[Fired]:
    geofence = {"zone": {"cells": ZONE}, **({"dwell": f"{dwell_ms}ms"} if dwell_ms else {"enter": True})}
    doc = {"name": "geo", "when": {"geofence": geofence}, "then": [{"emit": "geo"}], "cooldown": f"{cooldown_ms}ms"}
    engine = PartitionEngine([compile_rule(doc)])
    outputs = []
    for start in range(0, len(events), batch):
        outputs += engine.on_events(events[start : start + batch])
    outputs += engine.on_timer(2**62)
    return sorted((o.event["subject"], epoch_ms(o.event["time"]), o.event["data"]["events"][0]["id"]) for o in outputs)


def epoch_ms(time: str) -> int:
    return int(datetime.fromisoformat(time).timestamp() * 1000)


@st.composite
def location_streams(draw) -> list[Event]:
    """Positions of two interleaved customers, times strictly increasing: small steps (which
    land stays exactly on dwell and cooldown edges) and gaps."""
    size = draw(st.integers(0, 40))
    now = 1_790_000_000_000
    events = []
    for n in range(size):
        now += draw(st.one_of(st.integers(1, 5), st.sampled_from([10, 20]), st.integers(1, 60)))
        cell = draw(st.sampled_from(CELLS))
        data = {"cell": cell} if cell else {"signal": 3}
        customer = draw(st.sampled_from(CUSTOMERS))
        events.append(Event(f"l{n}", "location.update", now, customer, customer, "s", data, 0))
    return events


@SETTINGS
@given(location_streams(), st.sampled_from([0, 5, 10, 20, 30]), st.integers(1, 8))
def test_enter_matches_the_oracle(events: list[Event], cooldown_ms: int, batch: int) -> None:
    assert run_engine(events, 0, cooldown_ms, batch) == oracle(events, 0, cooldown_ms)


@SETTINGS
@given(location_streams(), st.sampled_from([1, 5, 10, 20]), st.sampled_from([0, 5, 10, 30]), st.integers(1, 8))
def test_dwell_matches_the_oracle(events: list[Event], dwell_ms: int, cooldown_ms: int, batch: int) -> None:
    assert run_engine(events, dwell_ms, cooldown_ms, batch) == oracle(events, dwell_ms, cooldown_ms)
