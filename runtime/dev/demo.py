"""``esp demo``: a private local ESP (embedded Redis, in-process Ray, Serve), the demo config,
a synthetic stream, and what fired — then everything is stopped."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import Counter
from pathlib import Path

import click

from runtime.config.documents import load_yaml_documents
from runtime.dev.client import EspClient
from runtime.dev.synthetic import cell_kv, demo_consents, demo_events, demo_identity_links, hotline_csv
from runtime.settings import EspSettings

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "demo"
DEMO_KEY = "demo-app-key-0123456789"
HOTLINE_KEY = "hotline-key-0123456789"
CELL_KEY = "cell-feed-key-0123456789"


def run_demo(
    *, customers: int, events: int, state_dir: Path, batch_customers: int = 2000, batch_days: int = 14
) -> None:
    import ray

    from actors.platform import Platform
    from runtime.dev.redis_server import free_port

    shutil.rmtree(state_dir, ignore_errors=True)
    settings = EspSettings(state_dir=state_dir, redis_port=free_port(), metrics_export_port=free_port())
    platform = Platform(settings)
    started = time.perf_counter()
    click.echo(f"starting embedded Redis, local Ray and the HTTP API (state in {state_dir}) ...")
    platform.start_redis()
    platform.start_gateway(own_process=False)
    try:
        platform.init_ray_in_process()
        platform.deploy(detached=False)
        os.environ["ESP_TOKEN"] = platform.admin_token or ""  # this process operates the demo as its admin
        click.echo(f"up in {time.perf_counter() - started:.1f}s at {platform.base_url}")
        with EspClient(platform.base_url, key=DEMO_KEY) as client:
            _apply(client)
            _reference_data(client, customers)
            _stream(client, customers=customers, events=events)
            _other_sources(platform.base_url, customers=customers)
            _show_results(client)
            _batch_campaign(client, customers)
            _show_decisions(client)
            _show_messages(platform.gateway_log)
            if batch_customers:
                from runtime.dev.demo_batch import run_batch

                run_batch(
                    client,
                    base_url=platform.base_url,
                    redis_url=settings.effective_redis_url(),
                    data=state_dir / "batch-data",
                    customers=batch_customers,
                    days=batch_days,
                )
    finally:
        click.echo("stopping ...")
        try:
            platform.undeploy()
        finally:
            ray.shutdown()
            platform.stop_gateway()
            if platform.redis_server:
                platform.redis_server.stop()
    click.echo(f"demo finished in {time.perf_counter() - started:.1f}s; nothing left running.")


def _apply(client: EspClient) -> None:
    for origin, raw in load_yaml_documents(CONFIG_DIR):
        result = client.put_config(raw)
        click.echo(f"  applied {result['kind']}/{result['name']} v{result['version']}  ({Path(origin).name})")


def _reference_data(client: EspClient, customers: int) -> None:
    links = client.request("PUT", "/v1/identities", json=demo_identity_links(customers))
    consents = client.request("PUT", "/v1/consents", json=demo_consents(customers))
    click.echo(f"  linked {links['stored']} phone numbers to customers; recorded {consents['stored']} consents")


def _stream(client: EspClient, *, customers: int, events: int) -> None:
    stream = list(demo_events(customers=customers, events=events))
    stream.insert(len(stream) // 2, {"id": "broken-1", "type": "app.login", "subject": "c000001"})  # no time
    click.echo(f"source demo-app (JSON): {len(stream)} synthetic events of {customers} customers (one malformed)")
    report = client.send(stream, batch_size=10_000)
    click.echo(
        f"  accepted {report.accepted}, duplicates {report.duplicates}, rejected {len(report.rejected)} "
        f"in {report.seconds:.2f}s ({report.events_per_s:,.0f} events/s)"
    )
    again = client.send(stream[:10_000], batch_size=10_000)
    click.echo(f"  re-sent the first 10,000: accepted {again.accepted}, duplicates {again.duplicates}")


def _other_sources(base_url: str, *, customers: int) -> None:
    feeds = [
        ("hotline", HOTLINE_KEY, "text/csv", hotline_csv(customers=customers, calls=3000), "CSV"),
        ("cell-feed", CELL_KEY, "text/plain", cell_kv(customers=customers, updates=5000), "key=value"),
    ]
    for name, key, content_type, body, label in feeds:
        with EspClient(base_url, key=key) as feed:
            answer, _ = feed.post_body(body, content_type)
            again, _ = feed.post_body(body, content_type)
        click.echo(
            f"source {name} ({label}): accepted {answer['accepted']}, duplicates {answer['duplicates']}, "
            f"filtered {answer['filtered']}, dropped {answer['dropped']}, rejected {len(answer['rejected'])}"
        )
        click.echo(f"  sent again: accepted {again['accepted']}, duplicates {again['duplicates']}")
        for rejection in answer["rejected"][:2]:
            click.echo(f"  quarantined #{rejection['index']}: {rejection['reason']} - {rejection['message']}")


def _show_results(client: EspClient) -> None:
    quarantine = client.request("GET", "/v1/quarantine", params={"limit": 5})
    click.echo(f"quarantine holds {quarantine['total']} records (GET /v1/quarantine, esp quarantine list)")
    click.echo("reading subscription 'marketing' ...")
    received = client.drain("marketing", idle_s=3.0)
    by_type = Counter(e["type"] for e in received)
    for kind, count in sorted(by_type.items()):
        click.echo(f"  {kind:32s} {count:6d}")
    for kind in sorted(by_type):
        event = next(e for e in received if e["type"] == kind)
        data = event["data"]
        click.echo(
            f"  e.g. {kind} for {event['subject']} at {event['time']}: rule {data['rule']} "
            f"v{data['rule_version']}, {data['count']} events, id {event['id']}"
        )
    ids = [e["id"] for e in received]
    click.echo(f"  {len(received)} outputs, {len(ids) - len(set(ids))} duplicate ids")


def _show_messages(log: Path, settle_s: float = 3.0, timeout_s: float = 60.0) -> None:
    """What the channels and webhooks delivered to the local gateway (waits until it settles)."""
    from runtime.dev.gateway import read_messages

    click.echo("the local gateway (what the sms channel and the crm-webhook subscription sent) ...")
    deadline, seen, quiet_since = time.monotonic() + timeout_s, -1, time.monotonic()
    while time.monotonic() < deadline:
        count = len(read_messages(log, limit=1_000_000))
        if count != seen:
            seen, quiet_since = count, time.monotonic()
        elif time.monotonic() - quiet_since >= settle_s:
            break
        time.sleep(0.25)
    messages = read_messages(log, limit=1_000_000)
    by_channel = Counter(m["channel"] for m in messages)
    for channel, count in sorted(by_channel.items()):
        click.echo(f"  {channel:32s} {count:6d}")
    for channel in sorted(by_channel):
        example = next(m for m in reversed(messages) if m["channel"] == channel)
        body = example["body"]
        shown = body.get("message") if isinstance(body, dict) and "message" in body else json.dumps(body)[:160]
        signed = " (signed: webhook-signature)" if "webhook-signature" in example["headers"] else ""
        click.echo(f"  e.g. {channel}{signed}: {shown}")


def _batch_campaign(client: EspClient, customers: int) -> None:
    """A batch campaign's contacts meet the real-time offers in the same ledger."""
    contacts = [
        {"customer": f"c{i:06d}", "channel": "sms", "template": "wealth-beginner"} for i in range(0, customers, 4)
    ]
    answer = client.request("POST", "/v1/campaigns/wealth-q4/contacts", json={"run": "demo", "contacts": contacts})
    click.echo(f"batch campaign wealth-q4: submitted {answer['submitted']} contacts (every 4th customer) ...")


def _show_decisions(client: EspClient) -> None:
    """What the contact policy decided, and one customer whose offers competed."""
    decisions = client.drain("contact-decisions", idle_s=4.0)
    by_outcome = Counter(
        d["data"]["outcome"]
        + (f":{d['data']['reason']}" if d["data"]["reason"] and d["data"]["outcome"] != "lost_arbitration" else "")
        for d in decisions
    )
    click.echo("contact-policy decisions (subscription 'contact-decisions'):")
    for outcome, count in sorted(by_outcome.items()):
        click.echo(f"  {outcome:32s} {count:6d}")
    contested = Counter(d["subject"] for d in decisions)
    customer = next((c for c, n in contested.most_common() if n > 1), None)
    if customer is None:
        return
    click.echo(f"  e.g. customer {customer} (GET /v1/decisions/{customer}, 'contact_decisions'):")
    for d in sorted((d for d in decisions if d["subject"] == customer), key=lambda d: d["time"]):
        data = d["data"]
        click.echo(f"    {data['campaign'] or '-':12s} {data['channel']:8s} {data['decision']}")
