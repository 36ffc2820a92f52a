"""Invariants 1-3 when a whole worker node dies (issue 15, item 3): a 3-node Ray cluster on this
machine (``ray.cluster_utils.Cluster``: a head and two workers, loopback, small CPU shares), ESP
on it with its partition actors spread over the nodes and Serve's HTTP proxy on the head; while
events stream in over HTTP, every process of a worker node that hosts partition actors (its
raylet and workers) is killed. The actors it hosted come back on the surviving nodes, recover
from their checkpoints, and every acknowledged event still yields exactly one business event.
The recovery time is measured and written to the chaos report with the other figures."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
import ray
from ray._private import ray_constants
from ray.cluster_utils import Cluster

from runtime import keys
from runtime.dev.local_ray import local_cluster
from runtime.redis_client import connect
from tests.e2e.conftest import init_session_ray, make_platform, stop_platform
from tests.e2e.test_chaos import REPORT, check_exactly_once, configure_chaos, stream_in_background, wait_processed

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

NODE_CPUS = 2  # logical CPUs per node: 4 partition actors at 0.5 each still fit on the two survivors
ACTORS = 4
PACE_S = 0.4  # between batches: the stream (~30 s) outlasts the node's failure detection and recovery;
# once the lost partitions have caught up the rest is sent unpaced


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> Iterator[Cluster]:
    """Head + 2 workers on loopback (``runtime.dev.local_ray.local_cluster``). The session's
    local Ray (if a test before this one started it) is shut down for the duration and started
    again afterwards; the single-machine setting the cluster makes is undone after it."""
    session_ray = ray.is_initialized()
    if session_ray:
        ray.shutdown()
    # what local_cluster changes, recorded here so that undo() restores it
    monkeypatch.delenv(ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR, raising=False)
    monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", ray_constants.ENABLE_RAY_CLUSTER)
    with local_cluster(3, cpus_per_node=NODE_CPUS) as made:
        yield made
    monkeypatch.undo()
    if session_ray:
        init_session_ray()


@pytest.fixture
def node_platform(cluster: Cluster, tmp_path) -> Iterator:
    platform = make_platform(tmp_path, proxy_location="HeadOnly", actors=ACTORS)
    configure_chaos(platform)
    yield platform
    stop_platform(platform)


def placement(platform) -> list[dict]:
    """Each partition actor's status (node, pid, partitions, offsets, counters), by index."""
    return ray.get([actor.status.remote() for actor in platform.actors], timeout=60)


def caught_up(platform, statuses: list[dict], partitions: set[int]) -> bool:
    """Whether the actors have read every entry logged so far to ``partitions``."""
    offsets = {int(p): str(o) for st in statuses for p, o in st["offsets"].items()}
    client = connect(platform.settings.effective_redis_url())
    pipe = client.pipeline(transaction=False)
    for p in sorted(partitions):
        pipe.xrevrange(keys.log_stream(p), count=1)
    return all(
        not last or offsets.get(p) == last[0][0].decode()
        for p, last in zip(sorted(partitions), pipe.execute(), strict=True)
    )


def test_losing_a_worker_node_loses_and_doubles_nothing(cluster, node_platform):
    platform = node_platform
    started = time.monotonic()
    statuses = placement(platform)
    nodes_used = {st["node_id"] for st in statuses}
    workers = {node.node_id: node for node in cluster.worker_nodes}
    assert len(nodes_used) >= 2, f"the partition actors were not spread: all on {nodes_used}"
    victim_id = next(n for n in workers if n in nodes_used)  # a worker, never the head (Serve's proxy)
    victims = [st["index"] for st in statuses if st["node_id"] == victim_id]
    lost = {p for i in victims for p in statuses[i]["partitions"]}
    old_pids = {i: statuses[i]["pid"] for i in victims}

    thread, result = stream_in_background(platform, "nl", pace_s=PACE_S)
    wait_processed(platform, 2000)
    assert thread.is_alive(), "the stream ended before the node was killed"
    killed_at = time.monotonic()
    cluster.remove_node(workers[victim_id], allow_graceful=False)  # SIGKILL: raylet, workers, agents
    dead_after = time.monotonic() - killed_at

    declared_dead_at = back_at = first_output_at = caught_up_at = None
    deadline = killed_at + 120
    while caught_up_at is None:  # poll the actors the node hosted until they are back and caught up
        assert time.monotonic() < deadline, f"partitions {sorted(lost)} not recovered within 120 s"
        if declared_dead_at is None and not any(n["Alive"] for n in ray.nodes() if n["NodeID"] == victim_id):
            declared_dead_at = time.monotonic()  # the GCS has noticed (its health checks of the raylet)
        try:
            now = ray.get([platform.actors[i].status.remote() for i in victims], timeout=5)
        except ray.exceptions.RayError:  # restarting: calls fail until the actor is back
            time.sleep(0.1)
            continue
        if any(st["pid"] == old_pids[st["index"]] for st in now):
            time.sleep(0.1)
            continue
        back_at = back_at or time.monotonic()  # constructed on a surviving node
        if first_output_at is None and any(st["published"] > 0 for st in now):
            first_output_at = time.monotonic()  # recovered, and published its first output since
        if all(st["recovered"] for st in now) and caught_up(platform, now, lost):
            caught_up_at = time.monotonic()  # every entry logged to its partitions so far is processed
        time.sleep(0.1)
    stream_running_when_caught_up = thread.is_alive()
    # the failure and the recovery happened mid-stream: the rest of it (still sent over HTTP and
    # processed by the recovered actors, and checked exactly once below) needs no pacing
    result["unpaced"].set()
    thread.join(timeout=300)
    moved = placement(platform)
    figures = {
        "nodes": 1 + len(workers),
        "partition_actors": ACTORS,
        "actors_on_killed_node": len(victims),
        "partitions_on_killed_node": len(lost),
        "node_processes_killed_s": round(dead_after, 2),
        "node_declared_dead_s": round(declared_dead_at - killed_at, 2) if declared_dead_at else None,
        "recovery_actors_back_s": round(back_at - killed_at, 2),
        "recovery_first_output_s": round(first_output_at - killed_at, 2) if first_output_at else None,
        "recovery_backlog_done_s": round(caught_up_at - killed_at, 2),
        "stream_running_when_caught_up": stream_running_when_caught_up,
        "moved_to_nodes": sorted({moved[i]["node_id"][:12] for i in victims}),
    }
    try:
        check_exactly_once(platform, result["report"], "nl", "kill_worker_node", started)
    finally:  # the figures next to the counts check_exactly_once wrote, even when it failed
        report = json.loads(REPORT.read_text()) if REPORT.exists() else {}
        report["kill_worker_node"] = {**report.get("kill_worker_node", {}), **figures}
        REPORT.write_text(json.dumps(report, indent=2))
    survivors = {cluster.head_node.node_id, *workers} - {victim_id}
    assert all(moved[i]["node_id"] in survivors for i in victims)
