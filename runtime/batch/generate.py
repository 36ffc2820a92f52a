"""Deterministic synthetic data: a city, its customers and what they did over a period.

``generate(out, customers=..., days=...)`` writes a data set in the layout of ``layout.py``.
Behaviour is driven by latent preferences (:data:`PREFERENCES`, each in 0..1, correlated with
age, gender and wealth): they decide where people spend weekends and evenings, who goes to the
CBA games and concerts, who flies abroad, which sites they browse, who phones the sales line and
who adopted which product. A model trained on behaviour-derived features therefore finds real
signal. The preferences are written to ``out/truth/latent.parquet`` for evaluation only: jobs
must not read it.

A customer-day of stays follows one of five plans, as eight slots (absent slots are dropped)::

    slot       0     1        2          3          4        5         6        7
    work       home  commute  work       work       commute  evening   commute  home
    leisure    home  commute  place 1    place 2    commute  evening   commute  home
    domestic   home  commute  hub        (away)     -        hub       commute  home
    abroad     home  commute  intl hall  (no stays until the trip ends)
    away       (no stays)

Evenings are optional: a leisure place or, for attendees, the event's venue from before the
event starts until after it ends. Weekdays are Monday to Friday; public holidays (the period
starts on National Day by default) are not modelled.

Determinism: the city and the events come from ``seed``; part ``k`` (a contiguous range of
customers) from ``(seed, k)`` alone, so results do not depend on how tasks are scheduled (they
do depend on ``parts``). Times are epoch ms (UTC); days start at local midnight, Asia/Shanghai.
"""

from __future__ import annotations

import json
import resource
import shutil
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from runtime.batch import layout
from runtime.batch.runner import JobTimer, run_parts, write_table
from runtime.errors import InputError

PREFERENCES = ("sports", "music", "travel", "finance", "video", "family", "car")
SPORTS, MUSIC, TRAVEL, FINANCE, VIDEO, FAMILY, CAR = range(len(PREFERENCES))
CUSTOMERS_PER_PART = 50_000
DAY_MS = 86_400_000
TIMEZONE = "Asia/Shanghai"
_LOCAL = timezone(timedelta(hours=8))  # Shanghai has had no DST since 1991: no tzdata needed
_CENTRE, _AIRPORT = (31.23, 121.47), (31.151, 121.799)

DISTRICTS = ("huangpu", "jingan", "xuhui", "changning", "putuo", "hongkou", "yangpu", "pudong")
_DISTRICT_OFFSET = np.array(  # degrees from the centre, by district
    [(0, 0.02), (0.02, -0.02), (-0.04, -0.03), (-0.01, -0.08), (0.05, -0.06), (0.05, 0.02), (0.07, 0.06), (-0.01, 0.09)]
)
_CBD, _UPMARKET = (0, 1, 7), (1, 2, 3, 7)
_ROAD_CELLS_PER_DISTRICT = 60

# key, category l1 > l2 > l3, price band (0: none), how many, districts (None: any). Kinds with
# one place are venues; a kind's places are contiguous, and so are a place's cells.
_KINDS: tuple[tuple[str, str, str, str, int, int, tuple[int, ...] | None], ...] = (
    ("estate-1", "residential", "estate", "estate-low", 1, 40, None),
    ("estate-2", "residential", "estate", "estate-low", 2, 50, None),
    ("estate-3", "residential", "estate", "estate-mid", 3, 55, None),
    ("estate-4", "residential", "estate", "estate-high", 4, 30, _UPMARKET),
    ("estate-5", "residential", "estate", "estate-high", 5, 15, _UPMARKET),
    ("grade-a-tower", "office", "tower", "grade-a-tower", 0, 25, _CBD),
    ("grade-b-tower", "office", "tower", "grade-b-tower", 0, 40, None),
    ("university", "education", "school", "university", 0, 8, None),
    ("high-school", "education", "school", "high-school", 0, 15, None),
    ("intl-hall", "transport", "airport", "international-departure-hall", 0, 1, (7,)),
    ("domestic-hall", "transport", "airport", "domestic-hall", 0, 1, (7,)),
    ("railway", "transport", "station", "railway", 0, 3, None),
    ("basketball-arena", "sports", "stadium", "basketball-arena", 0, 1, (2,)),
    ("football", "sports", "stadium", "football", 0, 2, None),
    ("fitness-centre", "sports", "gym", "fitness-centre", 0, 15, None),
    ("shopping-mall", "retail", "mall", "shopping-mall", 0, 25, None),
    ("outlet", "retail", "mall", "outlet", 0, 3, None),
    ("car-dealership", "retail", "auto", "car-dealership", 0, 8, None),
    ("general-hospital", "health", "hospital", "general-hospital", 0, 10, None),
    ("clinic", "health", "hospital", "clinic", 0, 10, None),
    ("park", "leisure", "scenic-spot", "park", 0, 15, None),
    ("museum", "leisure", "scenic-spot", "museum", 0, 6, None),
    ("concert-hall", "leisure", "venue", "concert-hall", 0, 1, (0,)),
    ("cinema", "leisure", "venue", "cinema", 0, 12, None),
    ("ktv", "leisure", "venue", "ktv", 0, 10, None),
)
KIND = {k[0]: i for i, k in enumerate(_KINDS)}

# Where people go when free: place kind, base weight, weight per unit of a preference.
_LEISURE = (
    ("shopping-mall", 1.0, {FAMILY: 0.5}),
    ("outlet", 0.15, {}),
    ("fitness-centre", 0.1, {SPORTS: 1.6}),
    ("football", 0.02, {SPORTS: 0.8}),
    ("park", 0.3, {FAMILY: 0.8, TRAVEL: 0.3}),
    ("museum", 0.08, {TRAVEL: 0.5}),
    ("cinema", 0.2, {VIDEO: 1.2}),
    ("ktv", 0.08, {MUSIC: 1.2}),
    ("car-dealership", 0.01, {CAR: 0.5}),
    ("general-hospital", 0.04, {}),  # and more for retirees
)
_LEISURE_KIND = np.array([KIND[k] for k, _, _ in _LEISURE])

# product, domain, name, the preference behind adoption, logit intercept and slope
PRODUCTS = (
    ("5g-upgrade", "telecom", "5G plan upgrade", VIDEO, -3.0, 3.5),
    ("video-pack", "telecom", "Video streaming pack", VIDEO, -3.8, 5.0),
    ("roaming-pack", "telecom", "International roaming pack", TRAVEL, -4.2, 6.0),
    ("family-plan", "telecom", "Family shared plan", FAMILY, -3.8, 5.0),
    ("music-pack", "telecom", "Music streaming pack", MUSIC, -3.8, 5.0),
    ("wealth-beginner", "bank", "Wealth management for beginners", FINANCE, -4.2, 6.0),
    ("credit-card", "bank", "Travel rewards credit card", FINANCE, -4.2, 3.5),  # and travel
    ("car-insurance", "bank", "Car insurance", CAR, -3.0, 4.0),
)
_PRODUCT = {p[0]: i for i, p in enumerate(PRODUCTS)}

# campaign, product, channel, days before the period starts
_CAMPAIGNS = (
    ("2026-07-5g-sms", "5g-upgrade", "sms", 80),
    ("2026-08-roaming-push", "roaming-pack", "app-push", 50),
    ("2026-09-wealth-sms", "wealth-beginner", "sms", 25),
    ("2026-09-video-outbound", "video-pack", "outbound-call", 20),
    ("2026-09-card-app", "credit-card", "app-push", 12),
)

# site, base weight, weight per unit of a preference, median duration (s)
_SITES = (
    ("official", 0.3, {FINANCE: 0.6}, 120),
    ("video", 0.5, {VIDEO: 2.0}, 900),
    ("shopping", 0.6, {FAMILY: 0.3}, 300),
    ("sports", 0.1, {SPORTS: 1.5}, 240),
    ("music", 0.1, {MUSIC: 1.5}, 600),
    ("finance", 0.05, {FINANCE: 1.5}, 180),
    ("travel", 0.05, {TRAVEL: 1.2}, 240),
    ("news", 0.5, {}, 180),
    ("social", 1.0, {}, 300),
    ("car", 0.02, {CAR: 1.0}, 200),
    ("education", 0.05, {FAMILY: 1.0}, 300),
)
_MONEY_SITES = (0, 5)  # official and finance: those interested in money stay longer
_HOURLY = np.array([1, 0.5, 0.3, 0.2, 0.2, 0.4, 1, 3, 5, 5, 5, 5, 6, 5, 5, 5, 5, 5, 6, 7, 8, 8, 6, 3])

TIERS = ("bronze", "silver", "gold", "platinum")
_ARPU_BY_TIER = np.array([45.0, 88.0, 158.0, 298.0])
PLANS = ("prepaid", "4g-basic", "5g-basic", "5g-plus")
BRANDS = ("huawei", "apple", "xiaomi", "oppo", "vivo", "honor", "samsung")
BANKS = ("icbc", "ccb", "boc", "abc", "bocom", "cmb", "spdb")
STUDENT, WORKER, RETIREE, AT_HOME = range(4)
_BIJECTION = 2_654_435_761  # coprime with 7e9 and 1e12: i -> i * m + c mod M never repeats
_SLOTS = 8


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _pick(first: np.ndarray, count: np.ndarray, group: np.ndarray, u: np.ndarray) -> np.ndarray:
    """A member of each ``group`` (the contiguous range ``first``, ``count``), chosen by ``u`` in [0, 1)."""
    return first[group] + (u * count[group]).astype(np.int64)


def _draw(weights: np.ndarray, u: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """Inverse-CDF draws: the column of row ``rows[i]`` of ``weights`` that ``u[i]`` falls in. One
    searchsorted over the row-offset CDFs, so ``weights[rows]`` is never materialised."""
    n, k = weights.shape
    cdf = np.cumsum(weights, axis=1)
    flat = (cdf / cdf[:, -1:] + np.arange(n)[:, None]).ravel()
    rows = np.arange(n) if rows is None else rows
    return np.minimum(np.searchsorted(flat, rows + u, side="right") - rows * k, k - 1)


def _weights(table: tuple[Any, ...], prefs: np.ndarray) -> np.ndarray:
    base = np.array([row[1] for row in table])
    gains = np.zeros((len(PREFERENCES), len(table)))
    for j, row in enumerate(table):
        for pref, gain in row[2].items():
            gains[pref, j] = gain
    return base + prefs @ gains


def _labels(names: tuple[str, ...] | list[str] | pa.Array, codes: np.ndarray) -> pa.Array:
    """Strings by code, without building a Python or NumPy string per row."""
    return pc.take(names if isinstance(names, pa.Array) else pa.array(names, pa.string()), pa.array(codes))


# --- the world: city, products, events ----------------------------------------------------------


@dataclass(frozen=True)
class World:
    """What every part shares: the city, the products and the period with its events."""

    places: pa.Table
    cells: pa.Table
    products: pa.Table
    events: pa.Table
    kind_first: np.ndarray  # per kind: its places
    kind_count: np.ndarray
    place_district: np.ndarray
    place_first_cell: np.ndarray  # per place: its cells
    place_cell_count: np.ndarray
    road_first: np.ndarray  # per district: its cells in no place
    road_count: np.ndarray
    start_ms: int
    days: int
    first_weekday: int  # Monday 0
    event_day: np.ndarray
    event_place: np.ndarray
    event_sports: np.ndarray  # True: a game (sports fans go); False: a concert (music fans go)
    event_start_min: np.ndarray  # local minutes of the day
    event_end_min: np.ndarray

    @property
    def cell_ids(self) -> pa.Array:
        return self.cells.column("cell_id").combine_chunks()


def build_world(seed: int, days: int, start: str) -> World:
    """The city (places in eight districts, their cells, road cells), the products and the events
    of the ``days`` from local midnight of ``start``: all from ``seed`` alone."""
    rng = np.random.default_rng([seed, 0])  # parts use [seed, 1 + part]
    kind_count = np.array([k[5] for k in _KINDS])
    kind_first = np.concatenate([[0], np.cumsum(kind_count)[:-1]])
    kind = np.repeat(np.arange(len(_KINDS)), kind_count)
    district = np.array([rng.choice(_KINDS[k][6] or len(DISTRICTS)) for k in kind])
    places, lat, lon = _places(rng, kind, district)
    cells, first_cell, n_cells = _cells(rng, kind, lat, lon, places.column("place_id").to_pylist())
    first = date.fromisoformat(start)
    start_ms = int(datetime(first.year, first.month, first.day, tzinfo=_LOCAL).timestamp() * 1000)
    events = _events(days)
    event_place = kind_first[[KIND[e[0]] for e in events]]
    event_day, event_start, event_end = (np.array([e[i] for e in events], np.int64) for i in (1, 2, 3))
    events_table = pa.table(
        [
            [
                f"{'cba' if e[0] == 'basketball-arena' else 'concert'}-{first + timedelta(days=e[1]):%Y%m%d}"
                for e in events
            ],
            ["cba-game" if e[0] == "basketball-arena" else "concert" for e in events],
            places.column("place_id").take(event_place),
            start_ms + event_day * DAY_MS + event_start * 60_000,
            start_ms + event_day * DAY_MS + event_end * 60_000,
        ],
        schema=layout.EVENT_DEFS,
    )
    roads = int(n_cells.sum())  # road cells follow the places' cells, district by district
    return World(
        places=places,
        cells=cells,
        products=pa.table([[p[i] for p in PRODUCTS] for i in range(3)], schema=layout.PRODUCTS),
        events=events_table,
        kind_first=kind_first,
        kind_count=kind_count,
        place_district=district,
        place_first_cell=first_cell,
        place_cell_count=n_cells,
        road_first=roads + np.arange(len(DISTRICTS)) * _ROAD_CELLS_PER_DISTRICT,
        road_count=np.full(len(DISTRICTS), _ROAD_CELLS_PER_DISTRICT),
        start_ms=start_ms,
        days=days,
        first_weekday=first.weekday(),
        event_day=event_day,
        event_place=event_place,
        event_sports=np.array([e[0] == "basketball-arena" for e in events]),
        event_start_min=event_start,
        event_end_min=event_end,
    )


def _places(
    rng: np.random.Generator, kind: np.ndarray, district: np.ndarray
) -> tuple[pa.Table, np.ndarray, np.ndarray]:
    lat = _CENTRE[0] + _DISTRICT_OFFSET[district, 0] + rng.normal(0, 0.012, kind.size)
    lon = _CENTRE[1] + _DISTRICT_OFFSET[district, 1] + rng.normal(0, 0.012, kind.size)
    airport = np.isin(kind, [KIND["intl-hall"], KIND["domestic-hall"]])
    lat[airport], lon[airport] = _AIRPORT[0] + rng.normal(0, 0.002, 2), _AIRPORT[1] + rng.normal(0, 0.002, 2)
    number = np.arange(kind.size) - np.concatenate([[0], np.cumsum(np.bincount(kind))[:-1]])[kind] + 1
    names = [
        f"{DISTRICTS[d].title()} {_KINDS[k][3].replace('-', ' ').title()} {i}"
        for k, d, i in zip(kind, district, number, strict=True)
    ]
    band = np.array([_KINDS[k][4] for k in kind])
    columns = [[f"p{i + 1:04d}" for i in range(kind.size)], names]
    columns += [[_KINDS[k][level] for k in kind] for level in (1, 2, 3)]
    columns += [[DISTRICTS[d] for d in district], pa.array(band, pa.int8(), mask=band == 0), lat, lon]
    return pa.table(columns, schema=layout.PLACES), lat, lon


def _cells(
    rng: np.random.Generator, kind: np.ndarray, lat: np.ndarray, lon: np.ndarray, place_ids: list[str]
) -> tuple[pa.Table, np.ndarray, np.ndarray]:
    """About three cells per place (six where crowds gather), then each district's road cells."""
    n_cells = rng.integers(2, 5, kind.size)
    n_cells[np.isin(kind, [KIND["intl-hall"], KIND["domestic-hall"], KIND["basketball-arena"]])] = 6
    first_cell = np.concatenate([[0], np.cumsum(n_cells)[:-1]])
    cell_place = np.repeat(np.arange(kind.size), n_cells)
    road_district = np.repeat(np.arange(len(DISTRICTS)), _ROAD_CELLS_PER_DISTRICT)
    spread = np.concatenate([np.full(cell_place.size, 0.001), np.full(road_district.size, 0.02)])
    cell_lat = np.concatenate([lat[cell_place], _CENTRE[0] + _DISTRICT_OFFSET[road_district, 0]])
    cell_lon = np.concatenate([lon[cell_place], _CENTRE[1] + _DISTRICT_OFFSET[road_district, 1]])
    n = spread.size
    cells = pa.table(
        [
            [f"cell-{i + 1:05d}" for i in range(n)],
            pa.array([place_ids[p] for p in cell_place] + [None] * road_district.size, pa.string()),
            cell_lat + rng.normal(0, 1, n) * spread,
            cell_lon + rng.normal(0, 1, n) * spread,
        ],
        schema=layout.CELLS,
    )
    return cells, first_cell, n_cells


def _events(days: int) -> list[tuple[str, int, int, int]]:
    """(venue, day, start, end in local minutes): CBA games every fourth day at 19:35-21:45,
    concerts weekly at 19:30-22:00; at least one of each."""
    games = [d for d in range(days) if d % 4 == 1] or [0]
    concerts = [d for d in range(days) if d % 7 == 2] or [days - 1]
    events = [("basketball-arena", d, 1175, 1305) for d in games] + [("concert-hall", d, 1170, 1320) for d in concerts]
    return sorted(events, key=lambda e: (e[1], e[0]))


# --- customers ----------------------------------------------------------------------------------


@dataclass
class People:
    """One part's customers, as columns (row ``i`` is the part's ``i``-th customer)."""

    index: np.ndarray  # global, 0-based: the customer_id is c{index + 1:07d}
    segment: np.ndarray  # STUDENT, WORKER, RETIREE, AT_HOME
    age: np.ndarray
    male: np.ndarray
    wealth: np.ndarray  # about standard normal
    tier: np.ndarray  # index into TIERS
    prefs: np.ndarray  # (n, len(PREFERENCES)), each in 0..1
    home_place: np.ndarray
    home_cell: np.ndarray
    work_place: np.ndarray  # -1: no regular workplace
    work_cell: np.ndarray
    leave_min: np.ndarray  # habits: when they leave for work, leave work, how long the commute is
    off_min: np.ndarray
    commute_min: np.ndarray
    leisure: np.ndarray  # (n, len(_LEISURE)) weights
    favourite: np.ndarray  # (n, len(_LEISURE)) in [0, 1): the place of a kind one usually goes to
    trip_day: np.ndarray  # the day one flies abroad, -1: not in this period
    trip_days: np.ndarray  # days away after it


def _people(rng: np.random.Generator, world: World, lo: int, hi: int) -> People:
    n = hi - lo
    segment = rng.choice(4, n, p=[0.08, 0.70, 0.17, 0.05])
    age = np.select(
        [segment == STUDENT, segment == WORKER, segment == RETIREE],
        [rng.integers(18, 24, n), 23 + rng.beta(2, 3, n) * 37, rng.integers(60, 86, n)],
        rng.integers(25, 56, n),
    ).astype(np.int64)
    male = rng.random(n) < 0.5
    wealth = rng.normal(0, 1, n) + 0.5 * np.exp(-(((age - 42) / 12) ** 2)) - 0.8 * (segment == STUDENT)
    tier = np.searchsorted([0.1, 0.95, 1.75], wealth)  # about 45 / 30 / 18 / 7 %
    prefs = _preferences(rng, age, male, wealth)
    band = np.clip(np.rint(3 + wealth + rng.normal(0, 0.7, n)), 1, 5).astype(np.int64)
    home_place = _pick(world.kind_first, world.kind_count, KIND["estate-1"] + band - 1, rng.random(n))
    grade_a = rng.random(n) < _sigmoid(-0.8 + 1.2 * wealth)
    work_kind = np.where(grade_a, KIND["grade-a-tower"], KIND["grade-b-tower"])
    work_kind = np.where(segment == STUDENT, KIND["university"], work_kind)
    works = (segment == STUDENT) | ((segment == WORKER) & (rng.random(n) < 0.92))
    work_place = np.where(works, _pick(world.kind_first, world.kind_count, work_kind, rng.random(n)), -1)
    work_cell = _pick(world.place_first_cell, world.place_cell_count, np.maximum(work_place, 0), rng.random(n))
    leisure = _weights(_LEISURE, prefs)
    leisure[:, -1] += 0.25 * (segment == RETIREE)
    trip_p = (0.02 + 0.6 * prefs[:, TRAVEL] ** 2) * (0.6 + 0.3 * tier) * world.days / 30
    travels = (rng.random(n) < np.minimum(0.95, trip_p)) & (segment != STUDENT)
    return People(
        index=np.arange(lo, hi),
        segment=segment,
        age=age,
        male=male,
        wealth=wealth,
        tier=tier,
        prefs=prefs,
        home_place=home_place,
        home_cell=_pick(world.place_first_cell, world.place_cell_count, home_place, rng.random(n)),
        work_place=work_place,
        work_cell=np.where(works, work_cell, -1),
        leave_min=420 + rng.uniform(0, 90, n),
        off_min=1050 + rng.uniform(0, 90, n),
        commute_min=rng.uniform(15, 70, n),
        leisure=leisure,
        favourite=rng.random((n, len(_LEISURE))),
        trip_day=np.where(travels, rng.integers(0, world.days, n), -1),
        trip_days=rng.integers(1, 6, n),
    )


def _preferences(rng: np.random.Generator, age: np.ndarray, male: np.ndarray, wealth: np.ndarray) -> np.ndarray:
    """Logit-normal, each shifted by demographics: the young like sports, music and video, the
    well-off travel, invest and drive, people in their thirties and forties have families."""
    young, mid = (35 - age) / 12, np.exp(-(((age - 40) / 10) ** 2))
    logits = np.stack(
        [
            -1.0 + 0.7 * male + 0.4 * young,
            -1.0 + 0.5 * young + 0.2 * ~male,
            -1.3 + 0.6 * wealth + 0.5 * mid,
            -1.3 + 0.6 * wealth + 0.3 * (age - 40) / 15,
            -0.8 + 0.6 * young,
            -1.5 + 1.5 * np.exp(-(((age - 38) / 8) ** 2)),
            -1.6 + 0.5 * wealth + 0.4 * male + 0.6 * mid,
        ],
        axis=1,
    )
    return _sigmoid(logits + rng.normal(0, 1, logits.shape))


def customer_ids(index: np.ndarray) -> pa.Array:
    """``c0000001`` for index 0: seven digits, more when there are more customers."""
    digits = pc.utf8_lpad(pc.cast(pa.array(index + 1), pa.string()), 7, "0")
    return pc.binary_join_element_wise("c", digits, "")


def _phones_and_imeis(index: np.ndarray) -> tuple[pa.Array, pa.Array]:
    """Unique by construction: both are bijections of the global customer index. IMEIs are 86
    plus twelve digits plus the Luhn check digit."""
    phone = 13_000_000_000 + (index * _BIJECTION + 12_345_678_901) % 7_000_000_000
    body = 86 * 10**12 + (index * _BIJECTION + 987_654_321_987) % 10**12
    digits = (body[:, None] // 10 ** np.arange(14)) % 10  # rightmost first: Luhn doubles those
    doubled = np.where(np.arange(14) % 2 == 0, digits * 2 - 9 * (digits >= 5), digits)
    imei = body * 10 + (10 - doubled.sum(axis=1) % 10) % 10
    return pc.cast(pa.array(phone), pa.string()), pc.cast(pa.array(imei), pa.string())


def _customers(rng: np.random.Generator, world: World, people: People, ids: pa.Array) -> dict[str, Any]:
    n, tier, prefs = people.index.size, people.tier, people.prefs
    trend = rng.choice([-1, 0, 1], n, p=[0.25, 0.5, 0.25]) * rng.uniform(0.03, 0.08, n)
    last = _ARPU_BY_TIER[tier] * rng.lognormal(0, 0.25, n)
    arpu = last[:, None] * (1 + trend[:, None]) ** (np.arange(6) - 5) * rng.lognormal(0, 0.04, (n, 6))
    plan = np.rint(0.6 + 0.7 * tier + 1.5 * prefs[:, VIDEO] + rng.normal(0, 0.6, n) - (people.segment == STUDENT))
    plan = np.clip(plan, 0, len(PLANS) - 1).astype(np.int64)
    apple = 0.15 + 0.15 * tier + 0.1 * (people.age < 30)
    brands = np.column_stack([np.full(n, 0.3), apple, *(np.full(n, w) for w in (0.2, 0.12, 0.12, 0.1, 0.04))])
    banks = np.tile([0.25, 0.2, 0.15, 0.12, 0.08, 0.1, 0.1], (n, 1))
    banks[:, BANKS.index("cmb")] += 0.15 * tier
    phone, imei = _phones_and_imeis(people.index.astype(np.int64))
    working = (people.segment == WORKER) & (people.work_place >= 0)
    return {
        "customer_id": ids,
        "phone": phone,
        "imei": imei,
        "age": people.age,
        "gender": _labels(("f", "m"), people.male.astype(np.int8)),
        "tier": _labels(TIERS, tier),
        "plan": _labels(PLANS, plan),
        "arpu": pa.ListArray.from_arrays(
            pa.array(np.arange(0, 6 * n + 1, 6, dtype=np.int32)), pa.array(np.round(arpu, 2).ravel(), pa.float32())
        ),
        "data_gb": np.round(
            (3 + 30 * prefs[:, VIDEO] + 4 * tier + 8 * (people.age < 30)) * rng.lognormal(0, 0.3, n), 2
        ),
        "voice_min": np.round(rng.gamma(3, 80 + 20 * tier, n), 1),
        "sms_count": rng.poisson(15 + 5 * tier, n),
        "device_brand": _labels(BRANDS, _draw(brands, rng.random(n))),
        "car_owner": rng.random(n) < _sigmoid(-1.2 + 3 * (prefs[:, CAR] - 0.3) + 0.7 * people.wealth),
        "housing_fund": rng.random(n) < np.where(working, 0.8, 0.03),
        "main_bank": _labels(BANKS, _draw(banks, rng.random(n))),
        "has_card": rng.random(n) < 0.08 + 0.05 * tier,  # held before the adoption history
        "home_cell": _labels(world.cell_ids, people.home_cell),
        "work_cell": pc.take(world.cell_ids, pa.array(people.work_cell, mask=people.work_cell < 0)),
        "timezone": pa.array(np.full(n, TIMEZONE)),
        "_trend": np.sign(trend),  # not columns: for the tables that follow
        "_plan": plan,
    }


def _table(columns: dict[str, Any], schema: pa.Schema) -> pa.Table:
    return pa.table(
        [
            pa.array(columns[f.name], f.type)
            if isinstance(columns[f.name], np.ndarray)
            else columns[f.name].cast(f.type)
            for f in schema
        ],
        schema=schema,
    )


# --- stays --------------------------------------------------------------------------------------


class _Picker:
    """Random choices for one part's customers on one day, one value per customer each call."""

    def __init__(self, rng: np.random.Generator, world: World, people: People) -> None:
        self.rng, self.world, self.people, self.n = rng, world, people, people.index.size

    def uniform(self, lo: float, hi: float) -> np.ndarray:
        return self.rng.uniform(lo, hi, self.n)

    def chance(self, p: float | np.ndarray) -> np.ndarray:
        return self.rng.random(self.n) < p

    def cell(self, place: np.ndarray) -> np.ndarray:
        return _pick(self.world.place_first_cell, self.world.place_cell_count, place, self.rng.random(self.n))

    def home(self) -> np.ndarray:
        """Mostly the home cell; sometimes a neighbouring cell of the estate."""
        return np.where(self.chance(0.9), self.people.home_cell, self.cell(self.people.home_place))

    def work(self) -> np.ndarray:
        return np.where(self.chance(0.7), self.people.work_cell, self.cell(np.maximum(self.people.work_place, 0)))

    def road(self) -> np.ndarray:
        """A road cell of the home district: on the way somewhere."""
        district = self.world.place_district[self.people.home_place]
        return _pick(self.world.road_first, self.world.road_count, district, self.rng.random(self.n))

    def leisure_place(self) -> np.ndarray:
        """A kind by preference, then, two times in three, one's usual place of that kind."""
        choice = _draw(self.people.leisure, self.rng.random(self.n))
        usual = self.people.favourite[np.arange(self.n), choice]
        u = np.where(self.chance(0.65), usual, self.rng.random(self.n))
        return _pick(self.world.kind_first, self.world.kind_count, _LEISURE_KIND[choice], u)

    def place(self, kind: str) -> np.ndarray:
        """A place of the kind (the venue, for kinds with one)."""
        group = np.full(self.n, KIND[kind])
        return _pick(self.world.kind_first, self.world.kind_count, group, self.rng.random(self.n))


@dataclass
class _Plan:
    """One day of every customer: slot ``s`` is ``bounds[:, s]`` to ``bounds[:, s + 1]`` (local
    minutes) at ``cells[:, s]``, where ``valid[:, s]``."""

    bounds: np.ndarray  # (n, _SLOTS + 1)
    cells: np.ndarray  # (n, _SLOTS)
    valid: np.ndarray  # (n, _SLOTS)

    def use(self, rows: np.ndarray, other: _Plan) -> None:
        self.bounds[rows], self.cells[rows], self.valid[rows] = other.bounds[rows], other.cells[rows], other.valid[rows]


def _plan(bounds: list[np.ndarray], cells: list[np.ndarray], valid: tuple[bool, ...] = (True,) * _SLOTS) -> _Plan:
    n = cells[0].size
    columns = [np.broadcast_to(np.asarray(b, float), (n,)) for b in bounds]
    return _Plan(np.column_stack(columns), np.column_stack(cells), np.tile(valid, (n, 1)))


def _leisure_plan(pick: _Picker) -> _Plan:
    leave = 540 + pick.uniform(0, 240)
    arrive = leave + pick.uniform(15, 50)
    end_1 = arrive + pick.uniform(90, 240)
    end_2 = end_1 + pick.chance(0.5) * pick.uniform(60, 150)
    back = end_2 + pick.uniform(15, 50)
    cells = [pick.home(), pick.road(), pick.cell(pick.leisure_place()), pick.cell(pick.leisure_place())]
    return _plan(
        [0, leave, arrive, end_1, end_2, end_2, end_2, back, 1440],
        [*cells, pick.road(), pick.road(), pick.road(), pick.home()],
    )


def _work_plan(pick: _Picker) -> _Plan:
    people = pick.people
    leave = people.leave_min + pick.uniform(-15, 15)
    arrive = leave + people.commute_min * pick.uniform(0.8, 1.3)
    off = people.off_min + pick.uniform(-30, 40)
    back = off + people.commute_min * pick.uniform(0.8, 1.4)
    cells = [pick.home(), pick.road(), pick.work(), pick.work(), pick.road(), pick.road(), pick.road(), pick.home()]
    return _plan([0, leave, arrive, 720 + pick.uniform(-30, 60), off, off, off, back, 1440], cells)


def _domestic_plan(pick: _Picker) -> _Plan:
    """A day trip by plane or train: the hub in the morning and again in the evening."""
    hub = np.where(pick.chance(0.6), pick.place("domestic-hall"), pick.place("railway"))
    leave, back = 360 + pick.uniform(0, 120), 1080 + pick.uniform(0, 180)
    bounds = [0, leave, leave + pick.uniform(30, 70), leave + pick.uniform(100, 170)]
    bounds += [back, back, back + pick.uniform(20, 45), back + pick.uniform(60, 120), 1440]
    cells = [pick.home(), pick.road(), pick.cell(hub), pick.road(), pick.road(), pick.cell(hub)]
    cells += [pick.road(), pick.home()]
    return _plan(bounds, cells, (True, True, True, False, False, True, True, True))


def _abroad_plan(pick: _Picker) -> _Plan:
    leave = 360 + pick.uniform(0, 600)
    arrive = leave + pick.uniform(40, 80)
    gone = arrive + pick.uniform(100, 180)
    cells = [pick.home(), pick.road(), pick.cell(pick.place("intl-hall")), *(pick.home() for _ in range(5))]
    return _plan([0, leave, arrive, *(gone for _ in range(6))], cells, (True, True, True) + (False,) * 5)


def _evenings(pick: _Picker, day: int, plan: _Plan, eligible: np.ndarray) -> None:
    """Some go out after work or their afternoon (slots 4 and 5); event attendees are at the venue
    from before the event starts until after it ends, and leave earlier to get there."""
    world, people, b = pick.world, pick.people, plan.bounds
    start = b[:, 4] + pick.uniform(10, 40)
    end = start + pick.uniform(60, 180)
    place = pick.leisure_place()
    attending = np.zeros(pick.n, bool)
    for e in np.flatnonzero(world.event_day == day):
        fan = people.prefs[:, SPORTS if world.event_sports[e] else MUSIC]
        here = eligible & ~attending & pick.chance(0.004 + 0.25 * fan**3)
        attending |= here
        place[here] = world.event_place[e]
        start[here] = world.event_start_min[e] - pick.uniform(15, 50)[here]
        end[here] = world.event_end_min[e] + pick.uniform(5, 30)[here]
    going = eligible & (attending | pick.chance(0.18))
    b[attending, 4] = np.minimum(b[attending, 4], start[attending] - pick.uniform(15, 40)[attending])
    b[attending, :5] = np.minimum.accumulate(b[attending, :5][:, ::-1], axis=1)[:, ::-1]
    b[going, 5], b[going, 6], b[going, 7] = start[going], end[going], end[going] + pick.uniform(15, 50)[going]
    plan.cells[:, 5] = np.where(going, pick.cell(place), plan.cells[:, 5])
    plan.valid[:, 4:6] &= (going | ~eligible)[:, None]


def _day(pick: _Picker, day: int) -> _Plan:
    people, world = pick.people, pick.world
    weekday = (world.first_weekday + day) % 7 < 5
    trip = people.trip_day >= 0
    away = trip & (people.trip_day < day) & (day <= people.trip_day + people.trip_days)
    abroad = people.trip_day == day
    works = weekday & (people.work_place >= 0) & ~away & ~abroad
    domestic = works & pick.chance(0.004 + 0.04 * people.prefs[:, TRAVEL])
    plan = _leisure_plan(pick)
    plan.use(works & ~domestic, _work_plan(pick))
    plan.use(domestic, _domestic_plan(pick))
    plan.use(abroad, _abroad_plan(pick))
    plan.valid[away] = False
    _evenings(pick, day, plan, ~(domestic | away | abroad))
    plan.bounds = np.maximum.accumulate(np.clip(plan.bounds, 0, 1440), axis=1)
    return plan


def _stays(rng: np.random.Generator, world: World, people: People) -> tuple[np.ndarray, ...]:
    """(customer, cell, start_ms, end_ms) of every stay, by customer then time. Slots shorter
    than a minute are dropped, so an absent slot leaves no row and no gap."""
    n, days = people.index.size, world.days
    seconds = np.empty((n, days, _SLOTS + 1), np.int32)
    cells = np.empty((n, days, _SLOTS), np.int32)
    keep = np.empty((n, days, _SLOTS), bool)
    pick = _Picker(rng, world, people)
    for d in range(days):
        plan = _day(pick, d)
        seconds[:, d] = plan.bounds * 60
        cells[:, d] = plan.cells
        keep[:, d] = plan.valid & (np.diff(seconds[:, d], axis=1) >= 60)
    who = np.broadcast_to(np.arange(n, dtype=np.int32)[:, None, None], keep.shape)[keep]
    day_ms = world.start_ms + np.arange(days, dtype=np.int64) * DAY_MS
    day_ms = np.broadcast_to(day_ms[None, :, None], keep.shape)[keep]
    start = day_ms + seconds[:, :, :-1][keep].astype(np.int64) * 1000
    return who, cells[keep], start, day_ms + seconds[:, :, 1:][keep].astype(np.int64) * 1000


# --- sessions, calls, adoption, contacts --------------------------------------------------------


def _sessions(rng: np.random.Generator, world: World, people: People, data_gb: np.ndarray) -> dict[str, Any]:
    """App and web sessions: heavier data users have more; sites follow preferences."""
    n, days = people.index.size, world.days
    per_day = rng.poisson(np.clip(0.8 + data_gb / 12, 0.5, 6)[:, None], (n, days))
    slot = np.repeat(np.arange(n * days, dtype=np.int64), per_day.ravel())
    who, day, m = slot // days, slot % days, slot.size
    site = _draw(_weights(_SITES, people.prefs), rng.random(m), who)
    hour = np.searchsorted(np.cumsum(_HOURLY) / _HOURLY.sum(), rng.random(m), side="right")
    start = world.start_ms + day * DAY_MS + (hour * 3600 + rng.integers(0, 3600, m)) * 1000
    median = np.array([s[3] for s in _SITES], float)[site]
    money = np.isin(site, _MONEY_SITES)
    median[money] *= 0.6 + 2.0 * people.prefs[who[money], FINANCE]
    duration = np.maximum(5, median * rng.lognormal(0, 0.8, m)).astype(np.int32)
    order = np.lexsort((start, who))
    return {
        "who": who[order],
        "kind": _labels(("web", "app"), (rng.random(m) < 0.7)[order].astype(np.int8)),
        "site": _labels([s[0] for s in _SITES], site[order]),
        "start_ms": start[order],
        "duration_s": duration[order],
    }


def _calls(rng: np.random.Generator, world: World, people: People, trend: np.ndarray) -> dict[str, Any]:
    """Hotline calls: to the service line (more when ARPU falls) and to the sales line (those
    interested in money ask about products)."""
    scale = world.days / 30
    service = rng.poisson(scale * (0.12 + 0.25 * (trend < 0)))
    sales = rng.poisson(scale * (0.02 + 0.6 * people.prefs[:, FINANCE] ** 2))
    who = np.repeat(np.tile(np.arange(people.index.size), 2), np.concatenate([service, sales]))
    line = np.repeat([0, 1], [service.sum(), sales.sum()])
    m = who.size
    start = world.start_ms + rng.integers(0, world.days, m) * DAY_MS + rng.integers(9 * 3600, 21 * 3600, m) * 1000
    duration = (np.where(line == 1, 300, 180) * rng.lognormal(0, 0.6, m)).astype(np.int32)
    order = np.lexsort((start, who))
    line = _labels(("service", "sales"), line[order])
    return {"who": who[order], "line": line, "start_ms": start[order], "duration_s": duration[order]}


def _adoption(
    rng: np.random.Generator, world: World, people: People, customers: dict[str, Any]
) -> tuple[dict[str, Any], np.ndarray]:
    """The products each customer was offered in the half year before the period, and whether they
    took them: logistic in the product's preference and the tier. Also (n, products): who took what."""
    n, k = people.index.size, len(PRODUCTS)
    offered = rng.random((n, k)) < 0.45
    basic = customers["_plan"] < PLANS.index("5g-basic")
    offered[:, _PRODUCT["5g-upgrade"]] = rng.random(n) < np.where(basic, 0.8, 0.05)
    offered[:, _PRODUCT["car-insurance"]] = rng.random(n) < np.where(customers["car_owner"], 0.8, 0.03)
    prefs = people.prefs[:, [p[3] for p in PRODUCTS]]
    logit = np.array([p[4] for p in PRODUCTS]) + np.array([p[5] for p in PRODUCTS]) * prefs
    logit[:, _PRODUCT["credit-card"]] += 3.0 * people.prefs[:, TRAVEL]
    logit += 0.25 * people.tier[:, None] + rng.normal(0, 0.5, (n, k))
    adopted = offered & (rng.random((n, k)) < _sigmoid(logit))
    who, product = np.nonzero(offered)
    at = world.start_ms - rng.integers(86_400, 180 * 86_400, who.size) * 1000
    table = {
        "who": who,
        "product": _labels([p[0] for p in PRODUCTS], product),
        "adopted": adopted[who, product],
        "at_ms": at,
    }
    return table, adopted


def _contacts(rng: np.random.Generator, world: World, people: People) -> dict[str, Any]:
    """Past campaigns, each aimed at about a third of the customers with a tenth held out as
    control (not contacted). The contacted respond and convert with their preference; controls
    convert at a quarter of that rate, on their own: the campaigns had real uplift."""
    n, rows = people.index.size, []
    for c, (_, product, _, before) in enumerate(_CAMPAIGNS):
        pref = people.prefs[:, PRODUCTS[_PRODUCT[product]][3]]
        who = np.flatnonzero(rng.random(n) < 0.3)
        control = rng.random(who.size) < 0.1
        p_respond = _sigmoid(-2.2 + 3.5 * pref[who])
        p_convert = p_respond * _sigmoid(-1.2 + 3.0 * pref[who])
        responded = ~control & (rng.random(who.size) < p_respond)
        converted = rng.random(who.size) < np.where(control, 0.25 * p_convert, p_convert / p_respond)
        converted &= control | responded
        at = world.start_ms - before * DAY_MS + rng.integers(9 * 3600, 20 * 3600, who.size) * 1000
        rows.append((who, np.full(who.size, c), at, responded, converted, control))
    who, campaign, at, responded, converted, control = (np.concatenate(col) for col in zip(*rows, strict=True))
    order = np.lexsort((at, who))
    campaign = campaign[order]
    columns = {
        name: _labels([c[i] for c in _CAMPAIGNS], campaign) for i, name in enumerate(("campaign", "product", "channel"))
    }
    return {
        "who": who[order],
        **columns,
        "at_ms": at[order],
        "responded": responded[order],
        "converted": converted[order],
        "control": control[order],
    }


# --- one part, and the whole data set -----------------------------------------------------------


@dataclass(frozen=True)
class PartSpec:
    """What one task generates: customers ``lo`` to ``hi`` (global, 0-based) as part ``part``."""

    out: Path
    world: World
    seed: int
    part: int
    lo: int
    hi: int


def _by_customer(columns: dict[str, Any], ids: pa.Array, schema: pa.Schema) -> pa.Table:
    return _table({**columns, "customer_id": pc.take(ids, pa.array(columns["who"]))}, schema)


def generate_part(spec: PartSpec) -> dict[str, Any]:
    """Generates and writes one part of every per-customer table, one table at a time to bound
    memory; returns its row counts, its process's peak memory and the latent preferences of its
    customers (for ``truth/``)."""
    cpu_started = time.process_time()
    rng, world, rows = np.random.default_rng([spec.seed, 1 + spec.part]), spec.world, {}

    def write(name: str, table: pa.Table) -> None:
        write_table(table, layout.table_dir(spec.out, name) / f"part-{spec.part:05d}.parquet")
        rows[name] = table.num_rows

    people = _people(rng, world, spec.lo, spec.hi)
    ids = customer_ids(people.index)
    customers = _customers(rng, world, people, ids)
    adoption, adopted = _adoption(rng, world, people, customers)
    customers["has_card"] |= adopted[:, _PRODUCT["credit-card"]]
    write("customers", _table(customers, layout.CUSTOMERS))
    write("adoption", _by_customer(adoption, ids, layout.ADOPTION))
    who, cells, start, end = _stays(rng, world, people)
    stays = {"who": who, "cell_id": _labels(world.cell_ids, cells), "start_ms": start, "end_ms": end}
    del who, cells, start, end
    write("stays", _by_customer(stays, ids, layout.STAYS))
    del stays
    write("sessions", _by_customer(_sessions(rng, world, people, customers["data_gb"]), ids, layout.SESSIONS))
    write("calls", _by_customer(_calls(rng, world, people, customers["_trend"]), ids, layout.CALLS))
    write("contacts", _by_customer(_contacts(rng, world, people), ids, layout.CONTACT_HISTORY))
    latent = {p: people.prefs[:, i].astype(np.float32) for i, p in enumerate(PREFERENCES)}
    return {
        "rows": rows,
        "latent": pa.table({"customer_id": ids, **latent}),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "cpu_s": time.process_time() - cpu_started,
    }


def generate(
    out: Path, *, customers: int, days: int = 30, seed: int = 7, parts: int | None = None, start: str = "2026-10-01"
) -> dict[str, Any]:
    """Writes a synthetic data set to ``out`` (see ``layout.py``) and ``out/manifest.json``, and
    returns the manifest: the parameters, rows per table, wall time and peak memory.

    One Ray task per part when Ray is up, else in this process. The per-customer tables of an
    earlier data set in ``out`` are removed first, so no stale part survives a smaller ``parts``."""
    timer = JobTimer()
    parts = max(1, customers // CUSTOMERS_PER_PART) if parts is None else parts
    _check(customers, days, parts, start)
    out = Path(out)
    world = build_world(seed, days, start)
    shared = {"places": world.places, "cells": world.cells, "products": world.products, "events": world.events}
    for name, table in shared.items():
        write_table(table, layout.table_dir(out, name) / f"{name}.parquet")
    for name in layout.PER_CUSTOMER:
        shutil.rmtree(layout.table_dir(out, name), ignore_errors=True)
    bounds = [customers * k // parts for k in range(parts + 1)]
    specs = [PartSpec(out, world, seed, k, bounds[k], bounds[k + 1]) for k in range(parts)]
    results = run_parts(generate_part, specs, label="generate")
    write_table(pa.concat_tables(r["latent"] for r in results), out / "truth" / "latent.parquet")
    rows = {name: table.num_rows for name, table in shared.items()}
    rows |= {name: sum(r["rows"][name] for r in results) for name in layout.PER_CUSTOMER}
    manifest = {
        "generator": __name__,
        "seed": seed,
        "customers": customers,
        "days": days,
        "start": start,
        "start_ms": world.start_ms,
        "end_ms": world.start_ms + days * DAY_MS,
        "timezone": TIMEZONE,
        "parts": parts,
        "preferences": list(PREFERENCES),
        "truth": "truth/latent.parquet",
        "rows": rows,
        **timer.figures(),
        "task_peak_rss_mb": max(r["peak_rss_mb"] for r in results),  # of a process that ran parts
        "task_cpu_s": round(sum(r["cpu_s"] for r in results), 1),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def _check(customers: int, days: int, parts: int, start: str) -> None:
    if customers < 1 or days < 1:
        raise InputError(f"generate: customers and days must be at least 1, got customers={customers}, days={days}")
    if not 1 <= parts <= customers:
        raise InputError(f"generate: parts must be between 1 and customers ({customers}), got {parts}")
    try:
        date.fromisoformat(start)
    except ValueError:
        raise InputError(f"generate: start must be a date like 2026-10-01, got {start!r}") from None
