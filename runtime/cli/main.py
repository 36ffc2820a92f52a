"""The ``esp`` command line: run the platform locally, apply config, send and read events."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import click
import orjson

from runtime.config.documents import load_yaml_documents, parse_document
from runtime.dev.client import EspClient, default_token
from runtime.dev.local_ray import use_local_ray
from runtime.errors import EspError
from runtime.events.envelope import format_time_ms
from runtime.process_logging import configure_from_environment
from runtime.security.redact import redact_url
from runtime.settings import EspSettings

DEFAULT_URL = "http://127.0.0.1:8000"


def _settings(**overrides: Any) -> EspSettings:
    return EspSettings(**{k: v for k, v in overrides.items() if v is not None})


def _fail(exc: EspError) -> None:
    click.echo(json.dumps({"error": exc.to_dict()}), err=True)
    sys.exit(2)


@click.group()
def main() -> None:
    """ESP — real-time event strategy platform."""
    configure_from_environment("esp-cli")  # log lines on stderr; what the command prints is unchanged


@main.command()
@click.option("--address", help="Deploy onto an existing Ray cluster (e.g. ray://head:10001 or auto).")
@click.option("--redis-url", envvar="ESP_REDIS_URL", help="External Redis; default: embedded redis-server.")
@click.option("--state-dir", type=click.Path(path_type=Path), help="Local state directory (default .esp).")
@click.option(
    "--no-auth",
    is_flag=True,
    help="Local experiments only: no source keys, no operator or subscriber tokens; every route is open.",
)
@click.option(
    "--local-nodes",
    default=1,
    show_default=True,
    type=click.IntRange(min=1, max=16),
    help="Ray nodes to start on this machine: the head and N-1 workers, each with ESP_RAY_NUM_CPUS/N CPUs "
    "(at least 1); the partition actors are spread over them. Not with --address.",
)
@click.option(
    "--redis-cluster",
    default=0,
    type=click.IntRange(min=0, max=16),
    help="Start a local Redis Cluster of N masters (at least 3) on ESP_REDIS_PORT and the next ports, "
    "instead of one embedded Redis, to try ESP on a cluster. Not with --redis-url.",
)
def up(
    address: str | None,
    redis_url: str | None,
    state_dir: Path | None,
    no_auth: bool,
    local_nodes: int,
    redis_cluster: int,
) -> None:
    """Start Redis, Ray, the partition actors and the HTTP API; they keep running."""
    settings = _settings(redis_url=redis_url, state_dir=state_dir, auth=False if no_auth else None)
    if local_nodes > 1 and address is not None:
        click.echo("--local-nodes starts a cluster on this machine; it cannot be combined with --address.", err=True)
        sys.exit(2)
    if redis_cluster and (redis_url or redis_cluster < 3):
        reason = "it cannot be combined with --redis-url" if redis_url else "a Redis Cluster needs at least 3 masters"
        click.echo(f"--redis-cluster: {reason}.", err=True)
        sys.exit(2)
    if address is None:
        use_local_ray(settings.state_dir)  # before Ray is imported: loopback only, token auth
    from actors.platform import Platform

    platform = Platform(settings)
    if no_auth:
        click.echo(
            "WARNING: --no-auth turns off every credential check: anyone who reaches the API port can read and "
            "change everything (config, tokens, customer data) and post events as any source.",
            err=True,
        )
    if platform.load_state():
        click.echo(f"ESP is already up (state in {platform.state_file}); run 'esp down' first.", err=True)
        sys.exit(1)
    try:
        platform.start_redis(cluster=redis_cluster)
    except EspError as exc:
        _fail(exc)
    settings = platform.settings  # on a local Redis Cluster: its URL
    started_ray = address is None
    worker_nodes: list[dict[str, Any]] = []
    try:
        if started_ray and local_nodes > 1:
            share = max(1, settings.ray_num_cpus // local_nodes)
            click.echo(f"starting Ray head and {local_nodes - 1} worker nodes ({share} CPUs each) ...")
            address = platform.start_ray_head(num_cpus=share)
            worker_nodes = platform.start_ray_workers(address, local_nodes - 1, share)
            platform.proxy_location = "HeadOnly"  # one HTTP proxy: every node would bind the same loopback port
        elif started_ray:
            click.echo("starting Ray head ...")
            address = platform.start_ray_head()
        platform.connect(address)
        try:
            platform.deploy(detached=True)
        except EspError as exc:
            _fail(exc)
    except BaseException:  # nothing of ours is left running when 'esp up' fails
        if platform.redis_server:
            platform.redis_server.stop()
        if platform.redis_cluster:
            platform.redis_cluster.stop()
        raise
    redis_pid = platform.redis_server.pid if platform.redis_server else None
    gateway_pid = platform.start_gateway(own_process=True)
    platform.save_state(
        address=address,
        started_ray=started_ray,
        redis_pid=redis_pid,
        gateway_pid=gateway_pid,
        url=platform.base_url,
        redis_url=settings.redis_url and settings.redis_url.get_secret_value(),  # external only
        redis_port=settings.redis_port,
        state_dir=str(settings.state_dir.resolve()),
        **({"local_nodes": local_nodes, "worker_nodes": worker_nodes} if worker_nodes else {}),
        **({"redis_cluster_ports": [n.port for n in platform.redis_cluster.nodes]} if platform.redis_cluster else {}),
        settings=settings.model_dump(mode="json", exclude={"redis_url", "secret"}),  # secrets: not here
    )
    click.echo(f"ESP is up at {platform.base_url} (OpenAPI: {platform.base_url}/docs); 'esp down' stops it.")
    click.echo(f"Redis: {redact_url(settings.effective_redis_url())}" + _password_note(platform))
    if platform.admin_token:
        click.echo(
            f"admin token in {platform.admin_token_file} (mode 0600): the CLI uses it; "
            "'esp tokens create' makes tokens for people and systems."
        )
    if gateway_pid:
        click.echo(f"local message gateway on port {settings.gateway_port}: 'esp messages' shows what was sent.")


def _password_note(platform: Any) -> str:
    """Where the embedded Redis's password is, for redis-cli users."""
    if platform.redis_cluster is not None:
        ports = ", ".join(str(n.port) for n in platform.redis_cluster.nodes)
        return f" (a Redis Cluster on ports {ports}; password in {platform.redis_cluster.password_file}, mode 0600)"
    if platform.redis_server is None:
        return ""
    return f" (password in {platform.redis_server.password_file}, mode 0600)"


@main.command()
@click.option("--state-dir", type=click.Path(path_type=Path))
def down(state_dir: Path | None) -> None:
    """Stop what 'esp up' started (checkpointing the partition actors first)."""
    import subprocess

    state_file = (state_dir or EspSettings().state_dir) / "platform.json"
    state = json.loads(state_file.read_text()) if state_file.exists() else {}
    if state.get("started_ray"):
        use_local_ray(state_dir or EspSettings().state_dir)  # the token of the head 'esp up' started
    import ray

    from actors.platform import Platform
    from runtime.dev.redis_server import EmbeddedRedis, EmbeddedRedisCluster

    settings = _settings(state_dir=state_dir)
    platform = Platform(settings)
    if not state:
        click.echo("nothing to stop: no running ESP recorded under " + str(settings.state_dir))
        return
    settings = _deployed_settings(state_dir, state)
    platform = Platform(settings)
    try:
        platform.connect(state["address"])
        platform.undeploy()
        ray.shutdown()
    except Exception as exc:  # the cluster may be gone already; still stop the rest
        click.echo(f"warning: could not undeploy cleanly: {redact_url(str(exc))}", err=True)
    if state.get("worker_nodes"):  # 'esp up --local-nodes N': this cluster's processes only, not 'ray stop'
        _stop_worker_nodes(state["worker_nodes"])
        _end_pids(_session_pids({n["session_name"] for n in state["worker_nodes"]}))
    elif state.get("started_ray"):
        subprocess.run([str(Path(sys.executable).with_name("ray")), "stop"], check=False, capture_output=True)
    if state.get("redis_pid"):
        EmbeddedRedis(settings.state_dir / "redis", settings.redis_port).stop()
    if state.get("redis_cluster_ports"):
        EmbeddedRedisCluster(settings.state_dir / "redis-cluster", state["redis_cluster_ports"]).stop()
    if state.get("gateway_pid"):
        import os
        import signal

        with contextlib.suppress(ProcessLookupError):
            os.kill(int(state["gateway_pid"]), signal.SIGTERM)
    platform.state_file.unlink(missing_ok=True)
    click.echo("ESP is down.")


def _stop_worker_nodes(nodes: list[dict[str, Any]]) -> None:
    """End the processes of the worker nodes 'esp up --local-nodes' started (their recorded PIDs
    only), raylet first: its workers end with it."""
    _end_pids([pid for node in nodes for pid in [node.get("raylet_pid"), *node.get("pids", [])] if pid])


def _session_pids(sessions: set[str]) -> list[int]:
    """The processes on this machine of the Ray cluster(s) with these session names (the head's
    GCS and raylet carry it on their command line), and their descendants (the agents and
    workers, some of which rename themselves, e.g. ``ray::DashboardAgent``)."""
    found, parent = set(), {}
    for proc in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            parent[int(proc.name)] = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if any(name and name.encode() in (proc / "cmdline").read_bytes() for name in sessions):
                found.add(int(proc.name))
    grown = True
    while grown:
        more = {pid for pid, ppid in parent.items() if ppid in found} - found
        found |= more
        grown = bool(more)
    return sorted(found)


def _end_pids(pids: list[int], grace_s: float = 10.0) -> None:
    """SIGTERM each, then SIGKILL what is still there after ``grace_s``."""
    import signal

    for pid in dict.fromkeys(pids):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(int(pid), signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for pid in dict.fromkeys(pids):
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
            with contextlib.suppress(ChildProcessError):
                os.waitpid(int(pid), os.WNOHANG)
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(int(pid), signal.SIGKILL)


@main.command()
@click.option("--url", default=DEFAULT_URL, show_default=True)
@click.option("--state-dir", type=click.Path(path_type=Path), help="Where 'esp up' recorded its Ray (default .esp).")
@click.option("--json", "as_json", is_flag=True, help="One JSON document: readiness, partitions, nodes and actors.")
def status(url: str, state_dir: Path | None, as_json: bool) -> None:
    """Readiness, partition actors and backlog of a running ESP; with the Ray that 'esp up'
    recorded reachable, its nodes and which partition actors (partitions, lag) run on each."""
    import httpx

    try:
        ready = httpx.get(f"{url}/readyz", timeout=5)
    except httpx.HTTPError as exc:
        if as_json:
            click.echo(json.dumps({"reachable": False, "error": str(exc), "cluster": _cluster_view(state_dir)}))
        else:
            click.echo(f"ESP is not reachable at {url}: {exc}")
        sys.exit(1)
    answer: dict[str, Any] = {"reachable": True, **ready.json()}
    if not as_json:
        click.echo(json.dumps(ready.json(), indent=2))
    token = default_token()
    if token:  # each partition's event-time clock, sign-in needed
        found = httpx.get(f"{url}/v1/status", headers={"Authorization": f"Bearer {token}"}, timeout=5)
        if found.status_code == 200:
            answer["partitions"] = found.json()["partitions"]
            if not as_json:
                click.echo(_partition_table(found.json()["partitions"]))
    answer["cluster"] = _cluster_view(state_dir)
    if as_json:
        click.echo(json.dumps(answer, indent=2))
    elif answer["cluster"]:
        click.echo(_cluster_table(answer["cluster"]))
    sys.exit(0 if ready.status_code == 200 else 1)


def _cluster_view(state_dir: Path | None) -> dict[str, Any] | None:
    """The nodes and partition actors of the Ray recorded in ESP's state file, asked through
    the coordinator (None without a state file; an "error" when Ray does not answer)."""
    state = _recorded_state(state_dir)
    if state is None:
        return None
    import ray

    try:
        view = _connect_recorded(state_dir, state).coordinator().placement()
    except Exception as exc:  # the cluster, or Redis, is gone or unreachable
        return {"address": state.get("address"), "error": redact_url(str(exc))}
    finally:
        with contextlib.suppress(Exception):
            ray.shutdown()
    raylets = {**_local_raylets(), **{n["node_id"]: n.get("raylet_pid") for n in state.get("worker_nodes", [])}}
    for node in view["nodes"]:
        node["raylet_pid"] = raylets.get(node["node_id"])
    return {"address": state.get("address"), **view}


def _recorded_state(state_dir: Path | None) -> dict[str, Any] | None:
    """What 'esp up' recorded in ``<state dir>/platform.json`` (None when nothing runs). When
    'esp up' started the Ray, this also sets this process up for it (loopback, the head's
    token): Ray reads that when it is imported, so callers import it only after this."""
    try:
        state = json.loads(((state_dir or EspSettings().state_dir) / "platform.json").read_text())
    except (OSError, ValueError):
        return None
    if state.get("started_ray"):
        use_local_ray(state_dir or EspSettings().state_dir)
    return state


def _deployed_settings(state_dir: Path | None, state: dict[str, Any]) -> EspSettings:
    """The settings ESP runs with, as 'esp up' recorded them (partitions, actors' resources,
    checkpoint location, ...), not this shell's environment; secrets come from the environment
    or the state directory as at 'esp up'."""
    recorded = state.get("settings", {})
    return _settings(
        **{
            **recorded,
            "state_dir": state_dir or state.get("state_dir"),
            "redis_url": state.get("redis_url"),
            "redis_port": state.get("redis_port", recorded.get("redis_port")),
        }
    )


def _connect_recorded(state_dir: Path | None, state: dict[str, Any]) -> Any:
    """Join the Ray cluster 'esp up' recorded (``state``, from :func:`_recorded_state`);
    returns the Platform of that deployment."""
    import ray

    from actors.platform import Platform

    settings = _deployed_settings(state_dir, state)
    if not ray.is_initialized():
        host, _, port = str(state["address"]).rpartition(":")
        if host and port.isdigit() and "://" not in host:  # fail fast, not after ray.init's retries
            import socket

            socket.create_connection((host, int(port)), timeout=2).close()
        Platform.connect(state["address"])
    return Platform(settings)


@main.command()
@click.option(
    "--actors",
    type=click.IntRange(min=1),
    help="Partition actors to run from now on (at most one per partition); partitions move by checkpoint hand-over.",
)
@click.option(
    "--rebalance",
    is_flag=True,
    help="One partition actor per CPU of the cluster as it is now: run it after adding or removing nodes.",
)
@click.option("--api", type=click.IntRange(min=1), help="Replicas of the HTTP API (a rolling update).")
@click.option("--state-dir", type=click.Path(path_type=Path), help="Where 'esp up' recorded its Ray (default .esp).")
@click.option("--json", "as_json", is_flag=True, help="What moved, as one JSON document.")
def scale(actors: int | None, rebalance: bool, api: int | None, state_dir: Path | None, as_json: bool) -> None:
    """Change the number of partition actors or API replicas while ESP runs and ingestion goes
    on. Returns when every moved partition is read by its new actor, and prints what moved and
    how long each moved partition was not read."""
    if (actors is not None) + rebalance + (api is not None) != 1:
        click.echo("say one of --actors N, --rebalance or --api N", err=True)
        sys.exit(2)
    state = _recorded_state(state_dir)
    if state is None:
        click.echo("ESP is not up (no platform.json); start it with 'esp up'.", err=True)
        sys.exit(1)
    import ray

    try:
        platform = _connect_recorded(state_dir, state)
        if api is not None:
            platform.scale_api(api)
            done: dict[str, Any] = {"api_replicas": api}
        else:
            coordinator = platform.coordinator()
            result = coordinator.rescale(coordinator.cluster_cpus() if rebalance else int(actors or 1))
            done = dataclasses.asdict(result)
    except EspError as exc:
        _fail(exc)
    finally:
        with contextlib.suppress(Exception):
            ray.shutdown()
    if as_json:
        click.echo(json.dumps(done, indent=2))
    elif "moves" in done:
        click.echo(f"partition actors: {done['before']} -> {done['after']} in {done['seconds']} s")
        for move in done["moves"]:
            click.echo(
                f"  partitions {_ranges(move['partitions'])}: actor {move['source']} -> {move['target']}, "
                f"paused {move['pause_ms']} ms"
            )
    else:
        click.echo(f"API replicas: {api}")


def _local_raylets() -> dict[str, int]:
    """node id -> PID of the raylets running on this machine (Linux: their command lines in
    /proc carry ``--node_id=``); empty elsewhere."""
    found: dict[str, int] = {}
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            args = cmdline.read_bytes().split(b"\0")
            if args and args[0].endswith(b"/raylet"):
                ids = [a.split(b"=", 1)[1].decode() for a in args if a.startswith(b"--node_id=")]
                if ids:
                    found[ids[0]] = int(cmdline.parent.name)
    return found


def _cluster_table(cluster: dict[str, Any]) -> str:
    """The nodes, then one line per partition actor: its node, PID, partitions and lag."""
    if "error" in cluster:
        return f"Ray at {cluster.get('address')}: not reachable ({cluster['error']})"
    short = {n["node_id"]: n["node_id"][:12] for n in cluster["nodes"]}
    lines = ["node          address                alive  head  cpus  raylet pid  actors"]
    for n in cluster["nodes"]:
        lines.append(
            f"{short[n['node_id']]:<12}  {n['address']:<21}  {'yes' if n['alive'] else 'no':<5}  "
            f"{'yes' if n['head'] else '':<4}  {n['cpus'] or 0:>4g}  {n['raylet_pid'] or '-':>10}  "
            + (",".join(map(str, n["actors"])) or "-")
        )
    lines.append("actor  node          pid      lag  partitions")
    for a in cluster["actors"]:
        node = short.get(a["node_id"], "(restarting)" if not a["answering"] else "?")
        lag = "-" if a["lag"] is None else str(a["lag"])
        lines.append(f"{a['index']:>5}  {node:<12}  {a['pid'] or '-':>7}  {lag:>5}  {_ranges(a['partitions'])}")
    return "\n".join(lines)


def _ranges(partitions: list[int]) -> str:
    """``[0, 1, 2, 5]`` as ``0-2,5``."""
    out: list[str] = []
    for p in sorted(partitions):
        if out and out[-1].split("-")[-1] == str(p - 1):
            out[-1] = f"{out[-1].split('-')[0]}-{p}"
        else:
            out.append(str(p))
    return ",".join(out)


def _partition_table(partitions: dict[str, dict[str, Any]]) -> str:
    """One line per partition: how far behind its newest event time entries arrive (size
    ESP_REORDER_WAIT_MS / ESP_MAX_OUT_OF_ORDER_S from it), its watermark and held events."""

    def ms(value: Any) -> str:
        return "-" if value is None else ">1h" if value == -1 else f"{value / 1000:g}s"

    lines = ["partition  actor  delay p50  delay p99  delay max  held  watermark"]
    for p, st in partitions.items():
        watermark = format_time_ms(st["watermark_ms"]) if st.get("watermark_ms") else "-"
        lines.append(
            f"{p:>9}  {st['actor']:>5}  {ms(st['delay_p50_ms']):>9}  {ms(st['delay_p99_ms']):>9}  "
            f"{ms(st['delay_max_ms']):>9}  {st['held']:>4}  {watermark}"
        )
    return "\n".join(lines)


@main.command()
@click.option("-f", "path", required=True, type=click.Path(exists=True, path_type=Path), help="File or directory.")
@click.option("--url", default=DEFAULT_URL, show_default=True)
@click.option("--dry-run", is_flag=True, help="Validate only.")
def apply(path: Path, url: str, dry_run: bool) -> None:
    """Validate and store YAML config documents (sources, event types, rules, subscriptions)."""
    origin = str(path)
    try:
        docs = list(load_yaml_documents(path))
        for origin, raw in docs:  # noqa: B007 - the failing document's origin is reported below
            parse_document(raw)
    except EspError as exc:
        click.echo(json.dumps({"document": origin, "error": exc.to_dict()}), err=True)
        sys.exit(2)
    if dry_run:
        click.echo(f"{len(docs)} documents valid")
        return
    with EspClient(url) as client:
        for origin, raw in docs:
            try:
                result = client.put_config(raw)
            except EspError as exc:
                click.echo(json.dumps({"document": origin, "error": exc.to_dict()}), err=True)
                sys.exit(2)
            click.echo(f"{result['kind']}/{result['name']} version {result['version']}")


def read_events(path: Path) -> list[dict[str, Any]]:
    text = path.read_bytes().strip()
    if text.startswith(b"["):
        return orjson.loads(text)
    return [orjson.loads(line) for line in text.splitlines() if line.strip()]


@main.command()
@click.argument("file", type=click.Path(exists=True, path_type=Path))
@click.option("--url", default=DEFAULT_URL, show_default=True)
@click.option("--key", envvar="ESP_SOURCE_KEY", help="Source API key.")
@click.option("--source", help="Source name (only when the platform runs with auth off).")
@click.option("--batch-size", default=10_000, show_default=True)
def send(file: Path, url: str, key: str | None, source: str | None, batch_size: int) -> None:
    """Post events from a JSON array or NDJSON file, in batches."""
    events = read_events(file)
    with EspClient(url, key=key, source=source) as client:
        try:
            report = client.send(events, batch_size=batch_size)
        except EspError as exc:
            _fail(exc)
    click.echo(
        f"sent {len(events)} events in {report.requests} requests: accepted {report.accepted}, "
        f"duplicates {report.duplicates}, rejected {len(report.rejected)} ({report.events_per_s:,.0f} events/s)"
    )
    for rejection in report.rejected[:20]:
        click.echo(
            f"  rejected #{rejection['index']} id={rejection['id']}: {rejection['reason']}: {rejection['message']}"
        )


@main.command()
@click.argument("subscription")
@click.option("--url", default=DEFAULT_URL, show_default=True)
@click.option("--max", "max_events", default=100, show_default=True)
def tail(subscription: str, url: str, max_events: int) -> None:
    """Print a subscription's events as they arrive (pull, ack)."""
    with EspClient(url) as client:
        try:
            while True:
                events = client.pull(subscription, max_events=max_events, wait_s=5)["events"]
                for event in events:
                    click.echo(orjson.dumps(event).decode())
                if events:
                    client.ack(subscription, [e["ack_id"] for e in events])
        except EspError as exc:
            _fail(exc)


@main.command()
@click.option("--customers", default=2000, show_default=True)
@click.option("--events", default=50_000, show_default=True)
@click.option("--state-dir", type=click.Path(path_type=Path), default=Path(".esp/demo"), show_default=True)
@click.option("--batch-customers", default=2000, show_default=True, help="Customers of the batch part (0: skip it).")
@click.option("--batch-days", default=14, show_default=True)
def demo(customers: int, events: int, state_dir: Path, batch_customers: int, batch_days: int) -> None:
    """Everything end to end on synthetic data, then stop."""
    use_local_ray()  # before Ray is imported: its in-process Ray listens on loopback only
    from runtime.dev.demo import run_demo

    run_demo(
        customers=customers,
        events=events,
        state_dir=state_dir,
        batch_customers=batch_customers,
        batch_days=batch_days,
    )


@main.command()
@click.option("--events", default=100_000, show_default=True)
@click.option("--users", default=10_000, show_default=True)
@click.option("--batch-size", default=10_000, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=Path(".esp/bench"), show_default=True)
@click.option(
    "--only",
    type=click.Choice(
        ["all", "engine", "batch", "latency", "memory", "delivery", "contact", "profile_sync", "appends"]
    ),
    default="all",
    show_default=True,
    help="One part alone: the rule engine in one process (count and sequence rules against their hand-written "
    "loops), the batch jobs, latency (open-loop 10k events/s), memory (the 1 M-event sequence run, sampled), or "
    "one of the hot paths (webhook delivery, contact decisions, profile sync, appends on a fresh and a full "
    "idempotency horizon).",
)
@click.option("--latency-seconds", default=60.0, show_default=True, help="Seconds of load per request size.")
@click.option("--quick", is_flag=True, help="Latency runs of 10 s instead of --latency-seconds.")
@click.option("--batch-customers", default=100_000, show_default=True, help="Customers of the batch benchmark.")
@click.option("--batch-days", default=30, show_default=True)
@click.option(
    "--readme",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Also regenerate this README's benchmark section from the run's table.",
)
def bench(
    events: int,
    users: int,
    batch_size: int,
    out: Path,
    only: str,
    batch_customers: int,
    batch_days: int,
    latency_seconds: float,
    quick: bool,
    readme: Path | None,
) -> None:
    """Measure the engine, ingestion, latency, memory, delivery and the contact policy (or, with
    --only batch, each batch job's wall time and peak memory; with --only delivery, contact,
    profile_sync or appends, that hot path alone, with the load average after it); results go to a JSON
    file and, for the whole run, a markdown table of each figure against its goal."""
    from runtime.dev.bench_report import README_BEGIN, markdown, update_readme

    if readme is not None and only != "all":
        raise click.UsageError("--readme needs the whole run (--only all)")
    if readme is not None and (not readme.is_file() or README_BEGIN not in readme.read_text()):
        raise click.UsageError(f"--readme {readme}: no such file, or it has no {README_BEGIN} section")
    use_local_ray()  # before Ray is imported: its in-process Ray listens on loopback only
    if only == "batch":
        from runtime.batch.bench import bench_batch
        from runtime.cli.batch import ray_for_jobs

        with ray_for_jobs(None, 2):
            results = bench_batch(out / "batch-data", customers=batch_customers, days=batch_days)
    elif only == "engine":
        from runtime.dev.bench import bench_engines, host_info

        results = {**bench_engines(events, users), "host": host_info()}
    elif only == "latency":
        from runtime.dev.bench import host_info
        from runtime.dev.bench_latency import bench_latency

        latency = bench_latency(out / "state" / "latency", duration_s=10.0 if quick else latency_seconds)
        results = {"latency": latency, "host": host_info()}
    elif only == "memory":
        from runtime.dev.bench import bench_memory, host_info

        results = {**bench_memory(out / "state" / "sequence"), "host": host_info()}
    elif only != "all":
        from runtime.dev import bench as benches

        hot_paths = {
            "delivery": benches.bench_delivery,
            "contact": benches.bench_contact,
            "profile_sync": benches.bench_profile_sync,
            "appends": benches.bench_appends,
        }
        results = {only: hot_paths[only](out / "state" / only), "host": benches.host_info()}
    else:
        from runtime.dev.bench import run_bench

        results = run_bench(
            events=events,
            users=users,
            batch_size=batch_size,
            state_dir=out / "state",
            latency_duration_s=10.0 if quick else latency_seconds,
        )
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(results, indent=2))
    click.echo(json.dumps(results, indent=2))
    click.echo(f"written to {path}")
    if only != "batch":
        table = markdown(results)
        path.with_suffix(".md").write_text(table)
        click.echo(table)
        click.echo(f"written to {path.with_suffix('.md')}")
        if readme is not None:
            update_readme(readme, table)
            click.echo(f"{readme}: benchmark section regenerated")


@main.group()
def quarantine() -> None:
    """Inspect and replay quarantined events."""


@quarantine.command("list")
@click.option("--url", default=DEFAULT_URL, show_default=True)
@click.option("--source", help="Only this source.")
@click.option("--reason", help="Only reasons starting with this, e.g. unmapped_value.")
@click.option("--limit", default=20, show_default=True)
def quarantine_list(url: str, source: str | None, reason: str | None, limit: int) -> None:
    """Newest quarantined records first."""
    params = {k: v for k, v in {"source": source, "reason": reason, "limit": limit}.items() if v is not None}
    with EspClient(url) as client:
        try:
            answer = client.request("GET", "/v1/quarantine", params=params)
        except EspError as exc:
            _fail(exc)
    click.echo(f"{answer['total']} records in quarantine; showing {len(answer['items'])}")
    for item in answer["items"]:
        click.echo(f"{item['qid']}  {item['source']:12s} #{item['index']:<6d} {item['reason']:18s} {item['message']}")


@quarantine.command("show")
@click.argument("qid")
@click.option("--url", default=DEFAULT_URL, show_default=True)
def quarantine_show(qid: str, url: str) -> None:
    """One quarantined record with its raw payload."""
    with EspClient(url) as client:
        try:
            click.echo(json.dumps(client.request("GET", f"/v1/quarantine/{qid}"), indent=2))
        except EspError as exc:
            _fail(exc)


@quarantine.command("replay")
@click.option("--url", default=DEFAULT_URL, show_default=True)
@click.option("--source", help="Only this source.")
@click.option("--reason", help="Only reasons starting with this.")
@click.option("--limit", default=10_000, show_default=True)
def quarantine_replay(url: str, source: str | None, reason: str | None, limit: int) -> None:
    """Re-ingest quarantined records through the current config (ids kept: nothing doubles)."""
    params = {k: v for k, v in {"source": source, "reason": reason, "limit": limit}.items() if v is not None}
    with EspClient(url) as client:
        try:
            click.echo(json.dumps(client.request("POST", "/v1/quarantine/replay", params=params)))
        except EspError as exc:
            _fail(exc)


def _register_data_commands() -> None:
    from runtime.cli.admin import audit, tokens
    from runtime.cli.batch import data, job
    from runtime.cli.data import consents, identities
    from runtime.cli.delivery import deadletters, messages

    main.add_command(tokens)
    main.add_command(audit)
    main.add_command(data)
    main.add_command(job)
    main.add_command(identities)
    main.add_command(consents)
    main.add_command(deadletters)
    main.add_command(messages)


_register_data_commands()


@main.command()
@click.argument("source")
@click.argument("event_id")
@click.option("--url", default=DEFAULT_URL, show_default=True)
def trace(source: str, event_id: str, url: str) -> None:
    """Where an event went: logged (partition, entry), read, rules matched, dropped, quarantined."""
    with EspClient(url) as client:
        try:
            click.echo(json.dumps(client.request("GET", f"/v1/events/{source}/{event_id}/trace"), indent=2))
        except EspError as exc:
            _fail(exc)


@main.command()
@click.argument("rule_file", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--events",
    "events_file",
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help="History: NDJSON, JSON array or Parquet envelopes.",
)
@click.option("--rule", "rule_name", help="Which rule, when the file holds several.")
@click.option(
    "--profiles",
    "profiles_file",
    type=click.Path(exists=True, path_type=Path),
    help="JSON object customer -> profile, for audience and profile conditions.",
)
def backtest(rule_file: Path, events_file: Path, rule_name: str | None, profiles_file: Path | None) -> None:
    """Run a rule over historical events in-process and report who it would have reached."""
    from runtime.rules.backtest import backtest as run_backtest
    from runtime.rules.backtest import load_events, load_rule

    try:
        rule = load_rule(rule_file, rule_name)
        profiles = orjson.loads(profiles_file.read_bytes()) if profiles_file else None
        report = run_backtest(rule, load_events(events_file), profiles=profiles)
    except EspError as exc:
        _fail(exc)
    click.echo(json.dumps(report, indent=2))


@main.command()
@click.argument("customer")
@click.argument("rule", required=False)
@click.option("--url", default=DEFAULT_URL, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the API answer as it is (last fires included).")
def why(customer: str, rule: str | None, url: str, as_json: bool) -> None:
    """What a customer's rule state holds (matched events, progress, timers, cooldown), then each
    rule's last fires with the events that triggered them."""
    params = {"rule": rule} if rule else {}
    with EspClient(url) as client:
        try:
            answer = client.request("GET", f"/v1/decisions/{customer}", params=params)
        except EspError as exc:
            _fail(exc)
    if as_json:
        click.echo(json.dumps(answer, indent=2))
        return
    fires = {entry["rule"]: entry.pop("last_fires", []) for entry in answer.get("rules", [])}
    click.echo(json.dumps(answer, indent=2))
    click.echo("last fires, newest first:")
    for name, listed in fires.items():
        click.echo(f"  {name}:" + ("" if listed else " none kept"))
        for fire in listed:
            events = ", ".join(f"{e['source']}/{e['id']}" for e in fire["events"])
            click.echo(f"    {fire['time']}  v{fire['version']}  {fire['topic']}  output {fire['id']}  <- {events}")


if __name__ == "__main__":
    main()
