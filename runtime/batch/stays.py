"""Presence and stay areas: time per customer, place, date and part of the day, then per slot
kind (``day|night`` x ``weekday|weekend``), and the ``stay:*`` tags read from them (definitions
in ``tags.py``'s docstring). The life-circle tags read the stay areas too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from runtime.batch.visits import (
    DAY_HOURS,
    MINUTE_MS,
    NIGHT_HOURS,
    City,
    Visits,
    Window,
    group_rows,
    is_weekend,
    split_daily,
    tag_table,
)

MIN_PRESENCE_MS = 30 * MINUTE_MS
FREQUENT, GENERAL = 0.5, 0.2
SLOTS = ("day-weekday", "day-weekend", "night-weekday", "night-weekend")  # code = 2 * night + weekend

STAY_AREAS = pa.schema(
    [
        ("customer_id", pa.string()),
        ("place_id", pa.string()),
        ("slot", pa.string()),  # one of SLOTS
        ("stay_ms", pa.int64()),  # total time there in that slot kind
        ("days", pa.int32()),  # dates present (>= MIN_PRESENCE_MS)
        ("share", pa.float32()),  # days / dates of that kind in the window
    ]
)


@dataclass(frozen=True)
class Presence:
    """Time per customer, place, date and part of the day (night = 1), within the window."""

    customer: np.ndarray
    place: np.ndarray
    date: np.ndarray
    night: np.ndarray
    stay_ms: np.ndarray

    @property
    def present(self) -> np.ndarray:
        return self.stay_ms >= MIN_PRESENCE_MS


def presence(visits: Visits, window: Window) -> Presence:
    """The visits cut into day and night parts of local dates, summed per place and date."""
    pieces = [split_daily(visits.start_ms, visits.end_ms, *hours) for hours in (DAY_HOURS, NIGHT_HOURS)]
    row = np.concatenate([p[0] for p in pieces])
    date = np.concatenate([p[1] for p in pieces])
    overlap = np.concatenate([p[2] for p in pieces])
    night = np.concatenate([np.full(len(p[0]), i, dtype=np.int64) for i, p in enumerate(pieces)])
    inside = window.holds(date)
    row, date, overlap, night = row[inside], date[inside], overlap[inside], night[inside]
    (customer, place, date, night), group = group_rows(visits.customer[row], visits.place[row], date, night)
    stay = np.bincount(group, weights=overlap, minlength=len(customer)).astype(np.int64)
    return Presence(customer, place, date, night, stay)


@dataclass(frozen=True)
class StayAreas:
    """Per customer, place and slot kind (``SLOTS`` code): time, dates present, their share."""

    customer: np.ndarray
    place: np.ndarray
    slot: np.ndarray
    stay_ms: np.ndarray
    days: np.ndarray
    share: np.ndarray


def stay_areas(pres: Presence, window: Window) -> StayAreas:
    slot = 2 * pres.night + is_weekend(pres.date)
    (customer, place, slot), group = group_rows(pres.customer, pres.place, slot)
    stay = np.bincount(group, weights=pres.stay_ms, minlength=len(customer)).astype(np.int64)
    days = np.bincount(group, weights=pres.present.astype(np.float64), minlength=len(customer)).astype(np.int64)
    of_kind = np.array([window.weekdays(), window.weekend_days()] * 2)[slot]
    share = np.where(of_kind > 0, days / np.maximum(of_kind, 1), 0.0)
    return StayAreas(customer, place, slot, stay, days, share)


def frequency(share: np.ndarray) -> np.ndarray:
    return np.select([share >= FREQUENT, share >= GENERAL, share > 0], ["frequent", "general", "occasional"], "")


def stay_tags(areas: StayAreas, ids: np.ndarray, city: City) -> pa.Table:
    ok = areas.days > 0
    names = [
        f"stay:{f}:{city.path[p]}:{SLOTS[s]}"
        for f, p, s in zip(frequency(areas.share[ok]), areas.place[ok], areas.slot[ok], strict=True)
    ]
    return tag_table(ids[areas.customer[ok]], names, areas.share[ok], city.place_id[areas.place[ok]])


def stay_area_table(areas: StayAreas, ids: np.ndarray, city: City) -> pa.Table:
    """The stay-area analysis in ``STAY_AREAS``."""
    columns = [
        pa.array(ids[areas.customer], pa.string()),
        pa.array(city.place_id[areas.place], pa.string()),
        pa.array([SLOTS[s] for s in areas.slot], pa.string()),
        pa.array(areas.stay_ms, pa.int64()),
        pa.array(areas.days, pa.int32()),
        pa.array(areas.share.astype(np.float32)),
    ]
    return pa.table(columns, schema=STAY_AREAS)
