"""Tags per customer: the static consumption, stay-area, life-circle and event-presence families
of the life-circle system (seed 002), one Ray task per customer part.

``run(data)`` writes ``DATA/jobs/tags/part-XXXXX.parquet`` (``layout.TAGS``), the stay-area
analysis the stay tags are read from in ``DATA/jobs/stay-areas/part-XXXXX.parquet``
(``STAY_AREAS``), and ``DATA/jobs/tags/summary.json``. Every family is a pure function of pyarrow
tables and numpy arrays (``tag_part`` runs them all for one part), so it is tested without Ray.
A first pass over the customers parts computes the population edges (value tiers, intensity);
each part task then works through its part ``CHUNK_CUSTOMERS`` customers at a time, which bounds
its memory (every family is per customer).

Time
----
Clock reasoning is in local time, Asia/Shanghai: a fixed UTC+8 (no daylight saving since 1991);
the customers' ``timezone`` column is not read. A local date D has a *day* part, 08:00-20:00 on D,
and a *night* part, 20:00 on D to 08:00 on D+1 ("the night of D": Friday 22:00 to Saturday 02:00
is Friday's night, a weekday). Weekend dates are Saturday and Sunday.

The observation window is the data's span (``manifest.json``: ``start`` or ``start_ms`` plus
``days``; else the stays' first start to last end), cut at ``now_ms`` when given. Stays are
clipped to it. Its dates are those whose day part starts (08:00) inside it: a ``days``-day window
from local midnight (the generator's) or from UTC midnight has ``days`` dates.

A customer is *present* at a place in a slot (date, day|night) when their stays there in that
slot add up to at least 30 minutes (``MIN_PRESENCE_MS``): passing through does not count.

Tags (``value`` is 1.0 unless said; ``place_id`` is null unless said)
--------------------------------------------------------------------
Static consumption:

- ``value:<1..5>`` value tier: the band of the customer's mean monthly ARPU between the
  population's quintile edges (5 = the top 20%). Edges are computed over all parts first.
- ``arpu-trend:<up|flat|down>``: the least-squares slope of monthly ARPU (oldest first) as a share
  of the mean ARPU, per month: >= +5% up, <= -5% down, else flat; value = that share. Needs two
  months or more.
- ``intensive:<data|voice|sms>``: ``data_gb`` / ``voice_min`` / ``sms_count`` at or above the
  population's 80th percentile (and above 0).
- ``residence:high-value``: the home cell's place has ``price_band`` >= 4; place_id = home.
- ``car-owner``: ``car_owner`` is true.
- ``travel``: any stay at a ``transport > airport`` place; place_id = the airport with most time.

Stay areas, one per customer, place and slot kind (``day|night`` x ``weekday|weekend``):

- ``stay:<frequency>:<l1>><l2>><l3>:<day|night>-<weekday|weekend>``, e.g.
  ``stay:frequent:office>tower>grade-a-tower:day-weekday``. share = dates present in that slot
  kind / dates of that kind (weekday or weekend) in the window; frequency = ``frequent`` (share >=
  50%), ``general`` (>= 20%), ``occasional`` (> 0); value = share; place_id = the place.

Life circles, seed 002's four classes, each with finer levels that repeat the coarse tag with
suffixes; place_id = the key building (the place the tag was read from):

- ``circle:region:<district>`` and ``circle:region:<district>:<home|work>``: the district of the
  home and of the work cell's place (the coarse tag once per district, home first).
- ``circle:people:<office|campus|residential>``, ``...:<l2>`` and ``...:<l2>:<l3>`` (e.g.
  ``circle:people:campus:school:university``): among the places the customer is frequently
  present at on weekday days, the one with the most weekday daytime; its ``category_l1`` office /
  education / residential gives the circle. value = its share.
- ``circle:demand:<sports|music|travel|shopping>``, ``...:<l2>``, ``...:<l2>:<l3>`` (e.g.
  ``circle:demand:sports:stadium:basketball-arena``): general or frequent presence (share >= 20%,
  any slot kind) at a place any of whose category levels is listed in ``DEMAND_RULES``; at each
  level the key building is the one with the highest share; value = that share.
- ``circle:behaviour:nine-to-five``: at least 6 hours within 09:00-17:00 at one office place
  (``category_l1`` office, or the customer's work place) on >= 50% of the window's weekdays;
  value = that share; place_id = that office.
- ``circle:behaviour:business-traveller``: present at an airport on >= 3 distinct dates; value =
  those dates / the window's dates; place_id = the airport present at on most dates.
- ``circle:behaviour:night-owl``: up between 00:00 and 05:00 (the night of D) on >= 25% of the
  window's dates: an app/web session starting then, or >= 30 minutes at a place that is neither
  residential nor the customer's home or work place. value = that share.

Event presence:

- ``event:<type>:<event_id>``: the customer's stays at the event's place overlap the event by at
  least 30 minutes in all; value = overlap / event duration; place_id = the venue.
- ``event:<type>``: at least one such event of that type; place_id = the venue of the first.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from runtime.batch import layout
from runtime.batch.runner import JobTimer, run_parts, write_summary, write_table
from runtime.errors import InputError, NotFound

JOB = "tags"
STAY_AREAS_JOB = "stay-areas"
MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS
TIMEZONE = "Asia/Shanghai"
LOCAL_OFFSET_MS = 8 * HOUR_MS  # Asia/Shanghai is UTC+8 all year
DAY_HOURS = (8, 20)  # day part of a date; the night part runs 20:00 to 08:00 the next morning
NIGHT_HOURS = (20, 32)
MIN_PRESENCE_MS = 30 * MINUTE_MS
CHUNK_CUSTOMERS = 5_000  # customers handled at once within a part task: bounds its memory
FREQUENT, GENERAL = 0.5, 0.2
TREND_SHARE = 0.05
INTENSIVE_QUANTILE = 0.8
HIGH_VALUE_PRICE_BAND = 4
EVENT_MIN_OVERLAP_MS = 30 * MINUTE_MS
OFFICE_HOURS = (9, 17)
NINE_TO_FIVE_MIN_MS = 6 * HOUR_MS
NINE_TO_FIVE_SHARE = 0.5
BUSINESS_TRAVELLER_DATES = 3
LATE_HOURS = (24, 29)  # 00:00-05:00 after the date: the night of D
NIGHT_OWL_SHARE = 0.25
USAGE = {"data": "data_gb", "voice": "voice_min", "sms": "sms_count"}
PEOPLE_CIRCLES = {"office": "office", "education": "campus", "residential": "residential"}
DEMAND_RULES: tuple[tuple[str, frozenset[str]], ...] = (  # a place matches if any of its levels is listed
    ("sports", frozenset({"sports"})),
    ("music", frozenset({"concert-hall", "livehouse", "music-venue", "ktv"})),
    ("travel", frozenset({"airport", "railway", "railway-station"})),
    ("shopping", frozenset({"mall"})),
)
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


# --- shared tables and stays --------------------------------------------------------------------


def _plain(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values


def _index(values: pa.Array | pa.ChunkedArray, value_set: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Position of each value in ``value_set``; -1 when absent or null."""
    found = pc.index_in(values, value_set=_plain(value_set))
    return np.asarray(found.fill_null(-1).to_numpy(zero_copy_only=False), dtype=np.int64)


def _strings(table: pa.Table, column: str) -> np.ndarray:
    return np.array(table.column(column).to_pylist(), dtype=object)


def _lookup(values: np.ndarray, index: np.ndarray, missing: Any = None) -> np.ndarray:
    """``values[index]``, ``missing`` where the index is -1."""
    return np.append(values, np.array([missing], dtype=values.dtype))[index]


class City:
    """Places (by row of ``places``), the cell -> place map and the event definitions."""

    def __init__(self, places: pa.Table, cells: pa.Table, events: pa.Table | None = None) -> None:
        self.places = places
        self.place_id = _strings(places, "place_id")
        self.category = {f"category_l{i}": _strings(places, f"category_l{i}") for i in (1, 2, 3)}
        self.l1, self.l2, self.l3 = (self.category[f"category_l{i}"] for i in (1, 2, 3))
        self.path = np.array([f"{a}>{b}>{c}" for a, b, c in zip(self.l1, self.l2, self.l3, strict=True)], dtype=object)
        self.district = _strings(places, "district")
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
        return _index(place_ids, self.places.column("place_id"))

    def cell_place(self, cell_ids: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """Place row of each cell; -1 for unknown cells and cells in no place."""
        return _lookup(self._cell_place, _index(cell_ids, self.cell_id), -1)

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
    customer = _index(stays.column("customer_id"), customer_ids)
    place = city.cell_place(stays.column("cell_id"))
    start = np.maximum(np.asarray(stays.column("start_ms").to_numpy(), dtype=np.int64), window.start_ms)
    end = np.minimum(np.asarray(stays.column("end_ms").to_numpy(), dtype=np.int64), window.end_ms)
    known = (place >= 0) | (unplaced & (_index(stays.column("cell_id"), city.cell_id) >= 0))
    return Visits(customer, place, start, end).take((customer >= 0) & known & (end > start))


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


def _best(group: np.ndarray, *scores: np.ndarray) -> np.ndarray:
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


# --- static consumption -------------------------------------------------------------------------


@dataclass(frozen=True)
class Population:
    """Edges over all customers that each part's tags compare against."""

    arpu_edges: tuple[float, ...]  # the 20/40/60/80% quantiles of mean monthly ARPU
    intensive: tuple[tuple[str, float], ...]  # (usage, its 80th percentile)


def arpu_stats(arpu: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """Per customer: mean monthly ARPU and its least-squares slope per month (NaN when there is
    no month, for the slope also with one)."""
    arr = _plain(arpu)
    lengths = np.asarray(pc.list_value_length(arr).fill_null(0).to_numpy(), dtype=np.int64)
    y = np.asarray(pc.list_flatten(arr).to_numpy(zero_copy_only=False), dtype=np.float64)
    row = np.repeat(np.arange(len(arr)), lengths)
    x = (np.arange(len(y)) - np.repeat(np.cumsum(lengths) - lengths, lengths)).astype(np.float64)
    ok = ~np.isnan(y)
    row, x, y = row[ok], x[ok], y[ok]

    def total(w: np.ndarray) -> np.ndarray:
        return np.bincount(row, weights=w, minlength=len(arr))

    n, sx, sy, sxy, sxx = total(np.ones_like(y)), total(x), total(y), total(x * y), total(x * x)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = sy / n
        slope = (n * sxy - sx * sy) / (n * sxx - sx * sx)
    slope[n < 2] = np.nan
    return mean, slope


def population(arpu_mean: np.ndarray, usage: dict[str, np.ndarray]) -> Population:
    """Quintile edges of mean ARPU and the top-quintile threshold of each usage."""

    def quantiles(values: np.ndarray, q: list[float]) -> list[float]:
        values = values[np.isfinite(values)]
        return [float(v) for v in np.quantile(values, q)] if len(values) else [np.inf] * len(q)

    edges = tuple(quantiles(np.asarray(arpu_mean, dtype=np.float64), [0.2, 0.4, 0.6, 0.8]))
    intensive = tuple(
        (name, quantiles(np.asarray(usage[name], dtype=np.float64), [INTENSIVE_QUANTILE])[0]) for name in USAGE
    )
    return Population(edges, intensive)


def value_bands(mean: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """Band 1..5 of each mean between the edges (on an edge: the upper band); 0 when unknown."""
    band = 1 + np.searchsorted(np.asarray(edges), mean, side="right")
    return np.where(np.isfinite(mean), band, 0)


def arpu_trend(mean: np.ndarray, slope: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``up|flat|down`` per customer ("" when unknown) and the slope as a share of the mean."""
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(mean > 0, slope / mean, np.nan)
    label = np.select([share >= TREND_SHARE, share <= -TREND_SHARE, np.isfinite(share)], ["up", "down", "flat"], "")
    return label, share


def _floats(table: pa.Table, column: str) -> np.ndarray:
    return np.asarray(table.column(column).to_numpy(zero_copy_only=False), dtype=np.float64)


def consumption_tags(customers: pa.Table, city: City, pop: Population) -> pa.Table:
    """value tier, ARPU trend, usage intensity, high-value residence, car owner."""
    ids = _strings(customers, "customer_id")
    mean, slope = arpu_stats(customers.column("arpu"))
    band = value_bands(mean, pop.arpu_edges)
    label, share = arpu_trend(mean, slope)
    out = [tag_table(ids[band > 0], [f"value:{b}" for b in band[band > 0]])]
    out.append(tag_table(ids[label != ""], [f"arpu-trend:{t}" for t in label[label != ""]], share[label != ""]))
    for name, threshold in pop.intensive:
        usage = _floats(customers, USAGE[name])
        out.append(tag_table(ids[(usage >= threshold) & (usage > 0)], f"intensive:{name}"))
    home = city.cell_place(customers.column("home_cell"))
    rich = _lookup(city.price_band, home, 0) >= HIGH_VALUE_PRICE_BAND
    out.append(tag_table(ids[rich], "residence:high-value", 1.0, city.place_id[home[rich]]))
    car = np.asarray(customers.column("car_owner").fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)
    out.append(tag_table(ids[car], "car-owner"))
    return pa.concat_tables(out)


def travel_tags(visits: Visits, ids: np.ndarray, city: City) -> pa.Table:
    """``travel``: any stay at an airport; the key building is the airport with most time."""
    at = visits.take(city.is_airport[visits.place])
    (customer, place), group = group_rows(at.customer, at.place)
    time = np.bincount(group, weights=at.end_ms - at.start_ms, minlength=len(customer))
    best = _best(customer, time)
    return tag_table(ids[customer[best]], "travel", 1.0, city.place_id[place[best]])


# --- stay areas ---------------------------------------------------------------------------------


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


# --- life circles -------------------------------------------------------------------------------


def region_tags(customers: pa.Table, city: City) -> pa.Table:
    """``circle:region:<district>[:home|:work]`` from the home and work cells' places."""
    ids = _strings(customers, "customer_id")
    place = {role: city.cell_place(customers.column(f"{role}_cell")) for role in ("home", "work")}
    district = {role: _lookup(city.district, p) for role, p in place.items()}
    out = []
    for role in ("home", "work"):
        ok = np.array([d is not None for d in district[role]], dtype=bool)
        names = [f"circle:region:{d}:{role}" for d in district[role][ok]]
        out.append(tag_table(ids[ok], names, 1.0, city.place_id[place[role][ok]]))
        if role == "work":
            ok &= district["work"] != district["home"]
        names = [f"circle:region:{d}" for d in district[role][ok]]
        out.append(tag_table(ids[ok], names, 1.0, city.place_id[place[role][ok]]))
    return pa.concat_tables(out)


def circle_levels(prefix: np.ndarray, rows: np.ndarray, areas: StayAreas, ids: np.ndarray, city: City) -> pa.Table:
    """``<prefix>``, ``<prefix>:<l2>`` and ``<prefix>:<l2>:<l3>`` (``prefix`` per row) for the
    stay-area ``rows``; at each level the row with the highest share, then stay time, gives the
    value and the key building."""
    out = []
    for level, code in ((0, None), (1, city.l2_code), (2, city.path_code)):
        customer = areas.customer[rows]
        group = customer if code is None else group_rows(customer, code[areas.place[rows]])[1]
        chosen = _best(group, areas.share[rows], areas.stay_ms[rows])
        best = rows[chosen]
        levels = zip(prefix[chosen], city.l2[areas.place[best]], city.l3[areas.place[best]], strict=True)
        names = [":".join(parts[: level + 1]) for parts in levels]
        out.append(tag_table(ids[areas.customer[best]], names, areas.share[best], city.place_id[areas.place[best]]))
    return pa.concat_tables(out)


def people_tags(areas: StayAreas, ids: np.ndarray, city: City) -> pa.Table:
    """``circle:people:<circle>[:<l2>[:<l3>]]`` from the main frequent weekday-daytime place."""
    frequent = np.flatnonzero((areas.slot == 0) & (areas.share >= FREQUENT))
    rows = frequent[_best(areas.customer[frequent], areas.stay_ms[frequent], areas.share[frequent])]
    circle = np.array([PEOPLE_CIRCLES.get(c, "") for c in city.l1[areas.place[rows]]], dtype=object)
    rows, circle = rows[circle != ""], circle[circle != ""]
    return circle_levels(np.array([f"circle:people:{c}" for c in circle], dtype=object), rows, areas, ids, city)


def demand_tags(areas: StayAreas, ids: np.ndarray, city: City) -> pa.Table:
    """``circle:demand:<class>[:<l2>[:<l3>]]`` from general or frequent presence at matching places."""
    out = []
    for name, values in DEMAND_RULES:
        rows = np.flatnonzero((areas.share >= GENERAL) & city.matches(values)[areas.place])
        out.append(circle_levels(np.full(len(rows), f"circle:demand:{name}", dtype=object), rows, areas, ids, city))
    return pa.concat_tables(out)


def nine_to_five_tags(visits: Visits, customers: pa.Table, city: City, window: Window) -> pa.Table:
    """``circle:behaviour:nine-to-five``: long office hours at one office on most weekdays."""
    ids = _strings(customers, "customer_id")
    work = city.cell_place(customers.column("work_cell"))
    office = visits.take(city.is_office[visits.place] | (visits.place == work[visits.customer]))
    row, date, overlap = split_daily(office.start_ms, office.end_ms, *OFFICE_HOURS)
    keep = ~is_weekend(date) & window.holds(date)
    row, date, overlap = row[keep], date[keep], overlap[keep]
    (customer, place, _), group = group_rows(office.customer[row], office.place[row], date)
    long = np.bincount(group, weights=overlap, minlength=len(customer)) >= NINE_TO_FIVE_MIN_MS
    (customer, place), group = group_rows(customer[long], place[long])
    share = np.bincount(group, minlength=len(customer)) / max(window.weekdays(), 1)
    best = _best(customer, share)
    best = best[share[best] >= NINE_TO_FIVE_SHARE]
    return tag_table(ids[customer[best]], "circle:behaviour:nine-to-five", share[best], city.place_id[place[best]])


def business_traveller_tags(pres: Presence, ids: np.ndarray, city: City, window: Window) -> pa.Table:
    """``circle:behaviour:business-traveller``: at an airport on several dates."""
    ok = pres.present & city.is_airport[pres.place]
    (customer, place, date), _ = group_rows(pres.customer[ok], pres.place[ok], pres.date[ok])
    dates = np.bincount(group_rows(customer, date)[0][0], minlength=len(ids))
    (customer, place), group = group_rows(customer, place)
    best = _best(customer, np.bincount(group, minlength=len(customer)))
    best = best[dates[customer[best]] >= BUSINESS_TRAVELLER_DATES]
    share = dates[customer[best]] / max(len(window.dates()), 1)
    return tag_table(ids[customer[best]], "circle:behaviour:business-traveller", share, city.place_id[place[best]])


def night_owl_tags(
    visits: Visits, customers: pa.Table, city: City, window: Window, sessions: pa.Table | None = None
) -> pa.Table:
    """``circle:behaviour:night-owl``: up after midnight (sessions, or out) on many dates."""
    ids = _strings(customers, "customer_id")
    home, work = (city.cell_place(customers.column(f"{role}_cell")) for role in ("home", "work"))
    away = ~city.is_residential[visits.place] & (visits.place != home[visits.customer])
    out = visits.take(away & (visits.place != work[visits.customer]))
    row, date, overlap = split_daily(out.start_ms, out.end_ms, *LATE_HOURS)
    (customer, date), group = group_rows(out.customer[row], date)
    late = np.bincount(group, weights=overlap, minlength=len(customer)) >= MIN_PRESENCE_MS
    customer, date = customer[late], date[late]
    if sessions is not None and sessions.num_rows:
        who = _index(sessions.column("customer_id"), customers.column("customer_id"))
        start = np.asarray(sessions.column("start_ms").to_numpy(), dtype=np.int64)
        up = (who >= 0) & ((start + LOCAL_OFFSET_MS) % DAY_MS < (LATE_HOURS[1] - 24) * HOUR_MS)
        customer = np.concatenate([customer, who[up]])
        date = np.concatenate([date, local_date(start[up], LATE_HOURS[0])])
    inside = window.holds(date)
    customer = group_rows(customer[inside], date[inside])[0][0]
    share = np.bincount(customer, minlength=len(ids)) / max(len(window.dates()), 1)
    ok = share >= NIGHT_OWL_SHARE
    return tag_table(ids[ok], "circle:behaviour:night-owl", share[ok])


# --- events -------------------------------------------------------------------------------------


def event_overlap(visits: Visits, venue: int, start_ms: int, end_ms: int, customers: int) -> np.ndarray:
    """Per customer (row of the part's customers): ms of their stays at ``venue`` in the event."""
    at = visits.take(visits.place == venue)
    overlap = np.clip(np.minimum(at.end_ms, end_ms) - np.maximum(at.start_ms, start_ms), 0, None)
    return np.bincount(at.customer, weights=overlap, minlength=customers)


def event_tags(visits: Visits, ids: np.ndarray, city: City) -> pa.Table:
    """``event:<type>:<event_id>`` for enough overlap with an event, and ``event:<type>`` once
    per type (the venue of the earliest such event)."""
    events = city.events.sort_by("start_ms")
    venue = city.place_index(events.column("place_id"))
    out: list[pa.Table] = []
    first: dict[tuple[str, str], Any] = {}
    for i, (event_id, kind) in enumerate(zip(_strings(events, "event_id"), _strings(events, "type"), strict=True)):
        start, end = events.column("start_ms")[i].as_py(), events.column("end_ms")[i].as_py()
        total = event_overlap(visits, int(venue[i]), start, end, len(ids))
        who = np.flatnonzero(total >= EVENT_MIN_OVERLAP_MS)
        place = _lookup(city.place_id, venue[i : i + 1])[0]
        share = np.minimum(total[who] / max(end - start, 1), 1.0)
        out.append(tag_table(ids[who], f"event:{kind}:{event_id}", share, place))
        for customer in ids[who]:
            first.setdefault((customer, kind), place)
    out.append(tag_table([c for c, _ in first], [f"event:{k}" for _, k in first], 1.0, list(first.values())))
    return pa.concat_tables(out)


# --- one part -----------------------------------------------------------------------------------


def tag_part(
    customers: pa.Table,
    stays: pa.Table,
    city: City,
    window: Window,
    pop: Population,
    sessions: pa.Table | None = None,
) -> tuple[pa.Table, pa.Table]:
    """All tag families for one part's customers: (tags in ``layout.TAGS`` sorted by customer and
    tag, the stay-area analysis in ``STAY_AREAS``)."""
    ids = _strings(customers, "customer_id")
    visits = resolve_visits(stays, customers.column("customer_id"), city, window)
    pres = presence(visits, window)
    areas = stay_areas(pres, window)
    families = [
        consumption_tags(customers, city, pop),
        travel_tags(visits, ids, city),
        stay_tags(areas, ids, city),
        region_tags(customers, city),
        people_tags(areas, ids, city),
        demand_tags(areas, ids, city),
        nine_to_five_tags(visits, customers, city, window),
        business_traveller_tags(pres, ids, city, window),
        night_owl_tags(visits, customers, city, window, sessions),
        event_tags(visits, ids, city),
    ]
    tags = pa.concat_tables(families).sort_by([("customer_id", "ascending"), ("tag", "ascending")])
    return tags, stay_area_table(areas, ids, city)


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


# --- the job ------------------------------------------------------------------------------------


def _population_part(path: Path) -> dict[str, np.ndarray]:
    customers = pq.read_table(path, columns=["arpu", *USAGE.values()])
    usage = {name: _floats(customers, column).astype(np.float32) for name, column in USAGE.items()}
    return {"arpu_mean": arpu_stats(customers.column("arpu"))[0].astype(np.float32), **usage}


def population_of(data: Path, customer_parts: Sequence[Path]) -> Population:
    """The first pass: edges over every customer of the data set."""
    pieces = run_parts(_population_part, list(customer_parts), label="tags: population")

    def joined(key: str) -> np.ndarray:
        return np.concatenate([p[key] for p in pieces]) if pieces else np.zeros(0)

    return population(joined("arpu_mean"), {name: joined(name) for name in USAGE})


@dataclass(frozen=True)
class TagTask:
    data: Path
    part: str  # file name, the same in every per-customer table
    window: Window
    pop: Population


def customer_chunks(customers: pa.Table, size: int, *tables: pa.Table) -> Iterator[tuple[pa.Table, ...]]:
    """The part in slices of ``size`` customers, each with those customers' rows of ``tables``:
    every family is per customer, so a task's memory is bounded by ``size``, not the part."""
    ids = customers.column("customer_id")
    chunk_of = [_index(t.column("customer_id"), ids) // size for t in tables]  # -1: unknown customer
    for k, start in enumerate(range(0, customers.num_rows, size)):
        yield customers.slice(start, size), *(t.filter(pa.array(c == k)) for t, c in zip(tables, chunk_of, strict=True))


def _tag_task(task: TagTask) -> dict[str, Any]:
    customers = read_part(task.data, "customers", task.part)
    stays = read_part(task.data, "stays", task.part)
    sessions = read_part(task.data, "sessions", task.part, ["customer_id", "start_ms"])
    city = load_city(task.data)
    done = [
        tag_part(*chunk[:2], city, task.window, task.pop, chunk[2])
        for chunk in customer_chunks(customers, CHUNK_CUSTOMERS, stays, sessions)
    ]
    tags = _concat([d[0] for d in done], layout.TAGS).sort_by([("customer_id", "ascending"), ("tag", "ascending")])
    areas = _concat([d[1] for d in done], STAY_AREAS)
    write_table(tags, layout.job_dir(task.data, JOB) / task.part)
    write_table(areas, layout.job_dir(task.data, STAY_AREAS_JOB) / task.part)
    return {
        "customers": customers.num_rows,
        "rows": tags.num_rows,
        "tagged": len(pc.unique(tags.column("customer_id"))),
        "counts": dict(Counter(tags.column("tag").to_pylist())),
        "stay_areas": areas.num_rows,
    }


def _concat(tables: list[pa.Table], schema: pa.Schema) -> pa.Table:
    return pa.concat_tables(tables) if tables else schema.empty_table()


def _clear(directory: Path) -> None:
    """Drop the part files of an earlier run (it may have had more parts)."""
    for old in directory.glob("part-*.parquet"):
        old.unlink()


def _family(tag: str) -> str:
    head = tag.split(":", 2)
    return ":".join(head[:2]) if head[0] in ("circle", "stay") and len(head) > 1 else head[0]


def summarise(results: Iterable[dict[str, Any]], window: Window, pop: Population, top: int = 100) -> dict[str, Any]:
    """The job summary from the parts' figures."""
    results = list(results)
    counts: Counter[str] = Counter()
    for r in results:
        counts.update(r["counts"])
    families: Counter[str] = Counter()
    for tag, n in counts.items():
        families[_family(tag)] += n
    return {
        "job": JOB,
        "parts": len(results),
        "customers": sum(r["customers"] for r in results),
        "customers_tagged": sum(r["tagged"] for r in results),
        "rows": sum(r["rows"] for r in results),
        "distinct_tags": len(counts),
        "stay_areas": sum(r["stay_areas"] for r in results),
        "window": window.describe(),
        "population": {"arpu_edges": [round(e, 2) for e in pop.arpu_edges], "intensive": dict(pop.intensive)},
        "families": dict(sorted(families.items())),
        "tag_counts": dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top]),
    }


def run(data: Path, *, now_ms: int | None = None) -> dict[str, Any]:
    """Tag every customer of ``data`` (as of ``now_ms``, default: the data's end); returns the
    summary, also written to ``jobs/tags/summary.json``."""
    timer = JobTimer()
    data = Path(data)
    customer_parts = layout.parts(data, "customers")
    if not customer_parts:
        raise NotFound(f"data set {data}: no customers parts in {layout.table_dir(data, 'customers')}")
    window = observation_window(data, now_ms=now_ms)
    pop = population_of(data, customer_parts)
    for job in (JOB, STAY_AREAS_JOB):
        _clear(layout.job_dir(data, job))
    tasks = [TagTask(data, part.name, window, pop) for part in customer_parts]
    results = run_parts(_tag_task, tasks, label="tags")
    summary = {**summarise(results, window, pop), **timer.figures()}
    write_summary(layout.job_dir(data, JOB), summary)
    return summary
