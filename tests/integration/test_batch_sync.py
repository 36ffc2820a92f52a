"""The profile-store sync against a real redis-server: what readers see after a sync, and that a
second version replaces the first at once, never mixed. Parts run in this process."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redis
from pyroaring import BitMap

from runtime import keys
from runtime.batch import sync
from runtime.dev.redis_server import EmbeddedRedis
from runtime.events.profiles import BatchProfiles, ProfileStore

RULES_AND_SEGMENTS = [
    {"kind": "rule", "name": "airport", "audience": {"tag": "traveller"}, "when": {"event": "x"}},
    {"kind": "rule", "name": "rich", "when": {"all": [{"event": "y", "where": "data.tag.startsWith('value:')"}]}},
    {"kind": "rule", "name": "stale", "audience": {"tag": "ghost-tag"}, "when": {"event": "z"}},
    {"kind": "segment", "name": "sporty", "where": "'sports' in tags && profile.age < 40"},
]


def write_parts(root: Path, name: str, parts: list[dict[str, list]]) -> None:
    for number, columns in enumerate(parts):
        path = root / name / f"part-{number:05d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(columns), path)


def write_data(root: Path, customers: list[list[str]]) -> Path:
    """Customers in parts; tags, segment bitmaps and scores of c0001..c0003 (whoever is present)."""
    write_parts(root, "customers", [{"customer_id": ids} for ids in customers])
    tags = {
        "c0001": [("traveller", 0.9), ("value:5", 1.0), ("sports", 0.2), ("unused-tag", 0.5)],
        "c0002": [("sports", 1.0)],
        "c0003": [("traveller", 0.5), ("value:4", 1.0)],
    }
    scores = {"c0001": {"a": 10.0, "b": 90.0, "c": 50.0}, "c0003": {"a": 70.5}}
    tag_parts, score_parts = [], []
    for ids in customers:
        rows = [(c, t, v) for c in ids for t, v in tags.get(c, [])]
        tag_parts.append(
            {"customer_id": [r[0] for r in rows], "tag": [r[1] for r in rows], "value": [r[2] for r in rows]}
        )
        rows = [(c, p, s) for c in ids for p, s in scores.get(c, {}).items()]
        score_parts.append(
            {"customer_id": [r[0] for r in rows], "product": [r[1] for r in rows], "score": [r[2] for r in rows]}
        )
    write_parts(root / "jobs", "tags", tag_parts)
    write_parts(root / "jobs", "matrix", score_parts)
    segments = root / "jobs" / "segments"
    segments.mkdir(parents=True, exist_ok=True)
    (segments / "travellers.roaring").write_bytes(BitMap([1, 3]).serialize())
    (segments / "sporty.roaring").write_bytes(BitMap([1, 2]).serialize())
    return root


@pytest.fixture(autouse=True)
def _quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ESP_PROGRESS", "0")


def test_readers_see_tags_segments_and_scores(tmp_path: Path, redis_server: EmbeddedRedis, redis_client: redis.Redis):
    data = write_data(tmp_path, [["c0001", "c0002"], ["c0003", "c0004"]])
    ProfileStore(redis_client).put("c0001", {"tier": "gold", "tags": ["vip"]})
    summary = sync.run(data, redis_server.url, version="v1", top_scores=2, max_tags=3)
    profiles = ProfileStore(redis_client).get_many(["c0001", "c0002", "c0003", "c0004"])
    assert profiles["c0001"] == {
        "tier": "gold",
        "tags": ["traveller", "unused-tag", "value:5", "vip"],  # strongest 3 of the batch tags, with the own 'vip'
        "segments": ["sporty", "travellers"],
        "scores": {"b": 90.0, "c": 50.0},
    }
    assert profiles["c0002"] == {"tags": ["sports"], "segments": ["sporty"]}
    assert profiles["c0003"] == {"tags": ["traveller", "value:4"], "segments": ["travellers"], "scores": {"a": 70.5}}
    assert profiles["c0004"] == {}
    assert BatchProfiles(redis_client).current() == "v1"
    assert {k: summary[k] for k in ("version", "previous", "customers", "written", "with_tags", "tags_capped")} == {
        "version": "v1",
        "previous": None,
        "customers": 4,
        "written": 3,
        "with_tags": 3,
        "tags_capped": 1,
    }
    assert (summary["with_segments"], summary["with_scores"], summary["segments"]) == (3, 2, ["sporty", "travellers"])


def test_tag_usage(tmp_path: Path, redis_server: EmbeddedRedis):
    data = write_data(tmp_path, [["c0001", "c0002", "c0003"]])
    usage = sync.run(data, redis_server.url, version="v1", rules_and_segments=RULES_AND_SEGMENTS)["tag_usage"]
    assert usage["carried"] == {"sports": 2, "traveller": 2, "unused-tag": 1, "value:4": 1, "value:5": 1}
    assert usage["used"] == {
        "sports": ["segment/sporty"],
        "traveller": ["rule/airport"],
        "value:4": ["rule/rich"],
        "value:5": ["rule/rich"],
    }
    assert usage["unused"] == ["unused-tag"]
    assert usage["missing"] == {"ghost-tag": ["rule/stale"]}
    assert "unused" not in sync.tag_usage({"a": 1}, None)


def test_a_new_version_switches_at_once(
    tmp_path: Path, redis_server: EmbeddedRedis, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
):
    data = write_data(tmp_path / "v1", [["c0001", "c0002"], ["c0003"]])
    sync.run(data, redis_server.url, version="v1")
    store = ProfileStore(redis_client)
    v1 = store.get_many(["c0001", "c0003"])
    assert v1["c0003"]["segments"] == ["travellers"]

    data2 = write_data(tmp_path / "v2", [["c0001", "c0002"]])  # c0003 is gone in v2
    (data2 / "jobs" / "segments" / "sporty.roaring").unlink()
    seen_before: dict[str, dict] = {}
    switch = BatchProfiles.switch

    def checked_switch(self: BatchProfiles, version: str) -> str | None:
        seen_before.update(store.get_many(["c0001", "c0003"]))  # v2 is written, not yet switched to
        return switch(self, version)

    monkeypatch.setattr(BatchProfiles, "switch", checked_switch)
    summary = sync.run(data2, redis_server.url, version="v2")
    assert seen_before == v1
    after = store.get_many(["c0001", "c0003"])
    assert after["c0003"] == {}
    assert after["c0001"]["segments"] == ["travellers"]
    assert summary["previous"] == "v1"
    assert 0 < redis_client.ttl(keys.batch_profile("v1", "c0003")) <= 86_400  # the old version expires


def test_default_version_is_a_timestamp():
    assert sync.default_version(1_790_000_000_123) == "20260921T141320.123Z"
