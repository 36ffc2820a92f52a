"""Invariants 1-3 under crashes: while events stream in, kill a partition actor (by PID), or
kill redis-server and restart it on its AOF. Afterwards every acknowledged event has produced
exactly one business event: none missing, none doubled."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import ray

from runtime.dev.client import EspClient, SendReport
from runtime.dev.process_memory import process_parents
from tests.e2e.conftest import SOURCE_KEY, make_platform, stop_platform
from tests.e2e.helpers import event, every_event_rule, read_exactly

pytestmark = pytest.mark.slow

EVENTS = 30_000
BATCH = 500
REPORT = Path(".esp/test-reports/chaos.json")


def configure_chaos(platform) -> None:
    """The chaos tests' source, a rule firing on every event, and the subscriptions they count:
    the rule's outputs, and every event re-published as accepted (an atomic subscription)."""
    with EspClient(platform.base_url) as admin:
        admin.put_config({"kind": "source", "name": "e2e", "api_key": SOURCE_KEY})
        admin.put_config(every_event_rule("chaos-every", "chaos.tick"))
        admin.put_config({"kind": "subscription", "name": "chaos", "topics": ["business.*"]})
        admin.put_config({"kind": "subscription", "name": "chaos-raw", "topics": ["atomic.chaos.tick"]})


@pytest.fixture
def chaos_platform(ray_session, tmp_path):
    platform = make_platform(tmp_path)
    configure_chaos(platform)
    yield platform
    stop_platform(platform)


def stream_in_background(platform, prefix: str, pace_s: float = 0.12) -> tuple[threading.Thread, dict]:
    """Send EVENTS events in batches of BATCH, paced so the stream spans several seconds.
    Setting ``result["unpaced"]`` (an Event) drops the pacing for the batches still to send
    (and ends a pause under way): once the fault and the recovery have been observed mid-stream,
    the rest need not be spread out."""
    unpaced = threading.Event()
    result: dict = {"unpaced": unpaced}

    def run() -> None:
        events = [event(i, "chaos.tick", prefix=prefix, customer=f"c{i % 500}") for i in range(EVENTS)]
        total = SendReport()
        with EspClient(platform.base_url, key=SOURCE_KEY, timeout_s=30) as client:
            for start in range(0, EVENTS, BATCH):
                report = client.send(events[start : start + BATCH], batch_size=BATCH)
                total.accepted += report.accepted
                total.duplicates += report.duplicates
                total.rejected += report.rejected
                total.retries += report.retries
                unpaced.wait(pace_s)  # returns at once when unpaced
        result["report"] = total

    thread = threading.Thread(target=run)
    thread.start()
    return thread, result


def wait_processed(platform, at_least: int, timeout_s: float = 60.0) -> None:
    """Until the partition actors have processed ``at_least`` events: a crash is then certain
    to land in the middle of the work, however slowly the stream started."""
    deadline = time.monotonic() + timeout_s
    done = 0
    while done < at_least:
        assert time.monotonic() < deadline, f"{done} events processed after {timeout_s}s"
        time.sleep(0.1)
        done = sum(s["events"] for s in ray.get([a.status.remote() for a in platform.actors], timeout=30))


def wait_restarted(actor, old_pid: int, timeout_s: float = 60.0) -> None:
    """Until Ray has restarted a killed actor and it answers again (from a new process)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if ray.get(actor.status.remote(), timeout=10)["pid"] != old_pid:
                return
        except ray.exceptions.RayError:  # restarting: calls fail until it is back
            pass
        time.sleep(0.2)
    raise AssertionError(f"the actor killed as pid {old_pid} was not back within {timeout_s}s")


def own_processes(pattern: str) -> list[int]:
    """PIDs matching ``pattern`` among the workers of this session's Ray (children of its raylet),
    never another Ray's on the same machine."""
    raylets = {info.process.pid for info in ray._private.worker._global_node.all_processes["raylet"]}
    parents = process_parents()
    found = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout.split()
    return [pid for pid in map(int, found) if parents.get(pid) in raylets]


def check_exactly_once(platform, report, prefix: str, name: str, started: float) -> None:
    with EspClient(platform.base_url) as client:
        received = read_exactly(platform, client, "chaos", report.accepted, timeout_s=180)
        republished = [e["id"] for e in read_exactly(platform, client, "chaos-raw", report.accepted, timeout_s=180)]
    ids = [e["id"] for e in received]
    triggering = [e["data"]["events"][0]["id"] for e in received]
    expected = {f"{prefix}{i}" for i in range(EVENTS)}
    figures = {
        "acked_events": report.accepted,
        "duplicates_at_ingest": report.duplicates,
        "business_events": len(received),
        "duplicate_business_events": len(ids) - len(set(ids)),
        "missing": len(expected - set(triggering)),
        "republished_events": len(republished),
        "duplicate_republished_events": len(republished) - len(set(republished)),
        "missing_republished": len(expected - set(republished)),
        "client_retries": report.retries,
        "seconds": round(time.monotonic() - started, 1),
    }
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    existing = json.loads(REPORT.read_text()) if REPORT.exists() else {}
    REPORT.write_text(json.dumps({**existing, name: figures}, indent=2))
    assert report.accepted + report.duplicates == EVENTS and not report.rejected
    assert figures["duplicate_business_events"] == 0
    assert figures["missing"] == 0
    assert sorted(triggering) == sorted(expected)
    assert sorted(republished) == sorted(expected)  # the atomic subscription: each event once too


def test_killing_a_partition_actor_loses_and_doubles_nothing(chaos_platform):
    platform = chaos_platform
    started = time.monotonic()
    thread, result = stream_in_background(platform, "pa")
    wait_processed(platform, BATCH)
    thread_was_running_at_kill = thread.is_alive()
    victim = platform.actors[0]
    pid = ray.get(victim.status.remote())["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_restarted(victim, pid)  # the second crash comes once the first one has been recovered from
    pid2 = ray.get(platform.actors[1].status.remote())["pid"]
    os.kill(pid2, signal.SIGKILL)
    thread_was_running_at_second_kill = thread.is_alive()
    result["unpaced"].set()  # both crashes landed mid-stream: the rest needs no pacing
    thread.join(timeout=300)
    restarted = ray.get(victim.status.remote(), timeout=60)
    assert restarted["pid"] != pid  # Ray restarted it, and it recovered from its checkpoints
    assert thread_was_running_at_kill and thread_was_running_at_second_kill
    check_exactly_once(platform, result["report"], "pa", "kill_partition_actors", started)


def test_redis_crash_and_aof_restart_loses_and_doubles_nothing(chaos_platform):
    platform = chaos_platform
    started = time.monotonic()
    thread, result = stream_in_background(platform, "rd")
    wait_processed(platform, BATCH)
    assert thread.is_alive()
    platform.redis_server.kill()
    time.sleep(2.0)
    platform.redis_server.start()
    result["unpaced"].set()  # the outage fell inside the stream: the rest needs no pacing
    thread.join(timeout=300)
    assert result["report"].retries > 0  # the client really saw the outage and retried
    check_exactly_once(platform, result["report"], "rd", "kill_redis_restart_on_aof", started)


def test_killing_the_serve_replica_loses_and_doubles_nothing(chaos_platform):
    """Requests in flight when the replica dies are answered 5xx or cut; the client retries the
    whole batch, and idempotency keys make the retry harmless."""
    platform = chaos_platform
    started = time.monotonic()
    thread, result = stream_in_background(platform, "sr")
    wait_processed(platform, BATCH)
    assert thread.is_alive()
    found = own_processes("ServeReplica:esp:api")  # not another session's on this machine
    assert found, "no Serve replica process found"
    for pid in found:
        os.kill(pid, signal.SIGKILL)
    result["unpaced"].set()  # killed mid-stream: the rest needs no pacing
    thread.join(timeout=300)
    check_exactly_once(platform, result["report"], "sr", "kill_serve_replica", started)
