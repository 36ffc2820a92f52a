"""``esp demo``: a private local ESP (embedded Redis, in-process Ray, Serve), the demo config,
a synthetic stream, and what fired — then everything is stopped."""

from __future__ import annotations

import shutil
import time
from collections import Counter
from pathlib import Path

import click

from runtime.client import EspClient
from runtime.config.documents import load_yaml_documents
from runtime.settings import EspSettings
from runtime.synthetic import demo_events

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs" / "demo"
DEMO_KEY = "demo-app-key-0123456789"


def run_demo(*, customers: int, events: int, state_dir: Path) -> None:
    import ray

    from actors.platform import Platform
    from runtime.redis_server import free_port

    shutil.rmtree(state_dir, ignore_errors=True)
    settings = EspSettings(state_dir=state_dir, redis_port=free_port(), metrics_export_port=free_port())
    platform = Platform(settings)
    started = time.perf_counter()
    click.echo(f"starting embedded Redis, local Ray and the HTTP API (state in {state_dir}) ...")
    platform.start_redis()
    try:
        platform.init_ray_in_process()
        platform.deploy(detached=False)
        click.echo(f"up in {time.perf_counter() - started:.1f}s at {platform.base_url}")
        with EspClient(platform.base_url, key=DEMO_KEY) as client:
            _apply(client)
            _stream(client, customers=customers, events=events)
    finally:
        click.echo("stopping ...")
        try:
            platform.undeploy()
        finally:
            ray.shutdown()
            if platform.redis_server:
                platform.redis_server.stop()
    click.echo(f"demo finished in {time.perf_counter() - started:.1f}s; nothing left running.")


def _apply(client: EspClient) -> None:
    for origin, raw in load_yaml_documents(CONFIG_DIR):
        result = client.put_config(raw)
        click.echo(f"  applied {result['kind']}/{result['name']} v{result['version']}  ({Path(origin).name})")


def _stream(client: EspClient, *, customers: int, events: int) -> None:
    stream = list(demo_events(customers=customers, events=events))
    stream.insert(len(stream) // 2, {"id": "broken-1", "type": "app.login", "subject": "c000001"})  # no time
    click.echo(f"sending {len(stream)} synthetic events of {customers} customers (one malformed) ...")
    report = client.send(stream, batch_size=10_000)
    click.echo(
        f"  accepted {report.accepted}, duplicates {report.duplicates}, rejected {len(report.rejected)} "
        f"in {report.seconds:.2f}s ({report.events_per_s:,.0f} events/s)"
    )
    for rejection in report.rejected:
        click.echo(
            f"  rejected #{rejection['index']} ({rejection['id']}): {rejection['reason']} - {rejection['message']}"
        )
    again = client.send(stream[:10_000], batch_size=10_000)
    click.echo(f"  re-sent the first 10,000: accepted {again.accepted}, duplicates {again.duplicates}")
    click.echo("reading subscription 'marketing' ...")
    received = client.drain("marketing", idle_s=3.0)
    by_type = Counter(e["type"] for e in received)
    for kind, count in sorted(by_type.items()):
        click.echo(f"  {kind:32s} {count:6d}")
    for event in received[:3]:
        data = event["data"]
        click.echo(
            f"  e.g. {event['type']} for {event['subject']} at {event['time']}: rule {data['rule']} "
            f"v{data['rule_version']}, {data['count']} events, id {event['id']}"
        )
    ids = [e["id"] for e in received]
    click.echo(f"  {len(received)} outputs, {len(ids) - len(set(ids))} duplicate ids")
