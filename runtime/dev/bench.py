"""``esp bench``: the numbers of DESIGN.md §6, measured the same way every time.

- ``engine``: the generic rule engine in one process over msgpack-encoded log entries
  (decoding included), against a hand-written loop over parsed tuples for the same rule;
  ``engine_sequence`` the same for "``ab.a`` then ``ab.b`` within 60 s".
- ``expression``: nanoseconds per predicate evaluation.
- ``end_to_end``: a private local ESP; events sent as ``esp send`` does (NDJSON batches, the
  client on the same machine); the rate until the last batch was acknowledged (durable in the
  log) and the rate until the partition actors have processed every event.
- ``sequence_senders``: "``ab.a`` then ``ab.b`` within 60 s" end to end, sent in order and by 4
  concurrent senders sharing one queue of batches, every output checked against the
  ordered-stream oracle. Alone: ``python -m runtime.dev.bench --events 1000000`` (see ``main``).
- ``sequence_rescale``: the same with 4 senders while the partition actors are rescaled 2 -> 4
  -> 2 (``esp scale --actors``), with each move's pause. Alone: add ``--senders 4 --rescale 4,2``.
- ``sequence_nodes``: the same with 4 senders on a local cluster of 1 and of 3 nodes (same cores),
  and on 3 nodes with a worker node killed mid-stream. Alone: add ``--nodes 1,3 --kill-node``.
- ``sequence_redis_cluster``: the same with 4 senders on a local 3-master Redis Cluster. Alone:
  add ``--senders 4 --redis-cluster 3``.
- ``delivery``, ``contact``, ``profile_sync``: webhook delivery, contact decisions through the
  ledger, and profile writes as ``esp job sync`` and ``ProfileStore.put_many`` make them.
"""

from __future__ import annotations

import os
import platform as host
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgspec

from runtime.dev.process_cpu import CpuMeter
from runtime.dev.synthetic import START_MS, ab_events
from runtime.events.columns import EventColumns
from runtime.events.envelope import Event
from runtime.log.partition_log import encode_events
from runtime.process_gc import tune_gc
from runtime.rules import PartitionEngine, compile_rule, pair_scan

BENCH_RULE = {
    "kind": "rule",
    "name": "bench-pair",
    "when": {"event": "bench.a", "where": "data.v >= 90", "count": 2, "within": "60s"},
    "then": [{"emit": "bench_pair"}],
}


def in_threads(work: Callable[[int, threading.Event], None], count: int, name: str) -> None:
    """``work(n, failed)`` for n in 0..count-1, each in its own thread (named ``name-n``);
    ``failed`` is set as soon as one of them raises, so the others can stop early, and the
    first exception is raised here once every thread has ended."""
    failed = threading.Event()
    errors: list[BaseException] = []

    def run(n: int) -> None:
        try:
            work(n, failed)
        except BaseException as exc:  # re-raised in the caller's thread
            errors.append(exc)
            failed.set()

    threads = [threading.Thread(target=run, args=(n,), name=f"{name}-{n}", daemon=True) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def _events(n: int, users: int) -> list[Event]:
    return [
        Event(e["id"], e["type"], e["time"], e["subject"], e["subject"], "bench", e["data"], START_MS)
        for e in ab_events(users=users, events=n)
    ]


def bench_engine(events: int, users: int, entry_size: int = 5000) -> dict[str, Any]:
    parsed = _events(events, users)
    tuples = [(e.customer, e.type, e.time, e.data["v"]) for e in parsed]
    result = _engine_against_loop(parsed, BENCH_RULE, _hand_written, tuples, entry_size)
    return {"events": events, "users": users, **result}


def _engine_against_loop(
    parsed: list[Event],
    rule: dict[str, Any],
    loop: Any,
    tuples: list[tuple[Any, ...]],
    entry_size: int,
    repeats: int = 3,
) -> dict[str, Any]:
    """``rule`` in the engine over ``parsed`` as msgpack log entries of ``entry_size`` events
    (decoding included, as partition actors see them), against ``loop``, the same rule written
    by hand over ``tuples``: both fire counts and rates, and the ratio. The two run in turn
    ``repeats`` times and each keeps its fastest run, so a burst of load from other processes
    on a shared machine weighs on neither side alone."""
    entries = [encode_events(parsed[i : i + entry_size]) for i in range(0, len(parsed), entry_size)]
    tune_gc()  # the collector's pace of a partition actor
    engine_s = baseline_s = float("inf")
    for _ in range(repeats):
        engine = PartitionEngine([compile_rule(rule)])
        started = time.perf_counter()
        fired = sum(len(engine.on_events(EventColumns.decode(entry))) for entry in entries)
        engine_s = min(engine_s, time.perf_counter() - started)
        started = time.perf_counter()
        baseline_fired = loop(tuples)
        baseline_s = min(baseline_s, time.perf_counter() - started)
    return {
        "fired": fired,
        "baseline_fired": baseline_fired,
        "engine_events_per_s": round(len(parsed) / engine_s),
        "baseline_events_per_s": round(len(parsed) / baseline_s),
        "ratio_to_baseline": round(baseline_s / engine_s, 3),
        "state_customers": engine.customers,
    }


def _hand_written(tuples: list[tuple[str, str, int, int]]) -> int:
    """The same rule as BENCH_RULE, written by hand over parsed tuples (the baseline)."""
    windows: dict[str, list[int]] = {}
    fired = 0
    for customer, kind, time_ms, v in tuples:
        if kind != "bench.a" or v < 90:
            continue
        window = windows.setdefault(customer, [])
        window.append(time_ms)
        while window and window[0] <= time_ms - 60_000:
            window.pop(0)
        if len(window) >= 2:
            fired += 1
            window.clear()
    return fired


def bench_engine_sequence(events: int, customers: int, entry_size: int = 5000) -> dict[str, Any]:
    """The rule engine on issue 16's workload, "``ab.a`` then ``ab.b`` within 60 s" (types a/b/c
    at 20/20/60 %, event time +3 ms per event), in one process over msgpack log entries as
    partition actors see them (decoding included), against a hand-written loop for the same
    sequence over parsed tuples; both must find the ordered stream's matches."""
    from runtime.dev.sequence_oracle import FIRST, SECOND, WITHIN_MS, sequence_rule
    from runtime.dev.synthetic import ab_sequence_events
    from runtime.events.envelope import validate_batch

    wire = list(ab_sequence_events(customers=customers, events=events, seed=16, prefix="e-"))
    parsed = validate_batch(wire, source="bench", received_at=0).events
    tuples = [(e.customer, e.type, e.time) for e in parsed]

    def hand_written(tuples: list[tuple[str, str, int]]) -> int:
        latest: dict[str, int] = {}  # customer -> time of the newest ab.a since the last match
        fired = 0
        for customer, kind, time_ms in tuples:
            if kind == FIRST:
                latest[customer] = time_ms
            elif kind == SECOND:
                first = latest.get(customer)
                if first is not None and time_ms - first < WITHIN_MS:
                    fired += 1
                    del latest[customer]
        return fired

    result = _engine_against_loop(parsed, sequence_rule(), hand_written, tuples, entry_size)
    return {"events": events, "customers": customers, **result}


def bench_engines(events: int, users: int) -> dict[str, Any]:
    """The rule engine's two figures (``esp bench`` and ``esp bench --only engine``): the count
    rule over at least 1 M events, and issue 16's sequence workload."""
    return {
        "engine": bench_engine(max(events, 1_000_000), users),
        "engine_sequence": bench_engine_sequence(1_000_000, 10_000),
    }


def bench_demo_rules(events: int = 1_000_000, customers: int = 100_000) -> dict[str, Any]:
    """The demo rule set (configs/demo/rules.yaml) over demo events: events/s in-process with
    decoding, and the rule state it keeps per customer (in memory, and in a checkpoint)."""
    import tracemalloc
    from pathlib import Path

    from runtime.config.documents import load_yaml_documents, parse_document
    from runtime.dev.synthetic import demo_events
    from runtime.events.envelope import validate_batch
    from runtime.rules.models import Rule

    rules_file = Path(__file__).resolve().parents[2] / "configs" / "demo" / "rules.yaml"
    rules = [
        compile_rule(doc) for _, raw in load_yaml_documents(rules_file) if isinstance(doc := parse_document(raw), Rule)
    ]
    parsed = validate_batch(list(demo_events(customers=customers, events=events)), source="bench", received_at=0).events
    entries = [encode_events(parsed[i : i + 5000]) for i in range(0, len(parsed), 5000)]
    del parsed
    engine = PartitionEngine(rules)
    started = time.perf_counter()
    fired = sum(len(engine.on_events(EventColumns.decode(entry))) for entry in entries)
    seconds = time.perf_counter() - started
    del engine
    tracemalloc.start()  # a second pass, traced, for the memory the state holds
    before = tracemalloc.get_traced_memory()[0]
    engine = PartitionEngine(rules)
    for entry in entries:
        engine.on_events(EventColumns.decode(entry))
    state_bytes = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    snapshot_bytes = len(msgspec.msgpack.encode(engine.snapshot()))
    live = max(engine.customers, 1)
    return {
        "events": events,
        "rules": len(rules),
        "outputs": fired,
        "events_per_s": round(events / seconds),
        "customers_with_state": engine.customers,
        "state_bytes_per_customer_in_memory": round(state_bytes / live),
        "state_bytes_per_customer_in_checkpoint": round(snapshot_bytes / live),
    }


def bench_expression(n: int = 200_000) -> dict[str, Any]:
    from runtime.expr.bench import measure

    source = "data.site == 'official' && data.duration_s >= 120"
    ns = measure(source, {"data": {"site": "official", "duration_s": 300}}, n)
    return {"expression": source, "ns_per_eval": round(ns, 1)}


def bench_adapters(n: int = 100_000) -> dict[str, Any]:
    """Parse + map a 100k-record body per source format, in-process (records/s)."""
    from runtime.sources.bench import measure_formats

    return measure_formats(n)


@contextmanager
def _local_platform(state_dir: Path, *, redis_cluster: int = 0, **overrides: Any) -> Iterator[Any]:
    """A private local ESP (embedded Redis, or a local Redis Cluster of ``redis_cluster``
    masters; in-process Ray, the Serve app) for one benchmark, operated as its admin
    (``ESP_TOKEN``), torn down on exit; ``overrides`` are settings."""
    import shutil

    import ray

    from actors.platform import Platform
    from runtime.dev.redis_server import free_cluster_ports, free_port
    from runtime.settings import EspSettings

    shutil.rmtree(state_dir, ignore_errors=True)
    settings = EspSettings(
        state_dir=state_dir,
        redis_port=free_cluster_ports(redis_cluster)[0] if redis_cluster else free_port(),
        metrics_export_port=free_port(),
        http_port=free_port(),
        max_backlog_entries=100_000,
        **overrides,
    )
    platform = Platform(settings)
    platform.start_redis(cluster=redis_cluster)
    own_ray = not ray.is_initialized()  # else: a cluster its maker shuts down (local_cluster)
    try:
        if own_ray:
            platform.init_ray_in_process()
        if len(ray.nodes()) > 1:
            platform.proxy_location = "HeadOnly"  # one HTTP proxy: the nodes share this machine's loopback
        platform.deploy(detached=False)
        os.environ["ESP_TOKEN"] = platform.admin_token or ""  # the benchmark operates its platform as admin
        yield platform
    finally:
        platform.undeploy()
        if own_ray:
            ray.shutdown()
        if platform.redis_server:
            platform.redis_server.stop()
        if platform.redis_cluster:
            platform.redis_cluster.stop()


def bench_end_to_end(events: int, users: int, batch_size: int, state_dir: Path) -> dict[str, Any]:
    from runtime.dev.client import EspClient

    with _local_platform(state_dir) as platform:
        key = "bench-source-key-0123456789"
        stream = list(ab_events(users=users, events=events))
        with EspClient(platform.base_url, key=key) as client:
            client.put_config({"kind": "source", "name": "bench", "api_key": key})
            client.put_config(BENCH_RULE)
            started = time.perf_counter()
            report = client.send(stream, batch_size=batch_size)  # exactly what `esp send` does
            acked_s = time.perf_counter() - started
            processed_s = _wait_processed(platform, started)
        return {
            "events": events,
            "batch_size": batch_size,
            "accepted": report.accepted,
            "esp_send_events_per_s": round(events / acked_s),
            "end_to_end_events_per_s": round(events / processed_s) if processed_s else None,
            "actors": len(platform.actors),
        }


def _wait_processed(platform: Any, started: float, timeout_s: float = 300) -> float | None:
    """Seconds from ``started`` until the partition actors have read every log entry (whichever
    actors own the partitions by then: rescaled or restarted ones count too); None on timeout."""
    from runtime.log.partition_log import PartitionLog
    from runtime.redis_client import connect

    log = PartitionLog(connect(platform.settings.effective_redis_url()), horizon_s=3600)
    partitions = range(platform.settings.partitions)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not any(log.backlog(partitions).values()):
            return time.perf_counter() - started
        time.sleep(0.05)
    return None


def send_from_queue(
    base_url: str,
    key: str,
    bodies: Sequence[bytes],
    *,
    senders: int,
    hold: tuple[int, float] | None = None,
    content_type: str = "application/x-ndjson",
    progress: list[int] | None = None,
) -> dict[str, Any]:
    """Post ``bodies`` with ``senders`` threads sharing one queue: each sender takes the next
    body and posts it (as ``esp send`` does, retrying on 429/5xx), so with several senders a
    customer's events can arrive a few requests out of order, as behind a load balancer.
    ``hold=(index, seconds)``: the sender that takes body ``index`` waits ``seconds`` before
    posting it while the others go on (a late batch). Returns the totals of the answers and the
    order in which the bodies were acknowledged."""
    import queue
    from itertools import pairwise

    from runtime.dev.client import EspClient

    work: queue.Queue[tuple[int, bytes]] = queue.Queue()
    for item in enumerate(bodies):
        work.put(item)
    totals = {"requests": 0, "accepted": 0, "duplicates": 0, "rejected": 0, "retries": 0}
    acked: list[int] = []
    acked_at: dict[int, float] = {}
    lock = threading.Lock()

    def sender(n: int, failed: threading.Event) -> None:
        with EspClient(base_url, key=key) as client:
            while not failed.is_set():
                try:
                    index, body = work.get_nowait()
                except queue.Empty:
                    return
                if hold is not None and index == hold[0]:
                    time.sleep(hold[1])
                answer, retries = client.post_body(body, content_type)
                with lock:
                    totals["requests"] += 1
                    totals["retries"] += retries
                    totals["accepted"] += answer["accepted"]
                    if progress is not None:  # events acknowledged so far, for a watching thread
                        progress[0] = totals["accepted"]
                    totals["duplicates"] += answer["duplicates"]
                    totals["rejected"] += len(answer["rejected"])
                    acked.append(index)
                    acked_at[index] = time.perf_counter()

    started = time.perf_counter()
    in_threads(sender, senders, "esp-sender")
    out_of_order = sum(1 for before, after in pairwise(acked) if after < before)
    return {
        **totals,
        "seconds": time.perf_counter() - started,
        "acked_out_of_order": out_of_order,
        "order": acked,
        "needed_wait_s": needed_wait_s(acked_at),
    }


def needed_wait_s(acked_at: dict[int, float]) -> float:
    """The reorder wait that would have put these bodies back in order: the longest time a body
    was acknowledged after a later body of the queue (0 when they were acknowledged in order).
    What ESP_REORDER_WAIT_MS must exceed for this traffic."""
    worst, earliest_later = 0.0, float("inf")
    for index in sorted(acked_at, reverse=True):
        worst = max(worst, acked_at[index] - earliest_later)
        earliest_later = min(earliest_later, acked_at[index])
    return round(worst, 3)


def read_outputs(client: Any, subscription: str, expected: int, *, idle_s: float, timeout_s: float = 300) -> list[Any]:
    """Pull and ack (``EspClient.drain``) until ``expected`` distinct outputs arrived and then
    nothing more for ``idle_s``, or nothing at all for ``idle_s`` (fewer outputs than expected),
    or ``timeout_s`` passed. Everything received is returned, duplicates included."""
    outputs: list[Any] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = client.drain(subscription, idle_s=idle_s, timeout_s=max(deadline - time.monotonic(), 0.1))
        outputs += got
        if not got or len({o["id"] for o in outputs}) >= expected:
            break
    return outputs


SEQUENCE_SOURCE_KEY = "bench-sequence-key-0123456789"


def bench_sequence_senders(
    state_dir: Path,
    *,
    events: int = 1_000_000,
    customers: int = 10_000,
    batch_size: int = 10_000,
    senders: Sequence[int] = (1, 4),
    seed: int = 14,
    rescale: Sequence[int] = (),
    redis_cluster: int = 0,
) -> dict[str, Any]:
    """The "``ab.a`` then ``ab.b`` within 60 s" workload of issues 14 and 16 on a private local
    ESP with default settings, once per entry of ``senders`` (1: in order; 4: four concurrent
    senders sharing one queue of NDJSON batches). Each run sends its own customers and event
    ids, later in event time than the run before; its outputs are read from a subscription and
    scored against the ordered-stream oracle (runtime/dev/sequence_oracle.py): expected, got,
    invalid, duplicates, missing, with events/s until the last acknowledgement and until the
    partition actors processed everything.

    ``rescale`` (e.g. ``(4, 2)``): while each run streams, change the number of partition actors
    to each count in turn (``esp scale --actors``), starting ``RESCALE_AFTER_S`` into the run;
    the run reports every move and its pause. The actors then reserve a quarter CPU each, so
    four fit on two cores next to the rest.

    ``redis_cluster`` N: on a local Redis Cluster of N masters instead of one Redis."""
    from runtime.dev.client import EspClient
    from runtime.dev.sequence_oracle import WITHIN_MS, expected_matches, score, sequence_rule
    from runtime.dev.synthetic import SEQUENCE_STEP_MS, ab_sequence_events, ndjson_batches

    rule = sequence_rule(name="bench-ab-sequence", topic="business.bench_ab_sequence")
    subscription = "bench-ab-sequence"
    runs: list[dict[str, Any]] = []
    overrides = {"actor_num_cpus": 0.25} if rescale else {}
    with (
        _local_platform(state_dir, redis_cluster=redis_cluster, **overrides) as platform,
        EspClient(platform.base_url) as admin,
    ):
        admin.put_config({"kind": "source", "name": "bench-sequence", "api_key": SEQUENCE_SOURCE_KEY})
        admin.put_config(rule)
        admin.put_config({"kind": "subscription", "name": subscription, "topics": [rule["then"][0]["emit"]]})
        reorder_wait_s = getattr(platform.settings, "reorder_wait_ms", 0) / 1000
        for run, count in enumerate(senders):
            start_ms = START_MS + run * (events * SEQUENCE_STEP_MS + 3_600_000)  # an hour after the last run
            stream = list(
                ab_sequence_events(customers=customers, events=events, seed=seed, prefix=f"r{run}-", start_ms=start_ms)
            )
            bodies = list(ndjson_batches(stream, batch_size))
            expected = expected_matches(stream, WITHIN_MS)
            cpu = CpuMeter().start()
            started = time.perf_counter()
            scaler = _Rescaler(platform.coordinator(), rescale)
            sent = send_from_queue(platform.base_url, SEQUENCE_SOURCE_KEY, bodies, senders=count)
            acked_s = time.perf_counter() - started
            rescales = scaler.result(acked_s)
            processed_s = _wait_processed(platform, started)
            cpu.stop()  # from the first request to the last entry read: the outputs' reading is not counted
            outputs = read_outputs(admin, subscription, len(expected), idle_s=reorder_wait_s + 3.0)
            scored = score(outputs, stream, WITHIN_MS, expected=expected)
            runs.append(
                {
                    "senders": count,
                    "events": events,
                    "sent": sent["accepted"] + sent["duplicates"] + sent["rejected"],
                    "acked": sent["accepted"],
                    "requests": sent["requests"],
                    "requests_acked_out_of_order": sent["acked_out_of_order"],
                    "needed_reorder_wait_s": sent["needed_wait_s"],
                    **{k: v for k, v in scored.items() if k != "examples"},
                    "acked_events_per_s": round(events / acked_s),
                    "processed_events_per_s": round(events / processed_s) if processed_s else None,
                    "cpu": cpu.result(events),
                    "examples": scored["examples"],
                    **({"rescales": rescales} if rescale else {}),
                }
            )
            del stream, bodies, outputs
        settings = platform.settings
    return {
        "rule": rule["when"],
        "customers": customers,
        "batch_size": batch_size,
        "redis": f"cluster of {redis_cluster} masters" if redis_cluster else "one Redis",
        "max_out_of_order_s": settings.max_out_of_order_s,
        "reorder_wait_ms": getattr(settings, "reorder_wait_ms", None),
        "runs": runs,
    }


CLUSTER_CPUS = 6  # logical CPUs of the local cluster, split over its nodes: the same on 1 node and on 3


def bench_sequence_nodes(
    state_dir: Path,
    *,
    nodes: int,
    kill_node: bool = False,
    events: int = 1_000_000,
    customers: int = 10_000,
    batch_size: int = 10_000,
    senders: int = 4,
    actors: int = 4,
) -> dict[str, Any]:
    """The sequence workload with ``senders`` senders on a local cluster of ``nodes`` nodes
    (:func:`local_cluster`), ``actors`` partition actors spread over them. ``kill_node``: once a
    third of the events are acknowledged, every process of a worker node that hosts partition
    actors is killed (SIGKILL); the run reports how long until its actors answered again from
    other nodes, and the outputs are still scored against the ordered-stream oracle."""
    import threading

    import ray

    from runtime.dev.client import EspClient
    from runtime.dev.sequence_oracle import WITHIN_MS, expected_matches, score, sequence_rule
    from runtime.dev.synthetic import ab_sequence_events, ndjson_batches

    rule = sequence_rule(name="bench-ab-nodes", topic="business.bench_ab_nodes")
    stream = list(ab_sequence_events(customers=customers, events=events, seed=15, prefix="n-", start_ms=START_MS))
    expected = expected_matches(stream, WITHIN_MS)
    bodies = list(ndjson_batches(stream, batch_size))
    from runtime.dev.local_ray import local_cluster

    with (
        local_cluster(nodes, cpus_per_node=CLUSTER_CPUS // nodes) as cluster,
        _local_platform(state_dir, actors=actors) as platform,
        EspClient(platform.base_url) as admin,
    ):
        admin.put_config({"kind": "source", "name": "bench-sequence", "api_key": SEQUENCE_SOURCE_KEY})
        admin.put_config(rule)
        admin.put_config({"kind": "subscription", "name": "nodes", "topics": [rule["then"][0]["emit"]]})
        placed = ray.get([a.status.remote() for a in platform.actors])
        kill: dict[str, Any] = {}

        def kill_when_a_third_is_in() -> None:
            workers = {n.node_id: n for n in cluster.worker_nodes}
            victim = next(st["node_id"] for st in placed if st["node_id"] in workers)
            indices = [st["index"] for st in placed if st["node_id"] == victim]
            old = {i: placed[i]["pid"] for i in indices}
            while sum(sent_so_far) < events // 3:
                time.sleep(0.05)
            killed_at = time.monotonic()
            cluster.remove_node(workers[victim], allow_graceful=False)
            while True:  # until each actor it hosted answers from another process
                try:
                    now = ray.get([platform.actors[i].status.remote() for i in indices], timeout=5)
                    if all(st["pid"] != old[st["index"]] and st["recovered"] for st in now):
                        break
                except ray.exceptions.RayError:
                    pass
                time.sleep(0.1)
            kill.update(
                actors_on_killed_node=len(indices),
                partitions_moved=sum(len(placed[i]["partitions"]) for i in indices),
                recovered_s=round(time.monotonic() - killed_at, 1),
            )

        sent_so_far = [0]
        killer = threading.Thread(target=kill_when_a_third_is_in, daemon=True)
        if kill_node:
            killer.start()
        started = time.perf_counter()
        sent = send_from_queue(platform.base_url, SEQUENCE_SOURCE_KEY, bodies, senders=senders, progress=sent_so_far)
        acked_s = time.perf_counter() - started
        processed_s = _wait_processed(platform, started)
        if kill_node:
            killer.join(timeout=300)
        outputs = read_outputs(admin, "nodes", len(expected), idle_s=platform.settings.reorder_wait_ms / 1000 + 3.0)
        scored = score(outputs, stream, WITHIN_MS, expected=expected)
    return {
        "nodes": nodes,
        "actors": actors,
        "senders": senders,
        "events": events,
        "acked": sent["accepted"],
        "acked_as_duplicates": sent["duplicates"],  # retried after the first attempt's answer was lost
        **{k: v for k, v in scored.items() if k != "examples"},
        "acked_events_per_s": round(events / acked_s),
        "processed_events_per_s": round(events / processed_s) if processed_s else None,
        **({"kill_worker_node": kill} if kill_node else {}),
    }


RESCALE_AFTER_S = 3.0  # into a run, before the first rescale; as long again between rescales


class _Rescaler:
    """Rescales the partition actors to each of ``counts`` in a thread, while a run streams."""

    def __init__(self, coordinator: Any, counts: Sequence[int]) -> None:
        import threading

        self._done: list[dict[str, Any]] = []
        self._errors: list[BaseException] = []
        self._started = time.perf_counter()
        self._thread = threading.Thread(target=self._run, args=(coordinator, counts), daemon=True)
        if counts:
            self._thread.start()

    def _run(self, coordinator: Any, counts: Sequence[int]) -> None:
        try:
            for count in counts:
                time.sleep(RESCALE_AFTER_S)
                began = time.perf_counter() - self._started
                moved = coordinator.rescale(count)
                self._done.append(
                    {
                        "to": count,
                        "began_s": round(began, 1),
                        "seconds": moved.seconds,
                        "pause_ms": [m.pause_ms for m in moved.moves],
                        "partitions_moved": sum(len(m.partitions) for m in moved.moves),
                    }
                )
        except BaseException as exc:  # reported with the run
            self._errors.append(exc)

    def result(self, acked_s: float) -> list[dict[str, Any]]:
        """The rescales done (waiting for the last), each marked with whether it ended before
        the last event was acknowledged (``during_stream``)."""
        if self._thread.is_alive():
            self._thread.join(timeout=300)
        if self._errors:
            raise RuntimeError(f"a rescale failed: {self._errors[0]}") from self._errors[0]
        return [{**r, "during_stream": r["began_s"] + r["seconds"] <= acked_s} for r in self._done]


SEQUENCE_COLUMNS = (
    ("senders", "senders"),
    ("sent", "events sent"),
    ("acked", "acked"),
    ("expected", "expected matches"),
    ("got", "got"),
    ("invalid", "invalid"),
    ("duplicates", "duplicates"),
    ("missing", "missing"),
    ("unexpected", "valid, not in the ordered stream"),
    ("needed_reorder_wait_s", "reorder wait needed (s)"),
    ("acked_events_per_s", "events/s (acked)"),
    ("processed_events_per_s", "events/s (processed)"),
)


def sequence_markdown(result: dict[str, Any]) -> str:
    """:func:`bench_sequence_senders`'s runs as a markdown table."""
    lines = [
        f"`ab.a` then `ab.b` within 60 s, {result['runs'][0]['events'] if result['runs'] else 0:,} events, "
        f"{result['customers']:,} customers, {result['batch_size']:,}-event NDJSON batches "
        f"(max_out_of_order_s={result['max_out_of_order_s']}, reorder_wait_ms={result['reorder_wait_ms']})",
        "",
        "| " + " | ".join(title for _, title in SEQUENCE_COLUMNS) + " |",
        "|" + "---:|" * len(SEQUENCE_COLUMNS),
    ]
    for run in result["runs"]:
        cells = [run.get(key) for key, _ in SEQUENCE_COLUMNS]
        lines.append("| " + " | ".join("–" if c is None else f"{c:,}" for c in cells) + " |")
    for run in result["runs"]:
        if "cpu" in run:
            spent = ", ".join(f"{kind} {us:,}" for kind, us in run["cpu"]["us_per_event"].items())
            lines.append(
                f"\n- {run['senders']} sender(s), CPU per event: {run['cpu']['total_us_per_event']:,} µs "
                f"({run['cpu']['cores_busy']} cores busy): {spent}"
            )
        for r in run.get("rescales", []):
            lines.append(
                f"\n- {run['senders']} senders: rescaled to {r['to']} partition actors at {r['began_s']} s "
                f"({'during' if r['during_stream'] else 'after'} the stream) in {r['seconds']} s: "
                f"{r['partitions_moved']} partitions moved, pause per group {r['pause_ms']} ms"
            )
    return "\n".join(lines) + "\n"


NODES_COLUMNS = (
    ("nodes", "nodes"),
    ("actors", "partition actors"),
    ("acked", "acked"),
    ("acked_as_duplicates", "acked as duplicates (retries)"),
    ("expected", "expected matches"),
    ("got", "got"),
    ("duplicates", "duplicates"),
    ("missing", "missing"),
    ("invalid", "invalid"),
    ("acked_events_per_s", "events/s (acked)"),
    ("processed_events_per_s", "events/s (processed)"),
)


def nodes_markdown(runs: list[dict[str, Any]]) -> str:
    """:func:`bench_sequence_nodes`'s runs as a markdown table (a node-loss run noted below it)."""
    lines = [
        "| " + " | ".join(title for _, title in NODES_COLUMNS) + " | worker node killed |",
        "|" + "---:|" * (len(NODES_COLUMNS) + 1),
    ]
    for run in runs:
        cells = ["–" if run.get(k) is None else f"{run[k]:,}" for k, _ in NODES_COLUMNS]
        kill = run.get("kill_worker_node")
        cells.append(f"yes: actors back in {kill['recovered_s']} s" if kill else "no")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def run_bench(
    *,
    events: int,
    users: int,
    batch_size: int,
    state_dir: Path,
    sequence_events: int = 1_000_000,
    sequence_customers: int = 10_000,
    sequence_batch_size: int = 10_000,
    latency_duration_s: float = 60.0,
) -> dict[str, Any]:
    from runtime.dev.bench_latency import bench_latency

    return {
        "host": host_info(),
        **bench_engines(events, users),
        "expression": bench_expression(),
        "demo_rules": bench_demo_rules(),
        "adapters": bench_adapters(),
        "end_to_end": bench_end_to_end(events, users, batch_size, state_dir),
        **bench_memory(
            state_dir / "sequence", events=sequence_events, customers=sequence_customers, batch_size=sequence_batch_size
        ),
        "latency": bench_latency(state_dir / "latency", duration_s=latency_duration_s),
        "sequence_rescale": bench_sequence_senders(
            state_dir / "rescale",
            events=sequence_events,
            customers=sequence_customers,
            batch_size=sequence_batch_size,
            senders=(4,),
            rescale=(4, 2),
        ),
        "sequence_redis_cluster": bench_sequence_senders(
            state_dir / "redis-cluster",
            events=sequence_events,
            customers=sequence_customers,
            batch_size=sequence_batch_size,
            senders=(4,),
            redis_cluster=3,
        ),
        "sequence_nodes": [
            bench_sequence_nodes(
                state_dir / f"nodes-{n}{'-kill' if kill else ''}",
                nodes=n,
                kill_node=kill,
                events=sequence_events,
                customers=sequence_customers,
                batch_size=sequence_batch_size,
            )
            for n, kill in ((1, False), (3, False), (3, True))
        ],
        "delivery": bench_delivery(state_dir / "delivery"),
        "contact": bench_contact(state_dir / "contact"),
        "profile_sync": bench_profile_sync(state_dir / "profile-sync"),
        "appends": bench_appends(state_dir / "appends"),
    }


def host_info() -> dict[str, Any]:
    """CPUs, Python, machine, and the load average now (a run records it at its start): other processes on a
    shared machine move every absolute figure."""
    return {
        "cpus": os.cpu_count(),
        "python": host.python_version(),
        "machine": host.machine(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "compiled_pair_scan": pair_scan.COMPILED,
    }


def bench_memory(
    state_dir: Path,
    *,
    events: int = 1_000_000,
    customers: int = 10_000,
    batch_size: int = 10_000,
    senders: Sequence[int] = (1, 4),
) -> dict[str, Any]:
    """``sequence_senders``: the 1 M-event run once per entry of ``senders``, each on a fresh
    platform whose memory is sampled over its whole process tree
    (runtime/dev/process_memory.py). ``memory`` is the run with the highest RSS peak, and
    ``memory.by_run`` every run's peaks; a platform that ran both on one log would hold 2 M
    events in Redis, which is a different measure."""
    from runtime.dev.process_memory import MemorySampler

    by_run: list[dict[str, Any]] = []
    runs: list[dict[str, Any]] = []
    sequence: dict[str, Any] = {}
    for count in senders:
        with MemorySampler() as sampler:
            sequence = bench_sequence_senders(
                state_dir / f"senders-{count}",
                events=events,
                customers=customers,
                batch_size=batch_size,
                senders=(count,),
            )
        runs += sequence["runs"]
        by_run.append({"run": f"sequence_senders, {events:,} events, {count} sender(s)", **sampler.result()})
    peak = max(by_run, key=lambda run: run["peak_rss_bytes"])
    summary = [{k: run[k] for k in ("run", "peak_rss_gib", "peak_pss_gib")} for run in by_run]
    return {"memory": {**peak, "by_run": summary}, "sequence_senders": {**sequence, "runs": runs}}


def bench_delivery(
    state_dir: Path, events: int = 20_000, max_in_flight: int = 32, batches: Sequence[int] = (1, 100)
) -> dict[str, Any]:
    """Webhook delivery from a subscription stream to a local async receiver on loopback
    (``runtime.dev.receiver``, in its own process, verifying every signature): events/s and
    p50/p99 publish-to-2xx latency, one event per request and in batches of 100, with
    ``max_in_flight`` requests in flight. Also the CPU each side spent per event (the
    dispatcher's event-loop thread, the receiver's process) and what the receiver saw: requests
    whose signature did not verify, and events received more than once."""
    import asyncio
    import shutil
    import threading

    from runtime.config.store import ConfigStore
    from runtime.dev.receiver import Receiver
    from runtime.dev.redis_server import EmbeddedRedis, free_port
    from runtime.redis_client import connect
    from runtime.subscriptions.dispatch import Dispatcher, new_event_loop
    from runtime.subscriptions.outbox import Outbox, Publication
    from runtime.subscriptions.topics import TopicRouter
    from runtime.subscriptions.webhooks import generate_secret

    class Latencies:
        def __init__(self) -> None:
            self.seen: list[float] = []
            self.count = 0

        def delivered(self, destination: str, count: int, latency_s: float) -> None:
            self.seen += [latency_s] * count
            self.count += count

        def retried(self, destination: str) -> None: ...
        def dead_lettered(self, destination: str, count: int) -> None: ...
        def lag(self, destination: str, oldest_undelivered_s: float) -> None: ...

    def thread_cpu_s(thread: threading.Thread) -> float:
        assert thread.ident is not None
        return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))

    shutil.rmtree(state_dir, ignore_errors=True)
    secret = generate_secret()
    server = EmbeddedRedis(state_dir / "redis", free_port()).start()
    receiver = Receiver([secret]).start()
    results: dict[str, Any] = {"events": events, "max_in_flight": max_in_flight, "receiver": "runtime.dev.receiver"}
    try:
        client = connect(server.url)
        for batch in batches:
            mode = "single" if batch == 1 else f"batch_{batch}"
            name = f"bench-{mode.replace('_', '-')}"
            endpoint = {"url": f"{receiver.url}/{name}", "internal": True, "secrets": [secret]}
            doc = {"kind": "subscription", "name": name, "topics": [f"business.{name}"], "mode": "webhook"}
            webhook = {**endpoint, "batch": batch, "max_in_flight": max_in_flight}
            ConfigStore(client).put({**doc, "webhook": webhook})
            metrics = Latencies()
            dispatcher = Dispatcher(server.url, horizon_s=3600, metrics=metrics)
            loop, stop = new_event_loop(), asyncio.Event()
            thread = threading.Thread(target=loop.run_until_complete, args=(dispatcher.run(stop),), daemon=True)
            thread.start()
            time.sleep(1.0)  # the dispatcher has picked the subscription up
            _, docs = ConfigStore(client).snapshot()
            router, outbox = TopicRouter.from_docs(docs), Outbox(client, horizon_s=3600, maxlen=1_000_000)
            topic = f"business.{name}"
            seen_before = receiver.stats()
            cpu_before = thread_cpu_s(thread)
            started = time.perf_counter()
            for start in range(0, events, 5000):
                pubs = [
                    Publication(f"{name}-{i}", topic, {"specversion": "1.0", "id": f"{name}-{i}", "source": "bench",
                                                       "type": topic, "subject": f"c{i % 1000}", "data": {"n": i}})
                    for i in range(start, min(start + 5000, events))
                ]  # fmt: skip
                outbox.publish(pubs, router)
            deadline = time.monotonic() + 300
            while metrics.count < events and time.monotonic() < deadline:
                time.sleep(0.01)
            seconds = time.perf_counter() - started
            dispatcher_cpu = thread_cpu_s(thread) - cpu_before
            seen = receiver.stats()
            loop.call_soon_threadsafe(stop.set)
            thread.join(timeout=10)
            ordered = sorted(metrics.seen)
            received = seen["events"] - seen_before["events"]
            results[mode] = {
                "delivered": metrics.count,
                "events_per_s": round(metrics.count / seconds),
                "p50_latency_ms": round(ordered[len(ordered) // 2] * 1000, 1) if ordered else None,
                "p99_latency_ms": round(ordered[int(len(ordered) * 0.99)] * 1000, 1) if ordered else None,
                "dispatcher_cpu_us_per_event": round(dispatcher_cpu / max(metrics.count, 1) * 1e6, 1),
                "receiver_cpu_us_per_event": round((seen["cpu_s"] - seen_before["cpu_s"]) / max(received, 1) * 1e6, 1),
                "receiver_requests": seen["requests"] - seen_before["requests"],
                "receiver_invalid_signatures": seen["invalid"] - seen_before["invalid"],
                "receiver_duplicate_ids": (seen["requests"] - seen_before["requests"])
                - (seen["unique_ids"] - seen_before["unique_ids"]),
            }
    finally:
        receiver.stop()
        server.stop()
    return results


def bench_contact(state_dir: Path, requests: int = 50_000) -> dict[str, Any]:
    """The contact policy on a local redis-server (3 caps, 3 campaigns, de-dup 7 days).

    - ``ledger``: ``requests`` requests for ~requests/3 customers (each: a group of two competing
      requests, then one more an hour later) decided through ``Ledger.decide`` in batches of 500
      customer groups: decisions/s and p50/p99 latency of one batch (read + decide + commit).
    - ``stage``: a smaller run through a PolicyStage (arbitration window 0) in a thread: one
      request published into the policy stream every millisecond or so, and p50/p99 latency from
      the publish to the decision appearing on a ``decisions`` subscription (read in another
      thread of the same process).
    """
    import random
    import shutil
    import threading
    from collections import Counter

    import orjson

    from runtime import keys
    from runtime.config.store import ConfigStore
    from runtime.dev.redis_server import EmbeddedRedis, free_port
    from runtime.policy.decide import ContactRequest, PolicyRules
    from runtime.policy.ledger import Ledger
    from runtime.policy.models import Campaign, Policy
    from runtime.policy.stage import PolicyStage
    from runtime.redis_client import connect
    from runtime.subscriptions.outbox import Outbox, Publication
    from runtime.subscriptions.pull import SubscriptionReader
    from runtime.subscriptions.topics import TopicRouter

    policy = {
        "kind": "policy",
        "name": "bench",
        "arbitration_window": "0s",
        "dedupe_days": 7,
        "caps": [
            {"name": "daily", "window": "1d", "max": 2},
            {"name": "weekly", "window": "7d", "max": 3, "max_by_tier": {"gold": 5}},
            {"name": "sms-weekly", "scope": "channel", "channel": "sms", "window": "7d", "max": 1},
        ],
    }
    campaigns = [
        {"kind": "campaign", "name": "bench-card", "priority": 80, "product": "card", "dedupe_days": 7},
        {"kind": "campaign", "name": "bench-loan", "priority": 80, "product": "loan", "dedupe_days": 15},
        {"kind": "campaign", "name": "bench-news", "priority": 20, "dedupe_days": 3},
    ]
    rules = PolicyRules.combine([Policy.model_validate(policy)], [Campaign.model_validate(c) for c in campaigns])
    names, channels, templates = [c["name"] for c in campaigns], ["sms", "email", "push"], ["t1", "t2", "t3", "t4"]
    rnd = random.Random(7)

    def request(i: int, customer: str, requested_at: int = 0) -> ContactRequest:
        return ContactRequest(
            f"{customer}-{i}",
            customer,
            "notify",
            rnd.choice(channels),
            rnd.choice(templates),
            rnd.choice(names),
            "bench-rule",
            requested_at=requested_at,
        )

    def quantile(values: list[float], q: float) -> float | None:
        ordered = sorted(values)
        return round(ordered[min(int(len(ordered) * q), len(ordered) - 1)] * 1000, 2) if ordered else None

    shutil.rmtree(state_dir, ignore_errors=True)
    server = EmbeddedRedis(state_dir / "redis", free_port()).start()
    results: dict[str, Any] = {"requests": requests}
    try:
        client = connect(server.url)
        customers = [f"c{i}" for i in range(max(requests // 3, 1))]
        pipe = client.pipeline(transaction=False)
        for i, customer in enumerate(customers):
            scores = orjson.dumps({"card": i % 7 / 7, "loan": i % 5 / 5})
            tier = '"gold"' if i % 10 == 0 else '"basic"'
            pipe.hset(keys.profile(customer), mapping={"tier": tier, "scores": scores})
        pipe.execute()
        start_ms = int(time.time() * 1000)
        rounds = [  # (time, groups): two competing requests per customer, then one more an hour later
            (start_ms, [[request(0, c), request(1, c)] for c in customers]),
            (start_ms + 3_600_000, [[request(2, c)] for c in customers]),
        ]
        ledger = Ledger(client, horizon_s=86_400)
        latencies: list[float] = []
        outcomes: Counter[str] = Counter()
        decisions: list[Any] = []
        redis_cpu, started, cpu = _redis_cpu_s(client), time.perf_counter(), time.thread_time()
        for now_ms, groups in rounds:
            for first in range(0, len(groups), 500):
                batch_started = time.perf_counter()
                decisions += ledger.decide(groups[first : first + 500], rules, now_ms)
                latencies.append(time.perf_counter() - batch_started)
        seconds, cpu = time.perf_counter() - started, time.thread_time() - cpu
        redis_cpu = _redis_cpu_s(client) - redis_cpu
        decided = len(decisions)
        for d in decisions:  # counted after the clock stops: sent, lost_arbitration, suppressed:cap, ...
            outcomes[":".join(d.outcome.split(":")[: 1 if d.outcome.startswith("lost") else 2])] += 1
        results["ledger"] = {
            "customers": len(customers),
            "decisions": decided,
            "batches": len(latencies),
            "decisions_per_s": round(decided / seconds),
            # what bounds it: this process and Redis work at once (pipelined), each this many s
            "client_cpu_s": round(cpu, 3),
            "redis_cpu_s": round(redis_cpu, 3),
            "batch_p50_ms": quantile(latencies, 0.5),
            "batch_p99_ms": quantile(latencies, 0.99),
            "outcomes": dict(outcomes),
        }

        # -- through the stage: publish -> decision on a subscription ------------------------
        store = ConfigStore(client)
        for doc in [*campaigns, policy, {"kind": "subscription", "name": "bench-dec", "topics": ["decisions"]}]:
            store.put(doc)
        _, docs = store.snapshot()
        router, outbox = TopicRouter.from_docs(docs, policy_shards=1), Outbox(client, horizon_s=3600, maxlen=1_000_000)
        stage = PolicyStage(server.url, [0], total_shards=1, horizon_s=3600, maxlen=1_000_000)
        stop = threading.Event()
        errors: list[BaseException] = []

        def run_stage() -> None:
            try:
                while not stop.is_set():
                    stage.step(block_ms=50)
            except BaseException as e:  # reported, not swallowed
                errors.append(e)

        stage_requests = min(2_000, requests)
        published: dict[str, float] = {}
        seen: dict[str, float] = {}

        def read_decisions() -> None:
            reader = SubscriptionReader(connect(server.url), visibility_timeout_ms=600_000)
            while len(seen) < stage_requests and not stop.is_set():
                pulled = reader.pull("bench-dec", max_events=1000, wait_ms=100)["events"]
                at = time.perf_counter()
                for event in pulled:
                    seen.setdefault(event["data"]["request"], at)
                if pulled:
                    reader.ack("bench-dec", ack_ids=[e["ack_id"] for e in pulled])

        threads = [
            threading.Thread(target=run_stage, daemon=True),
            threading.Thread(target=read_decisions, daemon=True),
        ]
        for thread in threads:
            thread.start()
        stage_started = time.perf_counter()
        for i in range(stage_requests):
            customer = f"s{i % max(stage_requests // 3, 1)}"
            rid = f"stage-{i}"
            notify = {"channel": rnd.choice(channels), "template": rnd.choice(templates), "campaign": rnd.choice(names)}
            event = {
                "specversion": "1.0",
                "id": rid,
                "source": "esp/bench",
                "type": "notifications.sms",
                "subject": customer,
                "data": {"rule": "bench-rule", "notify": notify},
            }
            published[rid] = time.perf_counter()
            outbox.publish([Publication(rid, "notifications.sms", event)], router)
            time.sleep(0.001)
        deadline = time.monotonic() + 60
        while len(seen) < stage_requests and time.monotonic() < deadline and not errors:
            time.sleep(0.01)
        stage_seconds = time.perf_counter() - stage_started
        stop.set()
        for thread in threads:
            thread.join(timeout=5)
        if errors:
            raise errors[0]
        waits = [seen[i] - published[i] for i in seen if i in published]
        results["stage"] = {
            "requests": stage_requests,
            "decided": len(waits),
            "requests_per_s": round(stage_requests / stage_seconds),
            "p50_ms": quantile(waits, 0.5),
            "p99_ms": quantile(waits, 0.99),
            "max_ms": quantile(waits, 1.0),
            "outcomes": dict(stage.totals),
        }
    finally:
        server.stop()
    return results


def _profile_data(ids: list[str]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Tags (20), segments (1-2) and scores (5 products) per customer, as the batch jobs make them."""
    vocabulary = [f"circle:behaviour:tag-{k}" for k in range(200)]
    products = ["card", "loan", "fund", "insurance", "deposit", "fx", "gold", "mortgage"]
    tags, segments, scores = {}, {}, {}
    for c in ids:
        i = int(c[1:])
        tags[c] = [vocabulary[(i * 7 + k * 13) % 200] for k in range(20)]
        segments[c] = ["frequent-flyer", "wealth"][: 1 + i % 2]
        scores[c] = {products[(i + k) % 8]: round((i * k % 97) / 97, 2) for k in range(5)}
    return tags, segments, scores


def _empty(client: Any, wait_s: float = 60.0) -> None:
    """Flush Redis and wait (up to ``wait_s``) for an append-only-file rewrite in progress to end."""
    client.flushall()
    deadline = time.monotonic() + wait_s
    while client.info("persistence").get("aof_rewrite_in_progress"):
        if time.monotonic() > deadline:
            raise TimeoutError(f"Redis still rewrites its append-only file after {wait_s:.0f} s")
        time.sleep(0.05)


def _write_profiles_part(task: tuple[str, str, list[str], int, Any, Any]) -> float:
    """One part of ``esp job sync``'s write, in a process of its own: what ``_sync_part`` does
    once the part's tags, segments and scores are computed. Waits for ``start``; returns its CPU
    seconds."""
    from runtime.batch.sync import profiles
    from runtime.events.profiles import BatchProfiles
    from runtime.redis_client import connect

    url, version, ids, batch, ready, start = task
    tags, segments, scores = _profile_data(ids)
    client = connect(url)
    store = BatchProfiles(client, batch=batch)
    ready.wait()
    start.wait()
    used = time.process_time()
    for first in range(0, len(ids), batch):
        chunk = ids[first : first + batch]
        store.write(version, profiles(chunk, tags, segments, scores))
    client.close()
    return time.process_time() - used


def _redis_cpu_s(client: Any) -> float:
    """CPU seconds redis-server has used so far (every thread), from ``INFO cpu``."""
    used = client.info("cpu")
    return float(used["used_cpu_user"] + used["used_cpu_sys"])


def bench_profile_sync(state_dir: Path, customers: int = 100_000, batch: int = 5000) -> dict[str, Any]:
    """Profile writes on a local redis-server, customers/s:

    - ``job_write``: what ``esp job sync`` does once the tags, segments and scores are computed,
      as it runs on this machine: one part per core, each in a process of its own (the job's
      Ray tasks), writing :func:`runtime.batch.sync.profiles` through ``BatchProfiles.write`` in
      chunks of ``batch`` customers (20 tags, 2 segments and 5 scores each), then ``switch``.
    - ``batch_write``: the same in one process (one part alone).
    - ``put_many``: the same profiles through ``ProfileStore.put_many`` (the API's bulk write),
      ``batch`` customers per call.

    Each with the CPU it took per customer in the writing processes (every thread) and in
    redis-server: on a shared machine the rate moves with the load, the CPU per customer much less.
    """
    import multiprocessing
    import shutil
    from concurrent.futures import ProcessPoolExecutor

    from runtime.batch.sync import profiles
    from runtime.dev.redis_server import EmbeddedRedis, free_port
    from runtime.events.profiles import BatchProfiles, ProfileStore
    from runtime.redis_client import connect

    ids = [f"c{i}" for i in range(customers)]
    tags, segments, scores = _profile_data(ids)
    shutil.rmtree(state_dir, ignore_errors=True)
    server = EmbeddedRedis(state_dir / "redis", free_port()).start()
    results: dict[str, Any] = {"customers": customers, "batch": batch}
    try:
        client = connect(server.url)

        def cpu() -> tuple[float, float, float]:  # wall, this process (every thread), redis-server
            return time.perf_counter(), time.process_time(), _redis_cpu_s(client)

        def figures(before: tuple[float, float, float]) -> dict[str, Any]:
            after = cpu()
            seconds, client_s, redis_s = (a - b for a, b in zip(after, before, strict=True))
            return {
                "customers_per_s": round(customers / seconds),
                "seconds": round(seconds, 2),
                "client_cpu_us_per_customer": round(client_s / customers * 1e6, 2),
                "redis_cpu_us_per_customer": round(redis_s / customers * 1e6, 2),
            }

        parts = max(1, min(os.cpu_count() or 1, 4))
        context = multiprocessing.get_context("spawn")  # no fork of a process that may hold threads
        with context.Manager() as manager, ProcessPoolExecutor(parts, mp_context=context) as pool:
            ready, start = manager.Barrier(parts + 1), manager.Event()
            tasks = [(server.url, "job", ids[p::parts], batch, ready, start) for p in range(parts)]
            running = [pool.submit(_write_profiles_part, task) for task in tasks]
            ready.wait()  # every part has its data and its connection
            before = cpu()
            start.set()
            used = sum(f.result() for f in running)
            store = BatchProfiles(client, batch=batch)
            store.switch("job")
            figures_job = figures(before)
        client_us = used / customers * 1e6
        results["job_write"] = {**figures_job, "parts": parts, "client_cpu_us_per_customer": round(client_us, 2)}
        sample = ProfileStore(client).get_many(ids[:3] + ids[-3:])  # every part's customers are there
        results["job_checked"] = all(sample[c]["tags"] == sorted(set(tags[c])) for c in sample)
        _empty(client)  # each measure on an empty Redis
        store = BatchProfiles(client, batch=batch)
        before = cpu()
        for first in range(0, customers, batch):
            chunk = ids[first : first + batch]
            store.write("bench", profiles(chunk, tags, segments, scores))
        store.switch("bench")
        results["batch_write"] = figures(before)
        own = ProfileStore(client)
        rows = profiles(ids, tags, segments, scores)
        before = cpu()
        for start in range(0, customers, batch):
            own.put_many({c: rows[c] for c in ids[start : start + batch]})
        results["put_many"] = figures(before)
        sample = own.get_many(ids[:3])  # what a reader sees: the batch version under the own attributes
        results["checked"] = all(sample[c]["tags"] == sorted(set(tags[c])) for c in ids[:3])
    finally:
        server.stop()
    return results


def bench_appends(
    state_dir: Path, ids_per_day: int = 100_000, past_days: int = 7, request_events: int = 10_000, partitions: int = 64
) -> dict[str, Any]:
    """The append path's Redis CPU per new event id (its idempotency check and the log entry),
    on a local redis-server with the default 7-day horizon, 10,000-event requests over 64
    partitions: on the platform's first day (``fresh``: the end-to-end rows' case), and on the
    day after ``past_days`` days of ``ids_per_day`` new ids each (``full_horizon``: a platform in
    its steady state, where every past day is looked at for every id). Both also check that
    ``ids_per_day // 5`` ids of an earlier day come back as duplicates, all of them."""
    import shutil

    from runtime.dev.redis_server import EmbeddedRedis, free_port
    from runtime.log.partition_log import DAY_MS, PartitionLog
    from runtime.log.partitioning import partition_of
    from runtime.redis_client import connect

    def requests(day: int, count: int, now_ms: int) -> list[dict[int, list[Event]]]:
        out = []
        for first in range(0, count, request_events):
            by_partition: dict[int, list[Event]] = {}
            for k in range(first, min(first + request_events, count)):
                customer = f"c{k % 10_000}"
                event = Event(f"d{day}-e{k}", "bench.a", now_ms, customer, customer, "bench", {}, now_ms)
                by_partition.setdefault(partition_of(customer, partitions), []).append(event)
            out.append(by_partition)
        return out

    results: dict[str, Any] = {"ids_per_day": ids_per_day, "request_events": request_events}
    for case, days_before in (("fresh", 0), ("full_horizon", past_days)):
        shutil.rmtree(state_dir, ignore_errors=True)
        server = EmbeddedRedis(state_dir / "redis", free_port()).start()
        try:
            client = connect(server.url)
            log = PartitionLog(client, horizon_s=past_days * 86_400)
            today_ms = int(time.time() * 1000) // DAY_MS * DAY_MS + 3_600_000  # all on one arrival day
            for back in range(days_before, 0, -1):
                for by_partition in requests(-back, ids_per_day, today_ms - back * DAY_MS):
                    log.append(by_partition, now_ms=today_ms - back * DAY_MS, config_version=1)
            todays = requests(0, ids_per_day, today_ms)
            redis_before, started = _redis_cpu_s(client), time.perf_counter()
            for by_partition in todays:
                log.append(by_partition, now_ms=today_ms, config_version=1)
            seconds = time.perf_counter() - started
            redis_s = _redis_cpu_s(client) - redis_before
            again = requests(-days_before, ids_per_day // 5, today_ms)  # a day's ids sent again
            found = sum(len(a.duplicates) for by in again for a in log.append(by, now_ms=today_ms, config_version=1))
            results[case] = {
                "past_days_full": days_before,
                "redis_cpu_us_per_id": round(redis_s / ids_per_day * 1e6, 2),
                "ids_per_s": round(ids_per_day / seconds),
                "duplicates_found": found,
                "duplicates_sent": ids_per_day // 5,
            }
        finally:
            server.stop()
    return results


def main(argv: Sequence[str] | None = None) -> None:
    """The sequence workload alone (``esp bench`` runs it among the others): JSON and a
    markdown table, printed and written to ``--out``."""
    import argparse

    from runtime.dev.local_ray import use_local_ray

    parser = argparse.ArgumentParser(prog="python -m runtime.dev.bench", description=main.__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=10_000)
    parser.add_argument("--senders", default="1,4", help="comma-separated sender counts, one run each")
    parser.add_argument("--rescale", default="", help="comma-separated actor counts to rescale to during each run")
    parser.add_argument("--nodes", default="", help="comma-separated local cluster sizes: one run on each instead")
    parser.add_argument("--kill-node", action="store_true", help="with --nodes: also a run that kills a worker node")
    parser.add_argument("--redis-cluster", type=int, default=0, help="on a local Redis Cluster of this many masters")
    parser.add_argument("--out", type=Path, default=Path(".esp/bench"))
    args = parser.parse_args(argv)
    use_local_ray()  # before Ray is imported: its in-process Ray listens on loopback only
    if args.nodes:
        runs = [(int(n), False) for n in args.nodes.split(",")] + ([(3, True)] if args.kill_node else [])
        nodes = [
            bench_sequence_nodes(
                args.out / "state" / f"nodes-{n}{'-kill' if kill else ''}",
                nodes=n,
                kill_node=kill,
                events=args.events,
                customers=args.customers,
                batch_size=args.batch_size,
            )
            for n, kill in runs
        ]
        _write(args.out, "bench-nodes", nodes, nodes_markdown(nodes))
        return
    result = bench_sequence_senders(
        args.out / "state" / "sequence",
        events=args.events,
        customers=args.customers,
        batch_size=args.batch_size,
        senders=[int(n) for n in args.senders.split(",")],
        rescale=[int(n) for n in args.rescale.split(",") if n],
        redis_cluster=args.redis_cluster,
    )
    _write(args.out, "bench-sequence", result, sequence_markdown(result))


def _write(out: Path, name: str, result: Any, table: str) -> None:
    """``result`` as JSON and ``table`` as markdown in ``out``, both printed."""
    import json

    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2))
    stem.with_suffix(".md").write_text(table)
    print(json.dumps(result, indent=2))
    print(table)
    print(f"written to {stem}.json and {stem}.md")


if __name__ == "__main__":
    main()
