"""runtime.batch.timing: crowd per category and hour, sending hours; expected values by hand.

Window: Monday 08:00 local (UTC+8) for 2 days, so each local hour of the day occurs twice::

    hour (local)   08   09 .. 17   18   19   20
    w, Monday      home+metro | office 09-18 | metro+home ...
    w, Tuesday     home+metro | office 09-19      | metro+home
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from runtime.batch import layout, timing, visits

MIN = 60_000
HOUR = 60 * MIN
DAY = 24 * HOUR
T0 = int(datetime(2026, 10, 5, tzinfo=timezone.utc).timestamp() * 1000)  # Monday 08:00 local
WINDOW = visits.Window(T0, T0 + 2 * DAY)
MON, TUE = 0, 1


def at(day: int, hour: int, minute: int = 0) -> int:
    """Epoch ms of a local (UTC+8) time on a day of the window (may pass 24 h)."""
    return T0 + day * DAY + (hour - 8) * HOUR + minute * MIN


PLACES = pa.Table.from_pylist(
    [
        {"place_id": p, "name": p, "category_l1": l1, "category_l2": l2, "category_l3": l3, "district": "d"}
        for p, l1, l2, l3 in [
            ("home", "residential", "estate", "estate-mid"),
            ("office", "office", "tower", "grade-a-tower"),
            ("metro", "transport", "metro", "station"),
            ("mall", "retail", "mall", "shopping-centre"),
            ("bar", "leisure", "bar", "pub"),
            ("hospital", "health", "hospital", "general"),
        ]
    ],
    schema=layout.PLACES,
)
CELLS = pa.Table.from_pylist(
    [{"cell_id": f"c-{p}", "place_id": p} for p in PLACES.column("place_id").to_pylist()]
    + [{"cell_id": "c-road", "place_id": None}],
    schema=layout.CELLS,
)
CITY = visits.City(PLACES, CELLS)


def stays(*rows: tuple[str, str, int, int]) -> pa.Table:
    names = ("customer_id", "cell_id", "start_ms", "end_ms")
    return pa.Table.from_pylist([dict(zip(names, r, strict=True)) for r in rows], schema=layout.STAYS)


def customers(work: dict[str, str | None]) -> pa.Table:
    return pa.Table.from_pylist(
        [{"customer_id": c, "work_cell": w} for c, w in work.items()],
        schema=pa.schema([layout.CUSTOMERS.field("customer_id"), layout.CUSTOMERS.field("work_cell")]),
    )


SHOPPERS = stays(
    ("a", "c-mall", at(MON, 10), at(MON, 12)),
    ("a", "c-mall", at(TUE, 10, 30), at(TUE, 11, 15)),
    ("b", "c-mall", at(MON, 10), at(MON, 12)),
    ("b", "c-mall", at(TUE, 10), at(TUE, 10, 20)),  # twice in the same hour: counted once
    ("b", "c-mall", at(TUE, 10, 40), at(TUE, 11)),  # ends at 11:00 sharp: not in hour 11
    ("c", "c-bar", at(MON, 10), at(MON, 10, 10)),
)
COMMUTER = [  # w works at the office, n at the hospital (her own work place)
    ("w", "c-home", at(MON, 6), at(MON, 8, 30)),
    ("w", "c-metro", at(MON, 8, 30), at(MON, 9)),
    ("w", "c-office", at(MON, 9), at(MON, 18)),
    ("w", "c-metro", at(MON, 18), at(MON, 18, 30)),
    ("w", "c-home", at(MON, 18, 30), at(TUE, 8, 30)),
    ("w", "c-metro", at(TUE, 8, 30), at(TUE, 9)),
    ("w", "c-office", at(TUE, 9), at(TUE, 19)),
    ("w", "c-metro", at(TUE, 19), at(TUE, 19, 30)),
    ("w", "c-home", at(TUE, 19, 30), at(TUE, 32)),
    ("n", "c-home", at(MON, 6), at(MON, 8)),
    ("n", "c-hospital", at(MON, 8), at(MON, 20)),
    ("n", "c-home", at(MON, 20), at(TUE, 8)),
    ("n", "c-hospital", at(TUE, 8), at(TUE, 20)),
    ("n", "c-home", at(TUE, 20), at(TUE, 32)),
]


def average_crowd(table: pa.Table, work: dict[str, str | None]) -> np.ndarray:
    resolved = visits.resolve_visits(table, customers(work).column("customer_id"), CITY, WINDOW)
    return timing.per_hour_of_day(timing.crowd_counts(resolved, CITY, WINDOW), WINDOW)


def row_of(l2: str) -> int:
    return list(CITY.l2_names).index(l2)


def test_crowd_counts_distinct_customers_per_hour_averaged_over_days():
    average = average_crowd(SHOPPERS, {"a": None, "b": None, "c": None})
    mall = average[row_of("mall")]
    # hour 10: Mon {a, b}, Tue {a, b} -> 2; hour 11: Mon {a, b}, Tue {a} -> 1.5
    assert list(mall[9:13]) == [0.0, 2.0, 1.5, 0.0]
    assert mall.sum() == 3.5
    assert average[row_of("bar")][10] == 0.5  # one customer on one of two days
    assert timing.peaks_and_troughs(average, CITY)["mall"] == {
        "peaks": [{"hour": 10, "customers": 2.0}, {"hour": 11, "customers": 1.5}, {"hour": 0, "customers": 0.0}],
        "troughs": [{"hour": h, "customers": 0.0} for h in (0, 1, 2)],
    }


def test_window_not_aligned_to_midnight_counts_each_hour_the_times_it_occurs():
    window = visits.Window(T0, T0 + DAY + 3 * HOUR)  # Mon 08:00 .. Tue 11:00 local
    counts = np.zeros(timing.window_hours(window)[1])
    counts[[2, 26]] = 4  # 10:00 on both days
    counts[[12]] = 3  # 20:00 on Monday only
    per_hour = timing.per_hour_of_day(counts, window)
    assert (per_hour[10], per_hour[20], per_hour[8]) == (4.0, 3.0, 0.0)  # 10:00 twice, 20:00 once


def test_reachable_hours_exclude_work_and_school_and_own_work_place():
    table = customers({"w": "c-office", "n": "c-hospital"})
    part = timing.timing_part(table, stays(*COMMUTER), CITY, WINDOW, {"all": None, "office": {"w"}, "nurse": {"n"}})
    office = timing.recommend(part.reachable["office"], part.members["office"], WINDOW)
    # w: 08 both days (home, metro); 18 Monday only; 19 both (metro after 19:00 on Tuesday); 20 both
    assert office["reachable_share"] == {"8": 1.0, "18": 0.5, "19": 1.0, "20": 1.0} | {
        str(h): 0.0 for h in range(9, 18)
    }
    assert office["hours"] == [8, 19, 20]
    nurse = timing.recommend(part.reachable["nurse"], part.members["nurse"], WINDOW)
    assert nurse["hours"] == [20]  # at her work place 08-20, and no other hour has anybody
    everyone = timing.recommend(part.reachable["all"], part.members["all"], WINDOW)
    # 20: w and n on both days = 4 / (2 days x 2); 8 and 19: w only = 2 / 4; 18: 1 / 4
    assert (everyone["customers"], everyone["hours"]) == (2, [20, 8, 19])
    assert everyone["reachable_share"]["18"] == 0.25


def test_on_the_road_is_reachable_but_in_no_crowd():
    road = stays(("r", "c-road", at(MON, 12, 10), at(MON, 12, 50)))  # a cell in no place: commuting
    part = timing.timing_part(customers({"r": None}), road, CITY, WINDOW, {"all": None})
    assert timing.recommend(part.reachable["all"], part.members["all"], WINDOW)["hours"] == [12]
    assert part.crowd.sum() == 0


def test_segment_without_members_in_the_data_gets_no_hours():
    part = timing.timing_part(customers({"w": "c-office"}), stays(*COMMUTER), CITY, WINDOW, {"ghosts": {"x"}})
    assert timing.recommend(part.reachable["ghosts"], part.members["ghosts"], WINDOW) == {
        "customers": 0,
        "hours": [],
        "reachable_share": {},
    }


# --- the job --------------------------------------------------------------------------------------


def write_data(root: Path) -> Path:
    full = pa.Table.from_pylist(
        [{"customer_id": c, "work_cell": w, "arpu": [1.0]} for c, w in (("w", "c-office"), ("n", "c-hospital"))],
        schema=layout.CUSTOMERS,
    )
    shoppers = pa.Table.from_pylist([{"customer_id": c, "arpu": [1.0]} for c in "abc"], schema=layout.CUSTOMERS)
    for name, custs, sts in (
        ("part-00000.parquet", full, stays(*COMMUTER)),
        ("part-00001.parquet", shoppers, SHOPPERS),
    ):
        for table, content in (("customers", custs), ("stays", sts)):
            (root / table).mkdir(parents=True, exist_ok=True)
            pq.write_table(content, root / table / name)
    for table, content in (("places", PLACES), ("cells", CELLS)):
        (root / table).mkdir(parents=True, exist_ok=True)
        pq.write_table(content, root / table / f"{table}.parquet")
    (root / "manifest.json").write_text(json.dumps({"days": 2, "start": "2026-10-05"}))
    return root


def test_run_writes_crowd_and_hours(tmp_path, monkeypatch):
    monkeypatch.setenv("ESP_PROGRESS", "0")
    data = write_data(tmp_path / "data")
    summary = timing.run(data, segments={"office": {"w"}})
    out = layout.job_dir(data, "timing")
    crowd = pq.read_table(out / "crowd.parquet")
    assert crowd.schema == timing.CROWD and crowd.num_rows == 24 * 6
    mall = {r["hour"]: r["customers"] for r in crowd.to_pylist() if r["category_l2"] == "mall"}
    assert (mall[10], mall[11], mall[12]) == (2.0, 1.5, 0.0)
    hours = json.loads((out / "hours.json").read_text())
    assert hours["segments"]["office"]["hours"] == [8, 19, 20]
    # all five customers: 20:00 has w and n on both days = 4 / (2 x 5)
    assert hours["segments"]["all"]["customers"] == 5
    assert hours["segments"]["all"]["reachable_share"]["20"] == pytest.approx(0.4)
    assert hours["categories"]["mall"]["peaks"][0] == {"hour": 10, "customers": 2.0}
    assert summary["recommended"]["office"] == [8, 19, 20]
    assert json.loads((out / "summary.json").read_text())["categories"] == 6


def test_run_takes_segments_from_the_segments_job(tmp_path, monkeypatch):
    monkeypatch.setenv("ESP_PROGRESS", "0")
    data = write_data(tmp_path / "data")
    members = pa.table({"customer_id": ["n"], "segment": ["nurses"]})
    (layout.job_dir(data, "segments")).mkdir(parents=True)
    pq.write_table(members, layout.job_dir(data, "segments") / "members.parquet")
    # all: 10:00 has a, b, c on Monday and a, b on Tuesday = 5 / (2 x 5); 20:00 4 / 10; 11:00 3 / 10
    assert timing.run(data)["recommended"] == {"all": [10, 20, 11], "nurses": [20]}
