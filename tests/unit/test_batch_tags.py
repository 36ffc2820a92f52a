"""runtime.batch.tags: every family on hand-made tables, expected tags computed by hand.

The week used throughout, local time Asia/Shanghai (UTC+8); the window is Monday 08:00 local
(= Monday 00:00 UTC) for 7 days, so it holds 5 weekday dates and 2 weekend dates::

    date     Mon  Tue  Wed  Thu  Fri  Sat  Sun
    day      08-20 local on the date
    night    20:00 on the date .. 08:00 the next morning ("the night of" the date)
"""

from __future__ import annotations

import json
from datetime import date, datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from runtime.batch import consumption, layout, tags, visits
from runtime.errors import InputError

MIN = 60_000
HOUR = 60 * MIN
DAY = 24 * HOUR
T0 = int(datetime(2026, 10, 5, tzinfo=timezone.utc).timestamp() * 1000)  # Monday 08:00 local
WINDOW = visits.Window(T0, T0 + 7 * DAY)
MON, TUE, WED, THU, FRI, SAT, SUN = range(7)


def at(day: int, hour: int, minute: int = 0) -> int:
    """Epoch ms of a local (UTC+8) time on a day of the test week (may pass 24 h)."""
    return T0 + day * DAY + (hour - 8) * HOUR + minute * MIN


PLACE_ROWS = [
    ("home-a", "residential", "estate", "estate-high", "nancheng", 4),
    ("home-b", "residential", "estate", "estate-mid", "nancheng", 3),
    ("tower", "office", "tower", "grade-a-tower", "dongcheng", None),
    ("airport", "transport", "airport", "international-departure-hall", "humen", None),
    ("stadium", "sports", "stadium", "basketball-arena", "dongcheng", None),
    ("bar", "leisure", "bar", "pub", "dongcheng", None),
    ("mall", "retail", "mall", "shopping-centre", "nancheng", None),
    ("univ", "education", "school", "university", "songshan", None),
]
PLACES = pa.Table.from_pylist(
    [
        dict(zip(("place_id", "category_l1", "category_l2", "category_l3", "district", "price_band"), r, strict=True))
        | {"name": r[0], "lat": 23.0, "lon": 113.7}
        for r in PLACE_ROWS
    ],
    schema=layout.PLACES,
)
CELLS = pa.Table.from_pylist(
    [
        {"cell_id": f"c-{p}", "place_id": p, "lat": 23.0, "lon": 113.7}
        for p in ("home-a", "home-b", "tower", "airport", "stadium", "bar", "mall", "univ")
    ]
    + [
        {"cell_id": "c-stadium-2", "place_id": "stadium", "lat": 23.0, "lon": 113.7},
        {"cell_id": "c-street", "place_id": None, "lat": 23.0, "lon": 113.7},
    ],
    schema=layout.CELLS,
)
# Hand-set population edges: ARPU quintile edges and the top-quintile usage thresholds.
POP = consumption.Population((18.0, 26.0, 34.0, 42.0), (("data", 13.2), ("voice", 500.0), ("sms", 100.0)))
CONSUMPTION = ("value:", "arpu-trend:", "residence:")


def customers(*rows: dict) -> pa.Table:
    defaults = {
        "phone": "",
        "imei": "",
        "age": 30,
        "gender": "f",
        "tier": "silver",
        "plan": "4g-basic",
        "arpu": [30.0] * 6,
        "data_gb": 5.0,
        "voice_min": 100.0,
        "sms_count": 10.0,
        "device_brand": "x",
        "car_owner": False,
        "housing_fund": False,
        "main_bank": "b",
        "has_card": False,
        "home_cell": None,
        "work_cell": None,
        "timezone": "Asia/Shanghai",
    }
    return pa.Table.from_pylist([{**defaults, **r} for r in rows], schema=layout.CUSTOMERS)


def stays(*rows: tuple[str, str, int, int]) -> pa.Table:
    names = ("customer_id", "cell_id", "start_ms", "end_ms")
    return pa.Table.from_pylist([dict(zip(names, r, strict=True)) for r in rows], schema=layout.STAYS)


def events(*rows: tuple[str, str, str, int, int]) -> pa.Table:
    names = ("event_id", "type", "place_id", "start_ms", "end_ms")
    return pa.Table.from_pylist([dict(zip(names, r, strict=True)) for r in rows], schema=layout.EVENT_DEFS)


def run_part(custs: pa.Table, sts: pa.Table, evs: pa.Table | None = None, sessions: pa.Table | None = None):
    return tags.tag_part(custs, sts, visits.City(PLACES, CELLS, evs), WINDOW, POP, sessions)


def tags_of(table: pa.Table, customer: str, *, skip: tuple[str, ...] = CONSUMPTION) -> set[tuple]:
    """(tag, value rounded to 4 places, place_id) of one customer, without the skipped prefixes."""
    return {
        (r["tag"], round(r["value"], 4), r["place_id"])
        for r in table.to_pylist()
        if r["customer_id"] == customer and not r["tag"].startswith(skip)
    }


# --- time ---------------------------------------------------------------------------------------


def test_window_of_a_week_has_five_weekdays_and_two_weekend_dates():
    dates = WINDOW.dates()
    assert dates[0] == (date(2026, 10, 5) - date(1970, 1, 1)).days
    assert (len(dates), WINDOW.weekdays(), WINDOW.weekend_days()) == (7, 5, 2)


def test_split_daily_cuts_at_local_eight_and_twenty_across_midnight():
    # Friday 19:00 to Saturday 09:00 local = Friday 11:00 to Saturday 01:00 UTC.
    start, end = np.array([at(FRI, 19)]), np.array([at(SAT, 9)])
    friday = (date(2026, 10, 9) - date(1970, 1, 1)).days
    _, day_date, day_ms = visits.split_daily(start, end, 8, 20)
    _, night_date, night_ms = visits.split_daily(start, end, 20, 32)
    assert list(zip(day_date, day_ms, strict=True)) == [(friday, HOUR), (friday + 1, HOUR)]
    assert list(zip(night_date, night_ms, strict=True)) == [(friday, 12 * HOUR)]


# --- static consumption -------------------------------------------------------------------------


def test_arpu_mean_and_slope():
    arpu = pa.array(
        [[50, 50, 50, 50, 60, 70], [70, 60, 50, 50, 50, 50], [50, 51, 52, 53, 54, 55], [60], [], None, [50, None, 70]],
        pa.list_(pa.float32()),
    )
    mean, slope = consumption.arpu_stats(arpu)
    # slope = sum((x - 2.5)(y - mean)) / sum((x - 2.5)^2) = 65 / 17.5 for the first row
    np.testing.assert_allclose(mean, [55, 55, 52.5, 60, np.nan, np.nan, 60])
    np.testing.assert_allclose(slope, [65 / 17.5, -65 / 17.5, 1.0, np.nan, np.nan, np.nan, 10.0])
    label, share = consumption.arpu_trend(mean, slope)
    # 3.714 / 55 = 6.75% a month: up; 1 / 52.5 = 1.9%: flat; 10 / 60 = 16.7%: up
    assert list(label) == ["up", "down", "flat", "", "", "", "up"]
    assert share[0] == pytest.approx(65 / 17.5 / 55)


def test_population_edges_are_quintiles_and_bands_are_global():
    pop = consumption.population(np.array([10.0, 20, 30, 40, 50]), {"data": np.array([1.0, 2, 3, 4, 50])} | _usage())
    # numpy's linear quantile over 5 values: position q * 4, e.g. 0.2 -> 10 + 0.8 * 10 = 18
    assert pop.arpu_edges == pytest.approx((18, 26, 34, 42))
    assert dict(pop.intensive)["data"] == pytest.approx(13.2)  # position 3.2: 4 + 0.2 * 46
    bands = consumption.value_bands(np.array([10.0, 18, 20, 30, 40, 50, np.nan]), pop.arpu_edges)
    assert list(bands) == [1, 2, 2, 3, 4, 5, 0]


def _usage() -> dict[str, np.ndarray]:
    return {"voice": np.array([1.0, 1, 1, 1, 1]), "sms": np.array([1.0, 1, 1, 1, 1])}


def test_consumption_tags():
    table = customers(
        {
            "customer_id": "rich",
            "arpu": [50, 50, 50, 50, 60, 70],  # mean 55 > 42: band 5; two rising months: up
            "home_cell": "c-home-a",  # price band 4
            "car_owner": True,
            "data_gb": 50.0,  # >= 13.2
        },
        {"customer_id": "modest", "arpu": [10.0] * 6, "home_cell": "c-home-b", "sms_count": 99.0},
        {"customer_id": "new", "arpu": [], "home_cell": "c-street"},
    )
    out = run_part(table, stays())[0]
    assert tags_of(out, "rich", skip=()) == {
        ("value:5", 1.0, None),
        ("arpu-trend:up", round(65 / 17.5 / 55, 4), None),
        ("intensive:data", 1.0, None),
        ("residence:high-value", 1.0, "home-a"),
        ("car-owner", 1.0, None),
        ("circle:region:nancheng", 1.0, "home-a"),
        ("circle:region:nancheng:home", 1.0, "home-a"),
    }
    assert tags_of(out, "modest", skip=("circle:",)) == {("value:1", 1.0, None), ("arpu-trend:flat", 0.0, None)}
    assert tags_of(out, "new", skip=()) == set()


# --- stay areas and life circles ----------------------------------------------------------------


def office_worker(weekdays) -> pa.Table:
    return stays(*[("w", "c-tower", at(d, 9), at(d, 18)) for d in weekdays])


def test_office_worker_on_five_weekdays_is_frequent_and_nine_to_five():
    out, areas = run_part(customers({"customer_id": "w", "work_cell": "c-tower"}), office_worker(range(MON, SAT)))
    assert tags_of(out, "w") == {
        ("stay:frequent:office>tower>grade-a-tower:day-weekday", 1.0, "tower"),  # 5 of 5 weekdays
        ("circle:region:dongcheng", 1.0, "tower"),
        ("circle:region:dongcheng:work", 1.0, "tower"),
        ("circle:people:office", 1.0, "tower"),
        ("circle:people:office:tower", 1.0, "tower"),
        ("circle:people:office:tower:grade-a-tower", 1.0, "tower"),
        ("circle:behaviour:nine-to-five", 1.0, "tower"),  # 8 h of 09-17 on 5 of 5 weekdays
    }
    assert areas.to_pylist() == [
        {"customer_id": "w", "place_id": "tower", "slot": "day-weekday", "stay_ms": 45 * HOUR, "days": 5, "share": 1.0}
    ]


def test_office_on_two_weekdays_is_general_and_not_a_circle():
    out, _ = run_part(customers({"customer_id": "w"}), office_worker([TUE, THU]))
    assert tags_of(out, "w") == {("stay:general:office>tower>grade-a-tower:day-weekday", 0.4, "tower")}


def test_short_passes_do_not_count_as_presence():
    out, areas = run_part(customers({"customer_id": "w"}), stays(("w", "c-tower", at(MON, 9), at(MON, 9, 29))))
    assert tags_of(out, "w") == set()
    assert areas.to_pylist()[0]["stay_ms"] == 29 * MIN and areas.to_pylist()[0]["days"] == 0


def test_airport_three_times_is_a_business_traveller():
    trips = stays(*[("t", "c-airport", at(d, 10), at(d, 12)) for d in (MON, WED, SAT)])
    out, _ = run_part(customers({"customer_id": "t"}), trips)
    path = "transport>airport>international-departure-hall"
    assert tags_of(out, "t") == {
        ("travel", 1.0, "airport"),
        ("stay:general:" + path + ":day-weekday", 0.4, "airport"),  # 2 of 5 weekdays
        ("stay:frequent:" + path + ":day-weekend", 0.5, "airport"),  # 1 of 2 weekend dates
        ("circle:demand:travel", 0.5, "airport"),
        ("circle:demand:travel:airport", 0.5, "airport"),
        ("circle:demand:travel:airport:international-departure-hall", 0.5, "airport"),
        ("circle:behaviour:business-traveller", round(3 / 7, 4), "airport"),
    }


def test_airport_twice_is_travel_only():
    trips = stays(*[("t", "c-airport", at(d, 10), at(d, 12)) for d in (MON, WED)])
    out, _ = run_part(customers({"customer_id": "t"}), trips)
    assert {t for t, _, _ in tags_of(out, "t")} == {
        "travel",
        "stay:general:transport>airport>international-departure-hall:day-weekday",
        "circle:demand:travel",
        "circle:demand:travel:airport",
        "circle:demand:travel:airport:international-departure-hall",
    }


def test_night_across_midnight_in_local_time():
    sts = stays(
        ("n", "c-bar", at(FRI, 22), at(SAT, 2)),  # UTC Fri 14:00-18:00: in UTC it would look like daytime
        ("n", "c-mall", at(SAT, 31), at(SAT, 33)),  # Sun 07:00-09:00 local: Saturday's night, then Sunday's day
    )
    out, areas = run_part(customers({"customer_id": "n"}), sts)
    assert sorted(
        (r["place_id"], r["slot"], r["stay_ms"], r["days"], round(r["share"], 4)) for r in areas.to_pylist()
    ) == [
        ("bar", "night-weekday", 4 * HOUR, 1, 0.2),  # Friday's night is a weekday night
        ("mall", "day-weekend", HOUR, 1, 0.5),
        ("mall", "night-weekend", HOUR, 1, 0.5),
    ]
    assert {t for t, _, _ in tags_of(out, "n") if t.startswith("stay:")} == {
        "stay:general:leisure>bar>pub:night-weekday",
        "stay:frequent:retail>mall>shopping-centre:day-weekend",
        "stay:frequent:retail>mall>shopping-centre:night-weekend",
    }


def test_student_with_a_weekend_sport():
    sts = stays(
        *[("s", "c-univ", at(d, 8), at(d, 16)) for d in range(MON, SAT)],
        *[("s", "c-home-a", at(d, 16, 30), at(d + 1, 8)) for d in range(MON, SAT)],  # 3.5 h of daytime at home
        ("s", "c-stadium", at(SAT, 15), at(SAT, 17)),
    )
    out, _ = run_part(customers({"customer_id": "s"}), sts)
    got = tags_of(out, "s")
    assert {t for t in got if t[0].startswith(("circle:people", "circle:demand"))} == {
        ("circle:people:campus", 1.0, "univ"),  # more weekday daytime at the university than at home
        ("circle:people:campus:school", 1.0, "univ"),
        ("circle:people:campus:school:university", 1.0, "univ"),
        ("circle:demand:sports", 0.5, "stadium"),  # 1 of 2 weekend days
        ("circle:demand:sports:stadium", 0.5, "stadium"),
        ("circle:demand:sports:stadium:basketball-arena", 0.5, "stadium"),
    }


def test_region_of_home_and_work():
    table = customers(
        {"customer_id": "a", "home_cell": "c-home-a", "work_cell": "c-tower"},
        {"customer_id": "b", "home_cell": "c-home-b", "work_cell": "c-mall"},  # both in nancheng
    )
    out, _ = run_part(table, stays())
    assert tags_of(out, "a") == {
        ("circle:region:nancheng", 1.0, "home-a"),
        ("circle:region:nancheng:home", 1.0, "home-a"),
        ("circle:region:dongcheng", 1.0, "tower"),
        ("circle:region:dongcheng:work", 1.0, "tower"),
    }
    assert tags_of(out, "b") == {
        ("circle:region:nancheng", 1.0, "home-b"),
        ("circle:region:nancheng:home", 1.0, "home-b"),
        ("circle:region:nancheng:work", 1.0, "mall"),
    }


def test_night_owl_from_late_stays_out_and_sessions():
    table = customers(*[{"customer_id": c, "home_cell": "c-home-a"} for c in ("o1", "o2", "o3", "home")])
    sts = stays(
        ("o1", "c-bar", at(TUE, 1), at(TUE, 3)),  # Monday's night
        ("o1", "c-bar", at(WED, 1), at(WED, 3)),  # Tuesday's night: 2 of 7 dates
        ("o2", "c-bar", at(TUE, 1), at(TUE, 3)),
        ("o3", "c-bar", at(TUE, 1), at(TUE, 3)),
        ("home", "c-home-a", at(TUE, 1), at(TUE, 3)),  # at home: asleep as far as we know
        ("home", "c-home-a", at(WED, 1), at(WED, 3)),
    )
    sessions = pa.table(
        {
            "customer_id": ["o2", "o3", "o3"],
            "start_ms": [at(THU, 0, 30), at(THU, 5, 30), at(MON, 0, 30)],  # o3: too late, before the window
        }
    )
    out, _ = run_part(table, sts, sessions=sessions)
    owls = {(r["customer_id"], round(r["value"], 4)) for r in out.to_pylist() if r["tag"].endswith("night-owl")}
    assert owls == {("o1", round(2 / 7, 4)), ("o2", round(2 / 7, 4))}


# --- events -------------------------------------------------------------------------------------


def test_event_presence_needs_thirty_minutes_of_overlap():
    # cba game Tuesday 19:30-22:00 local (150 min) at the stadium; a second one on Thursday.
    evs = events(
        ("e1", "cba-game", "stadium", at(TUE, 19, 30), at(TUE, 22)),
        ("e2", "cba-game", "stadium", at(THU, 19, 30), at(THU, 22)),
    )
    sts = stays(
        ("a", "c-stadium", at(TUE, 19), at(TUE, 19, 59)),  # 29 min
        ("b", "c-stadium", at(TUE, 19), at(TUE, 20, 1)),  # 31 min
        ("b", "c-stadium", at(THU, 19), at(THU, 23)),  # all of e2
        ("c", "c-stadium", at(TUE, 21, 30), at(TUE, 23)),  # exactly 30 min, at the end
        ("d", "c-stadium", at(TUE, 18), at(TUE, 19, 40)),  # spans the start: 10 min
        ("e", "c-stadium", at(TUE, 19), at(TUE, 19, 45)),  # 15 min in one cell
        ("e", "c-stadium-2", at(TUE, 19, 45), at(TUE, 20)),  # + 15 min in another of the venue
        ("f", "c-bar", at(TUE, 19), at(TUE, 23)),  # elsewhere
    )
    out, _ = run_part(customers(*[{"customer_id": c} for c in "abcdef"]), sts, evs)
    got = {(r["customer_id"], r["tag"], round(r["value"], 4), r["place_id"]) for r in out.to_pylist()}
    got = {g for g in got if g[1].startswith("event:")}
    assert got == {
        ("b", "event:cba-game:e1", round(31 / 150, 4), "stadium"),
        ("b", "event:cba-game:e2", 1.0, "stadium"),
        ("b", "event:cba-game", 1.0, "stadium"),
        ("c", "event:cba-game:e1", 0.2, "stadium"),
        ("c", "event:cba-game", 1.0, "stadium"),
        ("e", "event:cba-game:e1", 0.2, "stadium"),
        ("e", "event:cba-game", 1.0, "stadium"),
    }


# --- the job --------------------------------------------------------------------------------------


def write_table(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


def write_data(root: Path) -> Path:
    """Two parts: c1-c3 (c1 the office worker) and c4-c5 (c4 the traveller), mean ARPU 10..50."""
    office = [("c1", "c-tower", at(d, 9), at(d, 18)) for d in range(MON, SAT)]
    airport = [("c4", "c-airport", at(d, 10), at(d, 12)) for d in (MON, WED, SAT)]
    for name, ids, rows in (
        ("part-00000.parquet", ["c1", "c2", "c3"], office),
        ("part-00001.parquet", ["c4", "c5"], airport),
    ):
        custs = customers(*[{"customer_id": c, "arpu": [10.0 * int(c[1])] * 6, "car_owner": c == "c5"} for c in ids])
        write_table(custs, root / "customers" / name)
        write_table(stays(*rows), root / "stays" / name)
    write_table(PLACES, root / "places" / "places.parquet")
    write_table(CELLS, root / "cells" / "cells.parquet")
    (root / "manifest.json").write_text(json.dumps({"seed": 7, "customers": 5, "days": 7, "start": "2026-10-05"}))
    return root


def test_run_writes_tags_parts_and_summary(tmp_path, monkeypatch):
    monkeypatch.setenv("ESP_PROGRESS", "0")
    data = write_data(tmp_path / "data")
    summary = tags.run(data)
    out = layout.job_dir(data, "tags")
    assert sorted(p.name for p in out.glob("*.parquet")) == ["part-00000.parquet", "part-00001.parquet"]
    table = pa.concat_tables([pq.read_table(p) for p in sorted(out.glob("*.parquet"))])
    assert table.schema == layout.TAGS
    # bands over all customers, not per part: means 10..50 against edges 18/26/34/42
    values = {r["customer_id"]: r["tag"] for r in table.to_pylist() if r["tag"].startswith("value:")}
    assert values == {"c1": "value:1", "c2": "value:2", "c3": "value:3", "c4": "value:4", "c5": "value:5"}
    assert "circle:behaviour:nine-to-five" in {t for t, _, _ in tags_of(table, "c1")}
    assert "circle:behaviour:business-traveller" in {t for t, _, _ in tags_of(table, "c4")}
    assert summary["rows"] == table.num_rows
    assert summary["customers"] == summary["customers_tagged"] == 5
    assert summary["distinct_tags"] == len(set(table.column("tag").to_pylist()))
    assert summary["tag_counts"]["car-owner"] == 1
    assert summary["window"]["dates"] == 7 and summary["window"]["weekdays"] == 5
    assert "wall_s" in summary and json.loads((out / "summary.json").read_text())["rows"] == table.num_rows
    assert (layout.job_dir(data, "stay-areas") / "part-00001.parquet").exists()


def test_run_as_of_now_cuts_the_window(tmp_path, monkeypatch):
    monkeypatch.setenv("ESP_PROGRESS", "0")
    data = write_data(tmp_path / "data")
    assert tags.run(data, now_ms=T0 + 3 * DAY)["window"]["dates"] == 3
    with pytest.raises(InputError, match="not after the data's start"):
        tags.run(data, now_ms=T0)


def test_run_in_chunks_of_one_customer_writes_the_same_tags(tmp_path, monkeypatch):
    monkeypatch.setenv("ESP_PROGRESS", "0")
    data = write_data(tmp_path / "data")
    tags.run(data)
    whole = pq.read_table(layout.job_dir(data, "tags") / "part-00000.parquet")
    monkeypatch.setattr(tags, "CHUNK_CUSTOMERS", 1)
    tags.run(data)
    assert pq.read_table(layout.job_dir(data, "tags") / "part-00000.parquet").equals(whole)


@pytest.mark.parametrize("wide", [False, True])
def test_group_rows(wide):
    big = 2**40 if wide else 0  # three columns spanning 2**40 each do not fit one int64 key
    a = np.array([3, -1, 3, 3 + big])
    b = np.array([5, 5, 5, 7 + big])
    c = np.array([0, 0, 0, big])
    (ua, ub, uc), group = visits.group_rows(a, b, c)
    assert (list(ua), list(ub), list(uc)) == ([-1, 3, 3 + big], [5, 5, 7 + big], [0, 0, big])
    assert list(group) == [1, 0, 1, 2]
