"""The synthetic world every part of a data set shares: the city (places in eight districts, their
cells, road cells), the products, and the period with its events, all from the seed alone; and
the latent preferences (:data:`PREFERENCES`) that the products, the places people go to and the
sites they browse appeal to (``people.py`` draws each customer's).

Times are epoch ms (UTC); days start at local midnight, Asia/Shanghai.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

import numpy as np
import pyarrow as pa

from runtime.batch import layout

PREFERENCES = ("sports", "music", "travel", "finance", "video", "family", "car")
SPORTS, MUSIC, TRAVEL, FINANCE, VIDEO, FAMILY, CAR = range(len(PREFERENCES))
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
PRODUCT = {p[0]: i for i, p in enumerate(PRODUCTS)}


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
