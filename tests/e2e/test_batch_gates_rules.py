"""A segment and a score computed by the batch jobs gate a real-time rule, end to end: hand-made
customers and tags -> ``esp job segments`` and ``sync`` logic (Ray tasks on the test's Ray) ->
the profile store -> a rule with ``audience`` over HTTP."""

from __future__ import annotations

import pyarrow as pa

from runtime.batch import campaign as campaign_job
from runtime.batch import layout, segments, sync
from runtime.batch.runner import write_table
from tests.e2e.helpers import read_exactly
from tests.integration.test_batch_campaign import a_campaign, write_members

T0 = 1_790_000_000_000


def _customers(ids: list[str]) -> pa.Table:
    n = len(ids)
    columns = {
        "customer_id": ids,
        "phone": [f"1380000{i:04d}" for i in range(n)],
        "imei": [f"35{i:013d}" for i in range(n)],
        "age": [30] * n,
        "gender": ["f"] * n,
        "tier": ["gold", "silver", "gold", "bronze"][:n],
        "plan": ["5g-plus"] * n,
        "arpu": [[100.0] * 6] * n,
        "data_gb": [10.0] * n,
        "voice_min": [100.0] * n,
        "sms_count": [5.0] * n,
        "device_brand": ["x"] * n,
        "car_owner": [False] * n,
        "housing_fund": [True] * n,
        "main_bank": ["b"] * n,
        "has_card": [True] * n,
        "home_cell": ["h"] * n,
        "work_cell": [None] * n,
        "timezone": ["Asia/Shanghai"] * n,
    }
    return pa.table(columns, schema=layout.CUSTOMERS)


def test_a_batch_segment_and_score_gate_a_real_time_rule(platform, client, tmp_path):
    data = tmp_path / "data"
    ids = ["c0000001", "c0000002", "c0000003", "c0000004"]
    write_table(_customers(ids), layout.table_dir(data, "customers") / "part-00000.parquet")
    tags = pa.table(
        {
            "customer_id": ["c0000001", "c0000002", "c0000003"],
            "tag": ["circle:behaviour:business-traveller"] * 3,
            "value": [1.0] * 3,
            "place_id": [None] * 3,
        },
        schema=layout.TAGS,
    )
    write_table(tags, layout.job_dir(data, "tags") / "part-00000.parquet")
    scores = pa.table(
        {"customer_id": ids, "product": ["roaming-pack"] * 4, "score": [91.0, 88.0, 40.0, 95.0]},
        schema=layout.SCORES,
    )
    write_table(scores, layout.job_dir(data, "matrix") / "part-00000.parquet")

    where = "'circle:behaviour:business-traveller' in tags && profile.tier in ['gold', 'silver']"
    summary = segments.run(data, [{"name": "frequent-travellers", "where": where}])
    assert summary["segments"]["frequent-travellers"]["size"] == 3  # c1, c2, c3 (c4 is no traveller)
    sync.run(data, platform.settings.effective_redis_url(), version="v1")

    client.put_config(
        {
            "kind": "rule",
            "name": "roaming-offer",
            "audience": {"segment": "frequent-travellers", "score": {"product": "roaming-pack", "gte": 70}},
            "when": {"event": "location.update", "where": "data.cell == 'AIRPORT-T1'"},
            "then": [{"emit": "roaming_lead"}],
        }
    )
    client.put_config({"kind": "subscription", "name": "roaming", "topics": ["business.roaming_lead"]})
    events = [
        {"id": f"b{i}", "type": "location.update", "time": T0 + i, "subject": c, "data": {"cell": "AIRPORT-T1"}}
        for i, c in enumerate(ids)
    ]
    assert client.send(events).accepted == 4
    fired = read_exactly(platform, client, "roaming", 2, timeout_s=30)
    # c1 and c2: members with a score >= 70; c3 is a member scoring 40; c4 scores 95 but is no member
    assert sorted(e["subject"] for e in fired) == ["c0000001", "c0000002"]


def test_a_campaign_run_submits_its_contacts_through_the_real_route(platform, client, tmp_path):
    """``esp job campaign`` against the platform's own ``POST /v1/campaigns/{name}/contacts``
    (the integration tests use a scripted stand-in): every target is accepted once, a second
    submission of the run only duplicates, and an unconfigured campaign stops the run."""
    data = write_members(tmp_path)
    campaign = a_campaign(start="2026-01-01T00:00:00Z")
    client.put_config({"kind": "campaign", **campaign.model_dump(mode="json", exclude_none=True)})
    first = campaign_job.run(data, campaign, base_url=platform.base_url, run_id="e2e-r1", now_ms=T0, batch_size=8)
    assert first["status"] == "done", first
    assert first["targets"] > 0 and first["slices"] > 1
    assert (first["submitted"], first["accepted"], first["duplicates"]) == (first["targets"], first["targets"], 0)
    again = campaign_job.run(data, campaign, base_url=platform.base_url, run_id="e2e-r1", now_ms=T0, batch_size=8)
    assert (again["accepted"], again["duplicates"]) == (0, first["targets"])
    unknown = a_campaign(name="e2e-unconfigured")
    failed = campaign_job.run(data, unknown, base_url=platform.base_url, run_id="e2e-r1", now_ms=T0)
    assert (failed["status"], failed["error"]["reason"], failed["submitted"]) == ("failed", "not_found", 0)
