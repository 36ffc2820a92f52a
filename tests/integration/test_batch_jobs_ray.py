"""Every batch job on a small generated data set, as Ray tasks on a real local Ray: generate ->
tags -> segments -> matrix -> allocate -> timing -> sync (a real redis-server) -> campaign (a
loopback stand-in for the contacts endpoint) -> evaluate."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import ray

from runtime.batch import allocate, campaign, evaluate, layout, matrix, segments, sync, tags, timing
from runtime.batch.generate import generate
from runtime.config.documents import load_yaml_documents
from runtime.events.profiles import ProfileStore
from runtime.policy.models import Campaign
from tests.integration.test_batch_campaign import api
from tests.support.receiver import Receiver

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    if started:
        ray.shutdown()


def test_every_job_runs_as_ray_tasks_on_generated_data(local_ray, tmp_path, redis_server, redis_client, monkeypatch):
    monkeypatch.setenv("ESP_PROGRESS", "0")
    data = tmp_path / "city"
    made = generate(data, customers=1200, days=7, seed=3, parts=2)
    assert made["rows"]["stays"] > 1200 * 7 * 3 and len(layout.parts(data, "customers")) == 2

    tagged = tags.run(data)
    assert tagged["customers_tagged"] > 1000 and tagged["distinct_tags"] > 50

    docs = [raw for _, raw in load_yaml_documents(ROOT / "configs" / "demo" / "segments.yaml")]
    segmented = segments.run(data, docs, compare_pairs=[("frequent-travellers", "high-value")])
    assert 0 < segmented["segments"]["high-value"]["size"] < 1200
    assert "jaccard" in segmented["compare"][0]

    scored = matrix.run(data, top_n=3)
    models = scored["models"]
    assert len(scored["products"]) == 8 and all(0.0 <= m["auc"] <= 1.0 for m in models.values())
    scores = pq.read_table(sorted(layout.job_dir(data, "matrix").glob("part-*.parquet"))).to_pydict()
    assert len(scores["customer_id"]) == 1200 * 8 and 0 <= min(scores["score"]) <= max(scores["score"]) <= 100

    plan = allocate.run_spec(data, ROOT / "configs" / "batch" / "allocation.json")
    assert plan["optimised"]["total_score"] >= plan["greedy"]["total_score"] - 1e-6 and plan["feasible"]
    assert not any(plan["optimised"]["violations"].values())

    crowd = timing.run(data)
    assert crowd["recommended"]["all"]

    synced = sync.run(data, redis_server.url, version="t1")
    member = pq.read_table(layout.job_dir(data, "segments") / "members.parquet").to_pylist()[0]
    profile = ProfileStore(redis_client).get(member["customer_id"])
    assert member["segment"] in profile["segments"] and profile["scores"] and synced["version"] == "t1"

    travel = Campaign.model_validate(
        {"name": "travel-q4", "product": "roaming-pack", "segment": "frequent-travellers", "channel": "sms",
         "template": "roaming-pack", "control_share": 0.2}
    )  # fmt: skip
    with Receiver(api(set())) as server:
        sent = campaign.run(data, travel, base_url=f"http://127.0.0.1:{server.port}", run_id="r1", force=True)
    assert sent["submitted"] == sent["targets"] > 0 and sent["control"] > 0

    evaluate.simulate_responses(data, "travel-q4", "r1")
    report = evaluate.run(data, "travel-q4", run_id="r1")
    assert Path(report["report"]["html"]).exists() and Path(report["report"]["xlsx"]).exists()
