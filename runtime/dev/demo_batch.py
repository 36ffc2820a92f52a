"""The batch half of ``esp demo``: generate -> tags -> segments -> matrix -> allocate -> sync
-> a batch campaign -> evaluate, on the demo's Ray, then a real-time rule gated by a batch
segment and score."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import click

from runtime.config.documents import load_yaml_documents
from runtime.config.types import document_body
from runtime.dev.client import EspClient

ROOT = Path(__file__).resolve().parents[2]
SEGMENTS = ROOT / "configs" / "demo" / "segments.yaml"
ALLOCATION = ROOT / "configs" / "batch" / "allocation.json"


def run_batch(client: EspClient, *, base_url: str, redis_url: str, data: Path, customers: int, days: int) -> None:
    from runtime.batch import allocate, campaign, evaluate, matrix, segments, sync, tags
    from runtime.batch.generate import generate
    from runtime.policy.models import Campaign

    click.echo(f"batch: {customers} synthetic customers x {days} days in {data} (Ray tasks) ...")
    os.environ.setdefault("ESP_PROGRESS", "0")  # one line per step here; the jobs' own CLI shows progress bars
    steps: list[tuple[str, Any]] = []

    def step(name: str, fn: Any) -> Any:
        started = time.perf_counter()
        summary = fn()
        steps.append((name, time.perf_counter() - started))
        return summary

    made = step("generate", lambda: generate(data, customers=customers, days=days, seed=7))
    click.echo(f"  generate: {made['rows']['stays']:,} stays, {made['rows']['sessions']:,} sessions")
    tagged = step("tags", lambda: tags.run(data))
    click.echo(f"  tags: {tagged['rows']:,} tags, {tagged['distinct_tags']:,} distinct")
    docs = [raw for _, raw in load_yaml_documents(SEGMENTS)]
    segmented = step("segments", lambda: segments.run(data, docs))
    sizes = ", ".join(f"{n} {s['size']}" for n, s in segmented["segments"].items())
    click.echo(f"  segments: {sizes}")
    scored = step("matrix", lambda: matrix.run(data, top_n=3))
    aucs = ", ".join(f"{p} {m['auc']:.2f}" for p, m in sorted(scored["models"].items()))
    click.echo(f"  matrix holdout AUC (baseline mean {scored['baseline_auc_mean']:.2f}): {aucs}")
    plan = step("allocate", lambda: allocate.run_spec(data, ALLOCATION))
    best = plan["optimised"]
    click.echo(
        f"  allocate: {best['contacts']} contacts, total score {best['total_score']:,.0f} "
        f"({plan['gain_pct']:+.2f}% over greedy, {best['method']})"
    )
    synced = step("sync", lambda: sync.run(data, redis_url, version="demo"))
    click.echo(f"  sync: profiles of {synced['customers']:,} customers, version {synced['version']}")
    doc = client.request("GET", "/v1/config/campaign/travel-q4")
    body = document_body(doc)
    sent = step(
        "campaign",
        lambda: campaign.run(data, Campaign.model_validate(body), base_url=base_url, run_id="demo", force=True),
    )
    click.echo(
        f"  campaign travel-q4: audience {sent['audience']}, control {sent['control']}, "
        f"submitted {sent['submitted']} to the contact policy"
    )
    evaluate.simulate_responses(data, "travel-q4", "demo")
    report = step("evaluate", lambda: evaluate.run(data, "travel-q4", run_id="demo"))
    overall = report["overall"]
    click.echo(
        f"  evaluate: response {overall.get('response_rate', 0):.1%} vs control "
        f"{overall.get('control_response_rate', 0):.1%}; report {report['report']['html']}"
    )
    click.echo("  wall times: " + ", ".join(f"{name} {seconds:.1f}s" for name, seconds in steps))
    _gated_rule(client, data)


def _gated_rule(client: EspClient, data: Path) -> None:
    """Members of the batch segment with a high roaming score fire the real-time rule."""
    import pyarrow.parquet as pq

    from runtime.batch import layout

    members = pq.read_table(layout.job_dir(data, "segments") / "members.parquet").to_pylist()
    travellers = sorted({m["customer_id"] for m in members if m["segment"] == "frequent-travellers"})[:50]
    scores = pq.read_table(sorted(layout.job_dir(data, "matrix").glob("part-*.parquet"))).to_pylist()
    high = {s["customer_id"] for s in scores if s["product"] == "roaming-pack" and s["score"] >= 60}
    others = [f"c{i:07d}" for i in range(1, 51) if f"c{i:07d}" not in set(travellers)][:20]
    now = int(time.time() * 1000)
    events = [
        {"id": f"gate-{c}", "type": "location.update", "time": now, "subject": c, "data": {"cell": "AIRPORT-T2-INTL"}}
        for c in travellers + others
    ]
    client.send(events)
    fired = {e["subject"] for e in client.drain("roaming-leads", idle_s=3.0)}
    click.echo(
        f"real-time rule airport-roaming-scored (audience: batch segment frequent-travellers and roaming-pack "
        f"score >= 60): {len(travellers)} members ({len(high & set(travellers))} scoring >= 60) and {len(others)} "
        f"others at the airport -> {len(fired)} fired, {len(fired - (high & set(travellers)))} of them outside both"
    )
