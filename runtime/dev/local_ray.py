"""How ESP runs a Ray of its own on this machine (``esp up`` without ``--address``, ``esp demo``,
``esp bench``): every port on loopback, and for the head ``esp up`` starts, a token kept in
the state directory. Imports no Ray at module level: the environment must be set before Ray is
imported, because Ray reads it once."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from runtime.security.private_files import secret_file

RAY_TOKEN_FILE = "ray.token"


def loopback_environment() -> dict[str, str]:
    """Ray binds its GCS, raylet, agents, client server and metrics export to the node address,
    and turns an explicit ``--node-ip-address=127.0.0.1`` into the machine's routable address.
    With clusters disabled (Ray's single-machine mode, the default on macOS and Windows) the node
    address is loopback, so nothing Ray opens is reachable from another host."""
    return {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


# The environment of Ray's processes (read once, when each starts), for a platform that serves
# many small requests on few cores:
# - Ray's dashboard agent walks every process of its node with psutil for the dashboard's node
#   and worker figures, by default every 5 s: a burst of half a core for a few hundred ms, which
#   on a small machine delays every event in flight then (it was the largest part of the ack ->
#   subscriber p99 at 10 k events/s). Once a minute keeps those figures, and the spike out of
#   p99. ESP's own metrics do not depend on it.
# - Ray Serve's throughput settings: the replica runs the API on its own event loop instead of a
#   second one in another thread, the proxy routes on its main loop, and the proxy reaches the
#   replica over gRPC instead of Ray actor calls. Serve's proxy and replica then spend ~14 % less
#   CPU per request (9.96 against 11.64 ms per 100-event request on the 2-core benchmark machine),
#   which is what bounds small requests (docs/benchmarks.md, sixth pass).
RAY_PROCESS_ENVIRONMENT = {
    "REPORTER_UPDATE_INTERVAL_MS": "60000",
    "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
    "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0",
    "RAY_SERVE_USE_GRPC_BY_DEFAULT": "1",
}


def head_environment(state_dir: Path) -> dict[str, str]:
    """Loopback, plus Ray's token authentication with the token in ``<state_dir>/ray.token``
    (0600): the head checks it, and every process of ours that connects sends it."""
    token_path = (state_dir / RAY_TOKEN_FILE).resolve()
    return {**loopback_environment(), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token_path)}


def use_local_ray(state_dir: Path | None = None) -> None:
    """Set this process up for a local Ray: loopback only; with ``state_dir``, the token of the
    head started there (created if missing). Explicit settings in the environment win."""
    environment = head_environment(state_dir) if state_dir is not None else loopback_environment()
    environment.update(RAY_PROCESS_ENVIRONMENT)
    for name, value in environment.items():
        os.environ.setdefault(name, value)
    if state_dir is not None:
        secret_file(Path(os.environ["RAY_AUTH_TOKEN_PATH"]))


# Ray's workers for ESP's actors and Serve start when those are placed; none waits idle. Ray
# otherwise starts one idle worker per CPU when the first driver connects (~200 MB RSS each).
SYSTEM_CONFIG: dict[str, Any] = {"enable_worker_prestart": False, "prestart_worker_first_driver": False}


def head_start_options(object_store_mb: int) -> list[str]:
    """``ray start --head`` options that size a local Ray for ESP: a small object store, no
    prestarted idle workers, no autoscaler monitor (a fixed local cluster has nothing to
    scale) and no log monitor (ESP reads no worker output in its drivers: ``log_to_driver``
    is off; each worker's log stays in Ray's session directory)."""
    import json

    return [
        f"--object-store-memory={object_store_mb * 1024 * 1024}",
        f"--system-config={json.dumps(SYSTEM_CONFIG)}",
        "--no-monitor",
        "--include-log-monitor=false",
    ]


@contextmanager
def lean_head() -> Iterator[None]:
    """Within it, ``ray.init(address="local")`` starts its head without the autoscaler monitor
    and the log monitor (what ``head_start_options`` does for ``ray start``); ``ray.init`` has
    no parameter for either, so its node parameters get these defaults for the call."""
    import ray._private.parameter as parameter

    original = parameter.RayParams

    class LeanParams(original):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("no_monitor", True)
            kwargs.setdefault("include_log_monitor", False)
            super().__init__(*args, **kwargs)

    parameter.RayParams = LeanParams
    try:
        yield
    finally:
        parameter.RayParams = original


def worker_node_command(gcs_address: str, *, num_cpus: int, temp_dir: Path, metrics_export_port: int) -> list[str]:
    """The command that adds a worker node to the local head at ``gcs_address`` (``esp up
    --local-nodes N``). Not ``ray start --address``: in Ray's single-machine mode (set above, so
    every address is loopback) that command refuses to start a worker node, and with the mode off
    it turns ``127.0.0.1`` (the head's address, and the worker's ``--node-ip-address``) into the
    machine's routable address. So this starts the node's processes the way ``ray start`` does
    underneath (``ray._private.node.Node``, as ``ray.cluster_utils.Cluster`` does too) with
    the node address pinned to 127.0.0.1; it writes the node's id and its processes' PIDs as JSON
    to the file given with ``--out``."""
    import sys

    return [
        sys.executable, "-m", "runtime.dev.local_ray",
        "--address", gcs_address,
        "--num-cpus", str(num_cpus),
        "--temp-dir", str(temp_dir),
        "--metrics-export-port", str(metrics_export_port),
    ]  # fmt: skip


def start_worker_node(gcs_address: str, *, num_cpus: int, temp_dir: str, metrics_export_port: int) -> dict:
    """Start a worker node's raylet and agents (they outlive this process), on loopback, with
    ports picked free; returns its node id and PIDs."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # loopback for every process it starts
    import ray._private.node
    import ray._private.parameter
    from ray._private import ray_constants

    params = ray._private.parameter.RayParams(
        node_ip_address="127.0.0.1",
        node_name=f"esp-worker-{metrics_export_port}",
        gcs_address=gcs_address,
        num_cpus=num_cpus,
        num_gpus=0,
        temp_dir=temp_dir,
        node_manager_port=0,  # every port picked free: several nodes share this machine's loopback
        object_manager_port=0,
        dashboard_agent_listen_port=None,
        metrics_export_port=metrics_export_port,
        include_log_monitor=False,  # one log monitor per machine: the head's
    )
    node = ray._private.node.Node(params, head=False, shutdown_at_exit=False, spawn_reaper=False)
    processes = {kind: [info.process.pid for info in infos] for kind, infos in node.all_processes.items()}
    raylet = processes.get(ray_constants.PROCESS_TYPE_RAYLET, [None])[0]
    pids = sorted(pid for group in processes.values() for pid in group)
    return {
        "node_id": node.node_id,
        "address": node.node_ip_address,
        "session_name": node.session_name,  # the cluster's: every process of it carries it on its command line
        "raylet_pid": raylet,
        "pids": pids,
    }


if __name__ == "__main__":
    import argparse
    import json

    parser = argparse.ArgumentParser(description="Add a loopback worker node to a local Ray head.")
    parser.add_argument("--address", required=True)
    parser.add_argument("--num-cpus", type=int, required=True)
    parser.add_argument("--temp-dir", required=True)
    parser.add_argument("--metrics-export-port", type=int, required=True)
    parser.add_argument("--out", required=True, help="Where to write the node's id and PIDs (JSON).")
    args = parser.parse_args()
    started = start_worker_node(
        args.address, num_cpus=args.num_cpus, temp_dir=args.temp_dir, metrics_export_port=args.metrics_export_port
    )
    Path(args.out).write_text(json.dumps(started))


@contextmanager
def local_cluster(nodes: int, *, cpus_per_node: int = 2) -> Iterator[Any]:
    """A Ray cluster of ``nodes`` nodes on this machine (a head and workers on loopback, each
    with ``cpus_per_node`` logical CPUs: the same physical cores, so it shows the overhead of
    spreading, not a speed-up), this process connected to it; shut down on exit."""
    import shutil
    import tempfile

    import ray
    from ray._private import ray_constants
    from ray.cluster_utils import Cluster

    from actors.factory import NAMESPACE
    from actors.worker_setup import runtime_env

    os.environ.update({**loopback_environment(), **RAY_PROCESS_ENVIRONMENT})  # for the nodes' processes
    ray_constants.ENABLE_RAY_CLUSTER = False  # and for this one, which imported Ray already
    temp_dir = tempfile.mkdtemp(prefix="espbn")  # short: Ray's socket paths live under it
    args = {
        "num_cpus": cpus_per_node,
        "node_ip_address": "127.0.0.1",
        "object_store_memory": 200 * 1024 * 1024,
        "include_dashboard": False,
        "temp_dir": temp_dir,
    }
    cluster = Cluster(initialize_head=True, head_node_args=args)
    try:
        for _ in range(nodes - 1):
            cluster.add_node(**args)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, namespace=NAMESPACE, log_to_driver=False, runtime_env=runtime_env())
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)
