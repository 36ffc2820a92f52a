"""The synthetic data generator: the layout contract, determinism, integrity and the signal that
latent preferences leave in behaviour. Small runs (300 customers, 3 days) in this process."""

from __future__ import annotations

import json
from collections import defaultdict
from itertools import pairwise
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from runtime.batch import layout
from runtime.batch.generate import generate
from runtime.batch.world import DAY_MS, PREFERENCES
from runtime.errors import InputError

CUSTOMERS, DAYS, PARTS = 300, 3, 3


@pytest.fixture(autouse=True)
def _quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ESP_PROGRESS", "0")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("data")
    generate(out, customers=CUSTOMERS, days=DAYS, seed=7, parts=PARTS)
    return out


def read(data: Path, table: str) -> pa.Table:
    return pq.read_table(layout.table_dir(data, table))


def rows(data: Path, table: str) -> list[dict]:
    return read(data, table).to_pylist()


def place_of_cell(data: Path) -> dict[str, dict | None]:
    places = {p["place_id"]: p for p in rows(data, "places")}
    return {c["cell_id"]: places.get(c["place_id"]) for c in rows(data, "cells")}


def test_every_table_has_exactly_the_layout_schema(data: Path):
    for name, schema in layout.TABLES.items():
        files = layout.parts(data, name)
        assert files, name
        for file in files:
            assert pq.read_schema(file).equals(schema), f"{file}: {pq.read_schema(file)}"
        assert read(data, name).num_rows > 0, name
    for name in layout.PER_CUSTOMER:
        assert [f.name for f in layout.parts(data, name)] == [f"part-{k:05d}.parquet" for k in range(PARTS)]


def test_manifest_counts_what_was_written(data: Path):
    manifest = json.loads((data / "manifest.json").read_text())
    assert manifest["seed"] == 7 and manifest["customers"] == CUSTOMERS and manifest["parts"] == PARTS
    assert manifest["days"] == DAYS and manifest["timezone"] == "Asia/Shanghai"
    assert manifest["rows"] == {name: read(data, name).num_rows for name in layout.TABLES}
    assert manifest["wall_s"] >= 0 and manifest["peak_rss_mb"] > 0
    assert manifest["rows"]["customers"] == CUSTOMERS


def test_latent_truth_has_one_row_per_customer_and_a_column_per_preference(data: Path):
    latent = pq.read_table(data / "truth" / "latent.parquet")
    assert latent.column_names == ["customer_id", *PREFERENCES]
    assert latent.column("customer_id").to_pylist() == read(data, "customers").column("customer_id").to_pylist()
    values = np.column_stack([latent.column(p).to_numpy() for p in PREFERENCES])
    assert ((values > 0) & (values < 1)).all()


def test_same_seed_same_tables_other_seed_other_tables(data: Path, tmp_path: Path):
    generate(tmp_path / "again", customers=CUSTOMERS, days=DAYS, seed=7, parts=PARTS)
    generate(tmp_path / "other", customers=CUSTOMERS, days=DAYS, seed=8, parts=PARTS)
    for name in layout.TABLES:
        assert read(tmp_path / "again", name).equals(read(data, name)), name
    for name in ("customers", "cells", "stays", "sessions", "adoption", "contacts"):
        assert not read(tmp_path / "other", name).equals(read(data, name)), name


def test_a_customers_rows_are_all_in_one_part_number(data: Path):
    part_of: dict[str, int] = {}
    for name in layout.PER_CUSTOMER:
        for k, file in enumerate(layout.parts(data, name)):
            for customer in set(pq.read_table(file, columns=["customer_id"]).column(0).to_pylist()):
                assert part_of.setdefault(customer, k) == k, (name, customer)
    assert len(part_of) == CUSTOMERS


def test_references_resolve(data: Path):
    cells = place_of_cell(data)
    customers = rows(data, "customers")
    ids = {c["customer_id"] for c in customers}
    assert len(ids) == CUSTOMERS and all(len(i) == 8 and i.startswith("c") for i in ids)
    for name in ("stays", "sessions", "calls", "adoption", "contacts"):
        assert set(read(data, name).column("customer_id").to_pylist()) <= ids, name
    assert set(read(data, "stays").column("cell_id").to_pylist()) <= set(cells)
    assert all(cells[c["home_cell"]]["category_l1"] == "residential" for c in customers)
    work = [c["work_cell"] for c in customers if c["work_cell"] is not None]
    assert 0 < len(work) < CUSTOMERS
    assert {cells[w]["category_l1"] for w in work} <= {"office", "education"}
    products = set(read(data, "products").column("product").to_pylist())
    assert set(read(data, "adoption").column("product").to_pylist()) <= products
    assert set(read(data, "contacts").column("product").to_pylist()) <= products
    places = set(read(data, "places").column("place_id").to_pylist())
    assert set(read(data, "events").column("place_id").to_pylist()) <= places


def test_phones_and_imeis_are_unique_and_well_formed(data: Path):
    customers = read(data, "customers")
    phones, imeis = customers.column("phone").to_pylist(), customers.column("imei").to_pylist()
    assert len(set(phones)) == len(set(imeis)) == CUSTOMERS
    assert all(len(p) == 11 and p[0] == "1" and p.isdigit() for p in phones)
    for imei in imeis:
        digits = [int(d) for d in reversed(imei)]  # Luhn: every second digit from the right doubled
        total = sum(d if i % 2 == 0 else (2 * d if d < 5 else 2 * d - 9) for i, d in enumerate(digits))
        assert len(imei) == 15 and total % 10 == 0, imei


def test_the_city_has_its_hierarchy_and_prices(data: Path):
    places = rows(data, "places")
    assert 350 <= len(places) <= 450
    kinds = {(p["category_l1"], p["category_l2"], p["category_l3"]) for p in places}
    assert ("transport", "airport", "international-departure-hall") in kinds
    assert ("sports", "stadium", "basketball-arena") in kinds and ("leisure", "venue", "concert-hall") in kinds
    assert {p["price_band"] for p in places if p["category_l1"] == "residential"} == {1, 2, 3, 4, 5}
    assert {p["price_band"] for p in places if p["category_l1"] != "residential"} == {None}
    assert len({p["district"] for p in places}) == 8
    assert read(data, "cells").column("place_id").null_count > 0  # road cells, in no place


def test_stays_are_consecutive_and_within_the_period(data: Path):
    manifest = json.loads((data / "manifest.json").read_text())
    by_customer: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for s in rows(data, "stays"):
        by_customer[s["customer_id"]].append((s["start_ms"], s["end_ms"]))
    for spans in by_customer.values():
        assert spans == sorted(spans)
        assert all(start < end for start, end in spans)
        assert all(end <= next_start for (_, end), (next_start, _) in pairwise(spans))
        assert manifest["start_ms"] <= spans[0][0] and spans[-1][1] <= manifest["end_ms"]
    per_day = read(data, "stays").num_rows / CUSTOMERS / DAYS
    assert 4 <= per_day <= 8


def test_event_attendees_are_at_the_venue_during_the_event(data: Path):
    """Venues host nothing but their events, so every stay there on an event's day is an attendee's."""
    cells = place_of_cell(data)
    period_start_ms = json.loads((data / "manifest.json").read_text())["start_ms"]
    attendees = 0
    for event in rows(data, "events"):
        day_start_ms = event["start_ms"] - (event["start_ms"] - period_start_ms) % DAY_MS
        for s in rows(data, "stays"):
            place = cells[s["cell_id"]]
            if place and place["place_id"] == event["place_id"] and 0 <= s["start_ms"] - day_start_ms < DAY_MS:
                attendees += 1
                assert s["start_ms"] <= event["start_ms"] and s["end_ms"] >= event["end_ms"], (event, s)
    assert attendees > 0


def test_sports_fans_spend_more_time_at_sports_places(data: Path):
    cells = place_of_cell(data)
    hours: dict[str, float] = defaultdict(float)
    for s in rows(data, "stays"):
        place = cells[s["cell_id"]]
        if place and place["category_l1"] == "sports":
            hours[s["customer_id"]] += (s["end_ms"] - s["start_ms"]) / 3_600_000
    latent = pq.read_table(data / "truth" / "latent.parquet")
    sports = latent.column("sports").to_numpy()
    spent = np.array([hours[c] for c in latent.column("customer_id").to_pylist()])
    fans, others = spent[sports >= np.quantile(sports, 0.75)], spent[sports <= np.quantile(sports, 0.25)]
    assert fans.mean() > 1.3 * others.mean()


def test_wealth_beginner_adoption_rises_with_the_finance_preference(data: Path):
    latent = pq.read_table(data / "truth" / "latent.parquet")
    finance = dict(zip(latent.column("customer_id").to_pylist(), latent.column("finance").to_pylist(), strict=True))
    offers = [
        (finance[r["customer_id"]], r["adopted"]) for r in rows(data, "adoption") if r["product"] == "wealth-beginner"
    ]
    pref, adopted = np.array([f for f, _ in offers]), np.array([a for _, a in offers])
    low, high = np.quantile(pref, [1 / 3, 2 / 3])
    assert adopted[pref >= high].mean() > adopted[pref <= low].mean() + 0.1


def test_control_groups_are_not_contacted_and_convert_less(data: Path):
    contacts = rows(data, "contacts")
    control = [c for c in contacts if c["control"]]
    treated = [c for c in contacts if not c["control"]]
    assert control and not any(c["responded"] for c in control)
    assert all(c["responded"] for c in treated if c["converted"])
    assert np.mean([c["converted"] for c in treated]) > np.mean([c["converted"] for c in control])


def test_fewer_parts_leave_no_stale_part_files(tmp_path: Path):
    generate(tmp_path, customers=20, days=1, parts=3)
    summary = generate(tmp_path, customers=20, days=1)
    assert summary["parts"] == 1  # the default: one per 50,000 customers, at least one
    for name in layout.PER_CUSTOMER:
        assert [f.name for f in layout.parts(tmp_path, name)] == ["part-00000.parquet"]


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"customers": 0}, "customers and days"),
        ({"customers": 5, "days": 0}, "customers and days"),
        ({"customers": 5, "parts": 6}, "parts must be between 1 and customers (5), got 6"),
        ({"customers": 5, "start": "1 Oct"}, "start must be a date"),
    ],
)
def test_bad_arguments_are_named(tmp_path: Path, kwargs: dict, words: str):
    with pytest.raises(InputError, match=words.replace("(", r"\(").replace(")", r"\)")):
        generate(tmp_path, **kwargs)
