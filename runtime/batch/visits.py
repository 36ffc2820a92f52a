"""Customers' visits to places over an observation window: what the tags job's families and the
timing job read.

The local clock (Asia/Shanghai: dates, day and night parts, cutting intervals by a daily period),
the observation window, the city (places, the cell -> place map, event definitions), stays
resolved to a part's customers and places, grouping by integer columns, the rows every tag
family writes, and reading these from a data set. The clock and the window are defined in the
tags job's docstring (``tags.py``, "Time").
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from runtime.batch import layout
from runtime.errors import InputError, NotFound

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS
TIMEZONE = "Asia/Shanghai"
LOCAL_OFFSET_MS = 8 * HOUR_MS  # Asia/Shanghai is UTC+8 all year
DAY_HOURS = (8, 20)  # day part of a date; the night part runs 20:00 to 08:00 the next morning
NIGHT_HOURS = (20, 32)
CHUNK_CUSTOMERS = 5_000  # customers handled at once within a part task: bounds its memory


# --- local time ---------------------------------------------------------------------------------


def local_date(t_ms: Any, from_h: int = 0) -> np.ndarray:
    """The local date (days since 1970-01-01) on which the daily period starting at ``from_h``
    o'clock that holds ``t_ms`` starts."""
    return (np.asarray(t_ms, dtype=np.int64) + LOCAL_OFFSET_MS - from_h * HOUR_MS) // DAY_MS


def is_weekend(date: Any) -> np.ndarray:
    return (np.asarray(date) + 3) % 7 >= 5  # 1970-01-01 was a Thursday (Monday = 0)


def split_periodic(
    start_ms: np.ndarray, end_ms: np.ndarray, *, period_ms: int, phase_ms: int, length_ms: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cut intervals ``[start, end)`` by the windows ``[k * period + phase, + length)``: for each
    positive overlap, the interval's row, ``k`` and the overlap in ms."""
    s = np.asarray(start_ms, dtype=np.int64) - phase_ms
    e = np.asarray(end_ms, dtype=np.int64) - phase_ms
    first = s // period_ms
    count = np.maximum((e - 1) // period_ms - first + 1, 0)
    row = np.repeat(np.arange(len(s)), count)
    k = np.repeat(first, count) + np.arange(int(count.sum())) - np.repeat(np.cumsum(count) - count, count)
    low = k * period_ms
    overlap = np.minimum(e[row], low + length_ms) - np.maximum(s[row], low)
    keep = overlap > 0
    return row[keep], k[keep], overlap[keep]


def split_daily(
    start_ms: np.ndarray, end_ms: np.ndarray, from_h: int, to_h: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Overlaps with the local daily period ``from_h``-``to_h`` o'clock (``to_h`` may pass 24):
    (row, local date the period starts on, overlap ms)."""
    phase = from_h * HOUR_MS - LOCAL_OFFSET_MS
    return split_periodic(start_ms, end_ms, period_ms=DAY_MS, phase_ms=phase, length_ms=(to_h - from_h) * HOUR_MS)


@dataclass(frozen=True)
class Window:
    """The observation window ``[start_ms, end_ms)``, UTC epoch ms."""

    start_ms: int
    end_ms: int

    def dates(self) -> np.ndarray:
        """The local dates whose day part starts (08:00) inside the window."""
        phase = DAY_HOURS[0] * HOUR_MS - LOCAL_OFFSET_MS
        return np.arange(-((phase - self.start_ms) // DAY_MS), -((phase - self.end_ms) // DAY_MS))

    def holds(self, date: np.ndarray) -> np.ndarray:
        dates = self.dates()
        return (date >= dates[0]) & (date <= dates[-1]) if len(dates) else np.zeros(len(date), dtype=bool)

    def weekdays(self) -> int:
        return int((~is_weekend(self.dates())).sum())

    def weekend_days(self) -> int:
        return int(is_weekend(self.dates()).sum())

    def describe(self) -> dict[str, Any]:
        return {
            "start_ms": self.start_ms,
            "end_ms": self.end_ms,
            "timezone": TIMEZONE,
            "dates": len(self.dates()),
            "weekdays": self.weekdays(),
            "weekend_days": self.weekend_days(),
        }


# --- the city and the visits --------------------------------------------------------------------


def plain(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """A column's chunks as one array (an array as it is)."""
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values


def index_of(values: pa.Array | pa.ChunkedArray, value_set: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Position of each value in ``value_set``; -1 when absent or null."""
    found = pc.index_in(values, value_set=plain(value_set))
    return np.asarray(found.fill_null(-1).to_numpy(zero_copy_only=False), dtype=np.int64)


def strings(table: pa.Table, column: str) -> np.ndarray:
    """A string column as a numpy object array (None for null)."""
    return np.array(table.column(column).to_pylist(), dtype=object)


def lookup(values: np.ndarray, index: np.ndarray, missing: Any = None) -> np.ndarray:
    """``values[index]``, ``missing`` where the index is -1."""
    return np.append(values, np.array([missing], dtype=values.dtype))[index]


class City:
    """Places (by row of ``places``), the cell -> place map and the event definitions."""

    def __init__(self, places: pa.Table, cells: pa.Table, events: pa.Table | None = None) -> None:
        self.places = places
        self.place_id = strings(places, "place_id")
        self.category = {f"category_l{i}": strings(places, f"category_l{i}") for i in (1, 2, 3)}
        self.l1, self.l2, self.l3 = (self.category[f"category_l{i}"] for i in (1, 2, 3))
        self.path = np.array([f"{a}>{b}>{c}" for a, b, c in zip(self.l1, self.l2, self.l3, strict=True)], dtype=object)
        self.district = strings(places, "district")
        self.price_band = np.asarray(places.column("price_band").fill_null(0).to_numpy(), dtype=np.int64)
        self.l2_names, self.l2_code = np.unique(self.l2.astype(str), return_inverse=True)
        self.path_code = np.unique(self.path.astype(str), return_inverse=True)[1]
        self.is_airport = (self.l1 == "transport") & (self.l2 == "airport")
        self.is_office = self.l1 == "office"
        self.is_residential = self.l1 == "residential"
        self.cell_id = cells.column("cell_id")
        self._cell_place = self.place_index(cells.column("place_id"))
        self.events = events if events is not None else layout.EVENT_DEFS.empty_table()

    def place_index(self, place_ids: pa.Array | pa.ChunkedArray) -> np.ndarray:
        return index_of(place_ids, self.places.column("place_id"))

    def cell_place(self, cell_ids: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """Place row of each cell; -1 for unknown cells and cells in no place."""
        return lookup(self._cell_place, index_of(cell_ids, self.cell_id), -1)

    def matches(
        self, values: frozenset[str], fields: Sequence[str] = ("category_l1", "category_l2", "category_l3")
    ) -> np.ndarray:
        """Per place: is any of its ``fields`` in ``values``."""
        return np.array(
            [any(v in values for v in levels) for levels in zip(*(self.category[f] for f in fields), strict=True)],
            dtype=bool,
        )


@dataclass(frozen=True)
class Visits:
    """Stays resolved to the part's customers (row of ``customers``) and places, in the window."""

    customer: np.ndarray
    place: np.ndarray
    start_ms: np.ndarray
    end_ms: np.ndarray

    def take(self, mask: np.ndarray) -> Visits:
        return Visits(self.customer[mask], self.place[mask], self.start_ms[mask], self.end_ms[mask])


def resolve_visits(
    stays: pa.Table, customer_ids: pa.Array | pa.ChunkedArray, city: City, window: Window, *, unplaced: bool = False
) -> Visits:
    """Stays of known customers in cells of known places (and, if ``unplaced``, in cells of no
    place: roads, with place -1), clipped to the window."""
    customer = index_of(stays.column("customer_id"), customer_ids)
    place = city.cell_place(stays.column("cell_id"))
    start = np.maximum(np.asarray(stays.column("start_ms").to_numpy(), dtype=np.int64), window.start_ms)
    end = np.minimum(np.asarray(stays.column("end_ms").to_numpy(), dtype=np.int64), window.end_ms)
    known = (place >= 0) | (unplaced & (index_of(stays.column("cell_id"), city.cell_id) >= 0))
    return Visits(customer, place, start, end).take((customer >= 0) & known & (end > start))


# --- grouping and tag rows ----------------------------------------------------------------------


def group_rows(*columns: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """The distinct rows of integer columns (sorted), and each input row's group number."""
    columns = tuple(np.asarray(c, dtype=np.int64) for c in columns)
    if len(columns[0]) == 0:
        return [c[:0] for c in columns], np.zeros(0, dtype=np.int64)
    low = [int(c.min()) for c in columns]
    radix = [int(c.max()) - lo + 1 for c, lo in zip(columns, low, strict=True)]
    if float(np.prod(radix, dtype=np.float64)) >= 2.0**62:  # too wide for one int64 key: slower path
        unique, inverse = np.unique(np.stack(columns, axis=1), axis=0, return_inverse=True)
        return [unique[:, i] for i in range(len(columns))], inverse.ravel()
    key = np.zeros(len(columns[0]), dtype=np.int64)
    for c, lo, r in zip(columns, low, radix, strict=True):
        key = key * r + (c - lo)
    unique, inverse = np.unique(key, return_inverse=True)
    out = []
    for lo, r in zip(reversed(low), reversed(radix), strict=True):
        out.append(unique % r + lo)
        unique = unique // r
    return out[::-1], inverse.ravel()


def best_in_group(group: np.ndarray, *scores: np.ndarray) -> np.ndarray:
    """Index of the row with the highest ``scores`` (first score first) in each group; ties:
    the earlier row."""
    order = np.lexsort((np.arange(len(group)), *(-np.asarray(s, dtype=np.float64) for s in reversed(scores)), group))
    first = np.ones(len(order), dtype=bool)
    first[1:] = group[order][1:] != group[order][:-1]
    return order[first]


def tag_table(customer_ids: Sequence[Any], tag: Any, value: Any = 1.0, place_id: Any = None) -> pa.Table:
    """Rows in ``layout.TAGS``; ``tag``, ``value`` and ``place_id`` are per row or one for all."""
    n = len(customer_ids)

    def column(x: Any, type_: pa.DataType) -> pa.Array:
        return pa.array(x if isinstance(x, np.ndarray | list) else [x] * n, type_)

    values = np.broadcast_to(np.asarray(value, dtype=np.float32), (n,))
    columns = [column(list(customer_ids), pa.string()), column(tag, pa.string()), pa.array(values)]
    return pa.table([*columns, column(place_id, pa.string())], schema=layout.TAGS)


# --- reading the data set -----------------------------------------------------------------------


def read_shared(data: Path, table: str, *, required: bool = True) -> pa.Table:
    """A small shared table (all its files); empty when absent and not ``required``."""
    files = layout.parts(data, table)
    if not files:
        if required:
            raise NotFound(f"data set {data}: table '{table}' has no Parquet file in {layout.table_dir(data, table)}")
        return layout.TABLES[table].empty_table()
    return pa.concat_tables([pq.read_table(f) for f in files], promote_options="default")


def read_part(data: Path, table: str, name: str, columns: list[str] | None = None) -> pa.Table:
    """Part ``name`` of a per-customer table; empty (with the layout's schema) when absent."""
    path = layout.table_dir(data, table) / name
    if path.exists():
        return pq.read_table(path, columns=columns)
    schema = layout.TABLES[table]
    return (schema if columns is None else pa.schema([schema.field(c) for c in columns])).empty_table()


def load_city(data: Path) -> City:
    events = read_shared(data, "events", required=False)
    return City(read_shared(data, "places"), read_shared(data, "cells"), events)


def _parse_ms(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp() * 1000)


def _manifest_span(data: Path) -> tuple[int, int] | None:
    try:
        manifest = json.loads((Path(data) / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    start = _parse_ms(manifest.get("start_ms", manifest.get("start")))
    days = manifest.get("days")
    if start is None or not isinstance(days, int) or days <= 0:
        return None
    return start, start + days * DAY_MS


def _column_range(path: Path, column: str) -> tuple[int, int] | None:
    """Min and max of an int column, from the file's statistics when it has them."""
    meta = pq.ParquetFile(path).metadata
    if meta.num_rows == 0:
        return None
    at = meta.schema.to_arrow_schema().get_field_index(column)
    stats = [meta.rowgroup_rows(i).column(at).statistics for i in range(meta.num_row_groups)]
    if all(s is not None and s.has_min_max for s in stats):
        return min(s.min for s in stats), max(s.max for s in stats)
    found = pc.min_max(pq.read_table(path, columns=[column]).column(column)).as_py()
    return found["min"], found["max"]


def _stays_span(data: Path) -> tuple[int, int] | None:
    starts = [r for p in layout.parts(data, "stays") if (r := _column_range(p, "start_ms"))]
    ends = [r for p in layout.parts(data, "stays") if (r := _column_range(p, "end_ms"))]
    if not starts or not ends:
        return None
    return min(r[0] for r in starts), max(r[1] for r in ends)


def observation_window(data: Path, *, now_ms: int | None = None) -> Window:
    """The data's span (manifest, else the stays), cut at ``now_ms``."""
    span = _manifest_span(data) or _stays_span(data)
    if span is None:
        raise InputError(
            f"data set {data}: no manifest.json with 'start' and 'days', and no stays to take a window from"
        )
    start, end = span if now_ms is None else (span[0], min(span[1], now_ms))
    if end <= start:
        raise InputError(f"data set {data}: now_ms {now_ms} is not after the data's start {start}")
    return Window(int(start), int(end))


# --- a part in chunks ---------------------------------------------------------------------------


def customer_chunks(customers: pa.Table, size: int, *tables: pa.Table) -> Iterator[tuple[pa.Table, ...]]:
    """The part in slices of ``size`` customers, each with those customers' rows of ``tables``:
    every family is per customer, so a task's memory is bounded by ``size``, not the part."""
    ids = customers.column("customer_id")
    chunk_of = [index_of(t.column("customer_id"), ids) // size for t in tables]  # -1: unknown customer
    for k, start in enumerate(range(0, customers.num_rows, size)):
        yield customers.slice(start, size), *(t.filter(pa.array(c == k)) for t, c in zip(tables, chunk_of, strict=True))
