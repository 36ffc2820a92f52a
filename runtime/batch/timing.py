"""Marketing timing (seed 002, "营销时机优化选择"): how crowded each kind of place is at each hour
of the day, its peaks and troughs, and the hours at which to send to a segment.

``run(data, segments=None)`` writes, in ``DATA/jobs/timing/``:

- ``crowd.parquet`` (``CROWD``): per place category (``category_l2``) and local hour of the day,
  the distinct customers present, averaged over the window's days;
- ``hours.json``: peaks and troughs per category, and the recommended sending hours per segment;
- ``summary.json``.

Hours are local (Asia/Shanghai, UTC+8); the window is the tags job's (``visits.observation_window``).

Crowd
-----
A customer is present at a category in an hour when any stay of theirs at a place of that
category overlaps the hour. Crowd = distinct customers present, summed over the window and
divided by how many times that hour of the day occurs in it (days with nobody count as zero).
Peaks and troughs: the 3 hours with the highest and the lowest crowd (ties: the earlier hour).

Sending hours (a heuristic)
---------------------------
A message is best read when the customer is neither at work or school nor asleep. A customer is
*reachable* in a local hour when seen during it somewhere other than work or school — at home,
shopping, at leisure or sport, in transport (commuting) — and not at work or school at any moment
of it. Work or school = a place whose ``category_l1`` is office or education, or the customer's own
work place (``work_cell``). A customer with no stay in the hour is not counted (no signal). Only
hours starting 08:00 to 20:00 are candidates: awake, and sent before 21:00.

A segment's share for hour h = its reachable members summed over the window's days / (days h
occurs x members in the data). Recommended: the 3 hours with the highest share (ties: the
earlier hour; never an hour in which nobody is reachable). Segments come from the caller
(segment -> customer ids), else from the segments job's ``jobs/segments/members.parquet`` when
present; ``all`` (every customer) is always included.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from runtime.batch import layout
from runtime.batch.runner import JobTimer, run_parts, write_summary, write_table
from runtime.batch.visits import (
    CHUNK_CUSTOMERS,
    HOUR_MS,
    LOCAL_OFFSET_MS,
    TIMEZONE,
    City,
    Visits,
    Window,
    customer_chunks,
    group_rows,
    load_city,
    observation_window,
    read_part,
    resolve_visits,
    split_periodic,
)
from runtime.errors import NotFound

JOB = "timing"
ALL = "all"
SEND_HOURS = range(8, 21)  # candidate hours start 08:00 .. 20:00 local: sent before 21:00
RECOMMENDED = 3
PEAKS = 3
WORK_L1 = frozenset({"office", "education"})

CROWD = pa.schema(
    [
        ("category_l1", pa.string()),
        ("category_l2", pa.string()),
        ("hour", pa.int8()),  # local hour of the day, 0..23
        ("customers", pa.float32()),  # distinct customers present, averaged over the window's days
    ]
)


def window_hours(window: Window) -> tuple[int, int]:
    """First local hour (hours since 1970-01-01 local) and how many the window touches."""
    first = (window.start_ms + LOCAL_OFFSET_MS) // HOUR_MS
    last = (window.end_ms - 1 + LOCAL_OFFSET_MS) // HOUR_MS
    return int(first), int(last - first + 1)


def split_hours(visits: Visits, window: Window) -> tuple[np.ndarray, np.ndarray]:
    """(visit row, local hour relative to the window's first) for each hour a visit touches."""
    row, hour, _ = split_periodic(
        visits.start_ms, visits.end_ms, period_ms=HOUR_MS, phase_ms=-LOCAL_OFFSET_MS, length_ms=HOUR_MS
    )
    first, count = window_hours(window)
    inside = (hour >= first) & (hour < first + count)
    return row[inside], hour[inside] - first


@dataclass
class PartCounts:
    """One part's contribution: crowd per (l2 code, window hour); reachable members per segment
    and window hour; members per segment."""

    crowd: np.ndarray
    reachable: dict[str, np.ndarray]
    members: dict[str, int]


def crowd_counts(visits: Visits, city: City, window: Window) -> np.ndarray:
    """Distinct customers per (l2 code, window hour)."""
    visits = visits.take(visits.place >= 0)
    row, hour = split_hours(visits, window)
    l2 = city.l2_code[visits.place[row]]
    (_, l2, hour), _ = group_rows(visits.customer[row], l2, hour)
    hours = window_hours(window)[1]
    counts = np.bincount(l2 * hours + hour, minlength=len(city.l2_names) * hours)
    return counts.reshape(len(city.l2_names), hours)


def reachable_hours(visits: Visits, work_place: np.ndarray, city: City, window: Window) -> tuple[np.ndarray, ...]:
    """(customer, window hour) pairs when the customer is reachable (see the module docstring)."""
    row, hour = split_hours(visits, window)
    place = visits.place[row]
    customer = visits.customer[row]
    work_kind = np.append(city.matches(WORK_L1, ["category_l1"]), False)[place]  # place -1: a road
    at_work = (place >= 0) & (work_kind | (place == work_place[customer]))
    (customer, hour), group = group_rows(customer, hour)
    work = np.bincount(group, weights=at_work.astype(np.float64), minlength=len(customer)) > 0
    elsewhere = np.bincount(group, weights=(~at_work).astype(np.float64), minlength=len(customer)) > 0
    ok = elsewhere & ~work
    return customer[ok], hour[ok]


def timing_part(
    customers: pa.Table, stays: pa.Table, city: City, window: Window, segments: Mapping[str, set[str] | None]
) -> PartCounts:
    """Crowd and reachability counts of one part; a segment of ``None`` is every customer."""
    ids = customers.column("customer_id")
    visits = resolve_visits(stays, ids, city, window, unplaced=True)
    customer, hour = reachable_hours(visits, city.cell_place(customers.column("work_cell")), city, window)
    hours = window_hours(window)[1]
    id_list = np.array(ids.to_pylist(), dtype=object)
    reachable, members = {}, {}
    for name, wanted in segments.items():
        member = np.ones(len(id_list), bool) if wanted is None else np.array([c in wanted for c in id_list], bool)
        reachable[name] = np.bincount(hour[member[customer]], minlength=hours)
        members[name] = int(member.sum())
    return PartCounts(crowd_counts(visits, city, window), reachable, members)


# --- from counts to answers ---------------------------------------------------------------------


def per_hour_of_day(counts: np.ndarray, window: Window) -> np.ndarray:
    """Counts per window hour (last axis) -> average per local hour of the day (0..23)."""
    first, hours = window_hours(window)
    hod = (first + np.arange(hours)) % 24
    occurs = np.bincount(hod, minlength=24)
    totals = counts @ (hod[:, None] == np.arange(24)).astype(np.float64)
    return totals / np.maximum(occurs, 1)


def ranked_hours(values: np.ndarray, hours: Sequence[int], n: int, *, highest: bool) -> list[int]:
    """The ``n`` hours with the highest (or lowest) value; ties: the earlier hour."""
    sign = -1.0 if highest else 1.0
    return sorted(hours, key=lambda h: (sign * values[h], h))[:n]


def crowd_table(average: np.ndarray, city: City) -> pa.Table:
    """``CROWD`` rows for every category and hour."""
    l1_of = {l2: l1 for l1, l2 in zip(city.l1, city.l2.astype(str), strict=True)}
    names = [str(n) for n in city.l2_names]
    return pa.table(
        [
            pa.array([l1_of[n] for n in names for _ in range(24)], pa.string()),
            pa.array([n for n in names for _ in range(24)], pa.string()),
            pa.array(list(range(24)) * len(names), pa.int8()),
            pa.array(average.reshape(-1).astype(np.float32)),
        ],
        schema=CROWD,
    )


def peaks_and_troughs(average: np.ndarray, city: City) -> dict[str, Any]:
    out = {}
    for i, name in enumerate(str(n) for n in city.l2_names):
        row = average[i]

        def listed(hours: list[int], row: np.ndarray = row) -> list[dict[str, Any]]:
            return [{"hour": h, "customers": round(float(row[h]), 2)} for h in hours]

        out[name] = {
            "peaks": listed(ranked_hours(row, range(24), PEAKS, highest=True)),
            "troughs": listed(ranked_hours(row, range(24), PEAKS, highest=False)),
        }
    return out


def recommend(reachable: np.ndarray, members: int, window: Window) -> dict[str, Any]:
    """A segment's reachable share per candidate hour and its recommended hours."""
    if members == 0:
        return {"customers": 0, "hours": [], "reachable_share": {}}
    share = per_hour_of_day(reachable, window) / members
    return {
        "customers": members,
        "hours": ranked_hours(share, [h for h in SEND_HOURS if share[h] > 0], RECOMMENDED, highest=True),
        "reachable_share": {str(h): round(float(share[h]), 4) for h in SEND_HOURS},
    }


# --- the job ------------------------------------------------------------------------------------


def segments_from_job(data: Path) -> dict[str, set[str]]:
    """segment -> customer ids from the segments job's ``members.parquet``; empty if absent."""
    path = layout.job_dir(data, "segments") / "members.parquet"
    if not path.exists():
        return {}
    out: dict[str, set[str]] = {}
    table = pq.read_table(path, columns=["customer_id", "segment"])
    for customer, segment in zip(table["customer_id"].to_pylist(), table["segment"].to_pylist(), strict=True):
        out.setdefault(segment, set()).add(customer)
    return out


@dataclass(frozen=True)
class TimingTask:
    data: Path
    part: str
    window: Window
    segments: dict[str, set[str] | None]


def _timing_task(task: TimingTask) -> PartCounts:
    customers = read_part(task.data, "customers", task.part, ["customer_id", "work_cell"])
    stays = read_part(task.data, "stays", task.part)
    city = load_city(task.data)
    chunks = customer_chunks(customers, CHUNK_CUSTOMERS, stays)
    done = [timing_part(*chunk, city, task.window, task.segments) for chunk in chunks]
    return combine([no_counts(city, task.window, task.segments), *done])


def no_counts(city: City, window: Window, segments: Mapping[str, Any]) -> PartCounts:
    """Zero counts (the start of a sum, and the answer for a data set without stays)."""
    hours = window_hours(window)[1]
    zeros = np.zeros(hours, dtype=np.int64)
    return PartCounts(
        np.zeros((len(city.l2_names), hours), np.int64), dict.fromkeys(segments, zeros), dict.fromkeys(segments, 0)
    )


def combine(results: Sequence[PartCounts]) -> PartCounts:
    """The sum of parts' (or chunks') counts, of disjoint customers; the first sets the keys."""
    first = results[0]
    return PartCounts(
        sum((r.crowd for r in results), np.zeros_like(first.crowd)),
        {name: sum((r.reachable[name] for r in results), np.zeros_like(v)) for name, v in first.reachable.items()},
        {name: sum(r.members[name] for r in results) for name in first.members},
    )


def run(data: Path, *, segments: Mapping[str, set[str]] | None = None) -> dict[str, Any]:
    """Crowd per category and hour, and sending hours for ``segments`` (default: the segments
    job's, if any) and ``all``; returns the summary, also in ``jobs/timing/summary.json``."""
    timer = JobTimer()
    data = Path(data)
    parts = layout.parts(data, "customers")
    if not parts:
        raise NotFound(f"data set {data}: no customers parts in {layout.table_dir(data, 'customers')}")
    window = observation_window(data)
    wanted: dict[str, set[str] | None] = {ALL: None, **(segments_from_job(data) if segments is None else segments)}
    tasks = [TimingTask(data, p.name, window, wanted) for p in parts]
    city = load_city(data)
    counts = combine([no_counts(city, window, wanted), *run_parts(_timing_task, tasks, label="timing")])
    average = per_hour_of_day(counts.crowd, window)
    out = layout.job_dir(data, JOB)
    write_table(crowd_table(average, city), out / "crowd.parquet")
    hours = {
        "timezone": TIMEZONE,
        "window": window.describe(),
        "categories": peaks_and_troughs(average, city),
        "segments": {name: recommend(counts.reachable[name], counts.members[name], window) for name in wanted},
    }
    (out / "hours.json").write_text(json.dumps(hours, indent=2))
    summary = {
        "job": JOB,
        "parts": len(parts),
        "categories": len(city.l2_names),
        "crowd_rows": 24 * len(city.l2_names),
        "window": window.describe(),
        "recommended": {name: s["hours"] for name, s in hours["segments"].items()},
        **timer.figures(),
    }
    write_summary(out, summary)
    return summary
