"""Geofence enter and dwell, drawn as timelines."""

from __future__ import annotations

from runtime.events.envelope import Event
from runtime.rules import PartitionEngine, compile_rule

M = 60_000


def loc(i: int, minute: int, **data) -> Event:
    return Event(f"l{i}", "location.update", minute * M, "c", "c", "s", data, 0)


def fired(outputs) -> list[tuple[int, str]]:
    return [(int(o.event["time"][14:16]), o.event["data"]["events"][0]["id"]) for o in outputs]


def rule(**geofence) -> PartitionEngine:
    return PartitionEngine(
        [compile_rule({"name": "g", "when": {"geofence": geofence}, "then": [{"emit": "geo"}], "cooldown": "20m"})]
    )


def test_enter_fires_on_the_way_in_only():
    """minute  0 out, 1 in (fire), 2 in, 3 out, 30 in (fire: after the cooldown)"""
    engine = rule(zone={"cells": ["T1-INTL", "T2-INTL"]}, enter=True)
    events = [loc(0, 0, cell="HOME"), loc(1, 1, cell="T1-INTL"), loc(2, 2, cell="T2-INTL"), loc(3, 3, cell="CBD")]
    assert fired(engine.on_events(events)) == [(1, "l1")]
    assert fired(engine.on_events([loc(4, 30, cell="T1-INTL")])) == [(30, "l4")]


def test_leaving_during_the_cooldown_is_remembered():
    """out at -1, in at 0 (fire; cooldown 20 min), out at 5, in at 10 (cooldown: no fire), out 15,
    in 25: fire"""
    engine = rule(zone={"cells": ["Z"]}, enter=True)
    events = [
        loc(9, -1, cell="Y"),
        loc(0, 0, cell="Z"),
        loc(1, 5, cell="Y"),
        loc(2, 10, cell="Z"),
        loc(3, 15, cell="Y"),
        loc(4, 25, cell="Z"),
    ]
    assert fired(engine.on_events(events)) == [(0, "l0"), (25, "l4")]


def test_dwell_fires_by_timer_and_leaving_cancels_it():
    """dwell 10 min: in at 0, out at 5 (cancelled); in at 20, still in at 31 -> fired at 30"""
    engine = rule(zone={"polygon": [[0, 0], [0, 10], [10, 10], [10, 0]]}, dwell="10m")
    assert engine.on_events([loc(0, 0, lat=5, lon=5), loc(1, 5, lat=50, lon=5)]) == []
    assert engine.next_timer_at() is None
    assert engine.on_events([loc(2, 20, lat=1, lon=1)]) == []
    assert engine.on_timer(29 * M) == []
    assert fired(engine.on_timer(31 * M)) == [(30, "l2")]
    assert engine.on_events([loc(3, 32, lat=2, lon=2)]) == []  # still inside: no new wait


def test_events_without_a_location_change_nothing():
    engine = rule(zone={"cells": ["Z"]}, enter=True)
    assert engine.on_events([loc(0, 0, signal=3), loc(1, 1, cell="Y"), loc(2, 2, signal=1), loc(3, 3, cell="Z")]) != []


def test_a_first_known_location_inside_is_no_entry():
    """An entry is the first location inside after one outside: a customer first seen inside
    has not been seen entering; leaving and coming back is an entry."""
    engine = rule(zone={"cells": ["Z"]}, enter=True)
    assert engine.on_events([loc(0, 0, cell="Z"), loc(1, 1, cell="Z")]) == []
    assert fired(engine.on_events([loc(2, 2, cell="Y"), loc(3, 3, cell="Z")])) == [(3, "l3")]


def test_h3_zone_of_mixed_resolutions():
    """A zone of one resolution-9 cell and one resolution-7 cell: points in either are inside."""
    import h3

    hall = h3.latlng_to_cell(31.1979, 121.3363, 9)  # a departure hall
    district = h3.latlng_to_cell(31.2304, 121.4737, 7)  # a city district
    engine = rule(zone={"h3": [hall, district]}, enter=True)
    near_hall = h3.cell_to_latlng(hall)
    in_district = h3.cell_to_latlng(h3.cell_to_children(district, 10)[3])
    far = (39.9042, 116.4074)
    events = [
        loc(0, 0, lat=far[0], lon=far[1]),
        loc(1, 1, lat=near_hall[0], lon=near_hall[1]),  # enter (fire)
        loc(2, 2, lat=far[0], lon=far[1]),
        loc(3, 30, lat=in_district[0], lon=in_district[1]),  # enter again after the cooldown
    ]
    assert fired(engine.on_events(events)) == [(1, "l1"), (30, "l3")]


def test_h3_zone_rejects_bad_cells():
    import pytest
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="not H3 cell"):
        rule(zone={"h3": ["not-a-cell"]}, enter=True)
