"""The segments job over hand-made tables: memberships, bitmaps, profiles and comparisons
computed by hand. Runs the parts in this process (no Ray)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyroaring import BitMap

from runtime.batch import segments
from runtime.errors import EspError, InputError
from runtime.policy.models import Segment

# customer: (age, gender, tier, car_owner, tags)
CUSTOMERS = {
    "c001": (30, "f", "gold", True, ["traveller", "value:5"]),
    "c002": (45, "m", "silver", False, ["value:5"]),
    "c003": (22, "m", "gold", True, ["traveller", "sports"]),
    "c004": (67, "f", "platinum", False, ["traveller", "value:5"]),
    "c005": (38, "f", "bronze", True, ["sports"]),
}
PARTS = (["c001", "c002", "c003"], ["c004", "c005"])

SEGMENTS = [
    {"name": "travellers", "where": "'traveller' in tags"},  # c001 c003 c004
    Segment(name="high-value", where="'value:5' in tags && profile.age >= 30"),  # c001 c002 c004
    {"kind": "segment", "name": "drivers", "where": "profile.car_owner == true && profile.gender == 'f'"},  # c001 c005
    {"name": "nobody", "where": "profile.missing > 3"},  # an error is false
]


def write_data(root: Path, *, tags_in_one_part: bool = False) -> Path:
    tag_rows: list[list[tuple[str, str]]] = []
    for number, ids in enumerate(PARTS):
        columns = {
            "customer_id": ids,
            "age": pa.array([CUSTOMERS[c][0] for c in ids], pa.int16()),
            "gender": [CUSTOMERS[c][1] for c in ids],
            "tier": [CUSTOMERS[c][2] for c in ids],
            "car_owner": [CUSTOMERS[c][3] for c in ids],
        }
        path = root / "customers" / f"part-{number:05d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(columns), path)
        tag_rows.append([(c, tag) for c in ids for tag in CUSTOMERS[c][4]])
    if tags_in_one_part:
        tag_rows = [[row for rows in tag_rows for row in rows]]
    for number, rows in enumerate(tag_rows):
        path = root / "jobs" / "tags" / f"part-{number:05d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        table = pa.table(
            {
                "customer_id": [c for c, _ in rows],
                "tag": [t for _, t in rows],
                "value": pa.array([1.0] * len(rows), pa.float32()),
                "place_id": pa.array([None] * len(rows), pa.string()),
            }
        )
        pq.write_table(table, path)
    return root


@pytest.fixture(autouse=True)
def _quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ESP_PROGRESS", "0")


def test_customer_index_is_the_number_of_the_digits():
    assert segments.customer_index(["c0000123", "c7", "x0"]).tolist() == [123, 7, 0]
    with pytest.raises(InputError, match="'abc'"):
        segments.customer_index(["c1", "abc"])
    with pytest.raises(InputError, match="c4294967296"):
        segments.customer_index(["c4294967296"])


@pytest.mark.parametrize("tags_in_one_part", [False, True])
def test_members_by_hand(tmp_path: Path, tags_in_one_part: bool):
    data = write_data(tmp_path, tags_in_one_part=tags_in_one_part)
    summary = segments.run(data, SEGMENTS)
    members = pq.read_table(data / "jobs" / "segments" / "members.parquet").to_pylist()
    found: dict[str, set[str]] = {}
    for row in members:
        found.setdefault(row["segment"], set()).add(row["customer_id"])
    assert found == {
        "travellers": {"c001", "c003", "c004"},
        "high-value": {"c001", "c002", "c004"},
        "drivers": {"c001", "c005"},
    }
    assert summary["customers"] == 5
    assert {name: s["size"] for name, s in summary["segments"].items()} == {
        "travellers": 3,
        "high-value": 3,
        "drivers": 2,
        "nobody": 0,
    }
    assert json.loads((data / "jobs" / "segments" / "summary.json").read_text())["customers"] == 5


def test_bitmaps_round_trip(tmp_path: Path):
    data = write_data(tmp_path)
    segments.run(data, SEGMENTS)
    raw = (data / "jobs" / "segments" / "travellers.roaring").read_bytes()
    assert BitMap.deserialize(raw) == BitMap([1, 3, 4])
    loaded = segments.load(data)
    assert loaded["high-value"].members == BitMap([1, 2, 4])
    assert loaded["drivers"].members == BitMap([1, 5])
    assert loaded["nobody"].members == BitMap()
    assert loaded["travellers"].population_size == 5


def test_a_second_run_drops_the_bitmaps_of_segments_no_longer_asked_for(tmp_path: Path):
    data = write_data(tmp_path)
    segments.run(data, SEGMENTS)
    segments.run(data, SEGMENTS[:1])
    assert sorted(p.name for p in (data / "jobs" / "segments").glob("*.roaring")) == ["travellers.roaring"]
    assert set(pq.read_table(data / "jobs" / "segments" / "members.parquet")["segment"].to_pylist()) == {"travellers"}


def test_profile_by_hand(tmp_path: Path):
    data = write_data(tmp_path)
    profile = segments.run(data, SEGMENTS)["segments"]["travellers"]
    assert profile["size"] == 3
    assert profile["share"] == 0.6
    # population: traveller 3/5, value:5 3/5, sports 2/5; travellers: traveller 3/3, value:5 2/3, sports 1/3
    tags = {row["tag"]: row for row in profile["tags"]}
    assert [row["tag"] for row in profile["tags"]] == ["traveller", "value:5", "sports"]
    assert tags["traveller"] == {"tag": "traveller", "members": 3, "share": 1.0, "lift": round(5 / 3, 4)}
    assert tags["value:5"]["lift"] == round(10 / 9, 4)
    assert tags["sports"]["lift"] == round(5 / 6, 4)
    assert profile["tiers"] == {"gold": 2, "platinum": 1}
    assert profile["ages"] == {"<25": 1, "25-34": 1, "65+": 1}


def test_compare_by_hand(tmp_path: Path):
    data = write_data(tmp_path)
    summary = segments.run(data, SEGMENTS, compare_pairs=[("travellers", "high-value")])
    loaded = segments.load(data)
    result = segments.compare(loaded["travellers"], loaded["high-value"])
    assert summary["compare"] == [result]
    # {1, 3, 4} vs {1, 2, 4}
    assert {k: result[k] for k in ("size_a", "size_b", "overlap", "only_a", "only_b", "union", "jaccard")} == {
        "size_a": 3,
        "size_b": 3,
        "overlap": 2,
        "only_a": 1,
        "only_b": 1,
        "union": 4,
        "jaccard": 0.5,
    }
    # lifts: travellers (traveller 5/3, value:5 10/9, sports 5/6); high-value (10/9, 5/3, 0)
    lifts = {row["tag"]: row for row in result["tag_lift"]}
    assert result["tag_lift"][0]["tag"] == "sports"
    assert lifts["sports"] == {"tag": "sports", "lift_a": round(5 / 6, 4), "lift_b": 0.0, "difference": round(5 / 6, 4)}
    assert lifts["traveller"]["difference"] == round(5 / 9, 4)
    assert lifts["value:5"]["difference"] == round(-5 / 9, 4)


def test_compare_asks_for_known_segments(tmp_path: Path):
    data = write_data(tmp_path)
    with pytest.raises(InputError, match="compare"):
        segments.run(data, SEGMENTS, compare_pairs=[("travellers", "ghosts")])


def test_two_ids_with_the_same_digits_are_refused(tmp_path: Path):
    data = write_data(tmp_path)
    pq.write_table(pa.table({"customer_id": ["c0001"], "tier": ["gold"]}), data / "customers" / "part-00002.parquet")
    with pytest.raises(EspError, match="same digits"):
        segments.run(data, SEGMENTS)
