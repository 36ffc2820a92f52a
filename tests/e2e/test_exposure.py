"""Least exposure of a local ``esp up``: every port it opens (Serve, Redis, the gateway, Ray's
GCS, raylet, agents, client server, metrics export and workers) listens on loopback only, and
its secrets stay in private files of the state directory, never in its output.

Runs the real ``esp up`` (ports and state directory of its own) and stops what it started by
pid: ``esp down`` would run ``ray stop``, which stops every Ray on the machine."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

from runtime.dev.local_ray import RAY_PROCESS_ENVIRONMENT
from runtime.dev.redis_server import free_port
from tests.support.sockets import descendants, is_loopback, kill_all, listening, subreaper

PORTS = ("HTTP_PORT", "REDIS_PORT", "GATEWAY_PORT", "METRICS_EXPORT_PORT", "RAY_PORT", "RAY_CLIENT_SERVER_PORT")
SECRET_FILES = ("platform.json", "ray.token", "redis/password", "redis/redis.conf")


def esp_up_environment(state_dir: Path, ports: dict[str, int]) -> dict[str, str]:
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "ESP_"))}
    settings = {"STATE_DIR": str(state_dir), "PARTITIONS": "4", "ACTORS": "1", **{k: str(v) for k, v in ports.items()}}
    return {**inherited, **{f"ESP_{name}": value for name, value in settings.items()}}


def sockets_once_all_listen(started: set[int], ports: set[int], timeout_s: float = 30.0) -> list[tuple[int, str, int]]:
    """The listening sockets, once every expected port is among them (the gateway and Ray's
    agents may come up just after 'esp up' returns)."""
    deadline = time.monotonic() + timeout_s
    while True:
        sockets = listening(started)
        if ports <= {port for _, _, port in sockets} or time.monotonic() > deadline:
            return sockets
        time.sleep(0.5)


def serve_replica_grpc(address: str, port: int, command: str) -> bool:
    """The one known exception: a Serve replica's inter-deployment gRPC server, which this Ray
    binds to ``[::]:0`` with no setting to change it. Ray's token interceptor guards it (every
    call needs the cluster token in <state>/ray.token)."""
    return address == "::" and command.startswith("ray::ServeReplica")


def command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:120]
    except OSError:
        return "?"


def test_esp_up_listens_on_loopback_only_and_keeps_its_secrets_private(tmp_path: Path):
    state_dir = tmp_path / "state"
    ports = {name: free_port() for name in PORTS}
    esp = str(Path(sys.executable).with_name("esp"))
    with subreaper():
        before = descendants(os.getpid())
        started: set[int] = set()
        try:
            with (tmp_path / "out").open("w") as out, (tmp_path / "err").open("w") as err:  # daemons keep pipes open
                up = subprocess.run(
                    [esp, "up"], env=esp_up_environment(state_dir, ports), stdout=out, stderr=err, timeout=100
                )
            output, errors = (tmp_path / "out").read_text(), (tmp_path / "err").read_text()
            assert up.returncode == 0, output[-2000:] + errors[-3000:]
            started = descendants(os.getpid(), skip=before)
            sockets = sockets_once_all_listen(started, set(ports.values()))
            commands = {pid: command(pid) for pid, _, _ in sockets}
            # the raylet starts the node's dashboard agent with its environment (the agent's own
            # /proc environ is overwritten by its process title)
            everything = descendants(os.getpid(), skip=before)
            raylets = [environment(pid) for pid in everything if "raylet/raylet" in command(pid)]
        finally:
            kill_all(started | descendants(os.getpid(), skip=before))

    exposed = [(address, port, commands[pid]) for pid, address, port in sockets if not is_loopback(address)]
    assert [entry for entry in exposed if not serve_replica_grpc(*entry)] == [], f"beyond loopback: {exposed}"
    assert len(exposed) <= 1  # one API replica: at most its inter-deployment gRPC server
    bound = {port: address for _, address, port in sockets}
    assert {name: bound.get(port) for name, port in ports.items()} == {name: "127.0.0.1" for name in ports}
    assert len(sockets) > len(ports)  # Ray's raylet, agents and workers were seen too

    # the Ray it started is ESP's: its dashboard agents walk the processes once a minute, not every 5 s,
    # and Serve runs with its throughput settings
    assert raylets
    for env in raylets:
        assert {name: env.get(name) for name in RAY_PROCESS_ENVIRONMENT} == {
            "REPORTER_UPDATE_INTERVAL_MS": "60000",
            "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
            "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0",
            "RAY_SERVE_USE_GRPC_BY_DEFAULT": "1",
        }

    password = (state_dir / "redis" / "password").read_text().strip()
    assert password not in output + errors
    assert f"redis://:***@127.0.0.1:{ports['REDIS_PORT']}/0" in output
    assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700
    assert {name: stat.S_IMODE((state_dir / name).stat().st_mode) for name in SECRET_FILES} == {
        name: 0o600 for name in SECRET_FILES
    }
    holding = {str(p.relative_to(state_dir)) for p in state_dir.rglob("*") if p.is_file() and password in _text(p)}
    assert holding == {"redis/password", "redis/redis.conf"}


def environment(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    return dict(item.split("=", 1) for item in raw.decode("utf-8", "replace").split("\0") if "=" in item)


def _text(path: Path) -> str:
    return path.read_bytes().decode("utf-8", "replace")
