"""Issue 15, check (c), chaos: on a local 3-master Redis Cluster, a partition actor and then a
Redis master are killed mid-stream; every acknowledged event still yields exactly one output.
The figures go to the same test report as the single-Redis ones (``cluster_*``)."""

from __future__ import annotations

import os
import signal
import time

import pytest
import ray

from tests.e2e.conftest import make_platform, stop_platform
from tests.e2e.test_chaos import (
    check_exactly_once,
    configure_chaos,
    stream_in_background,
    wait_processed,
    wait_restarted,
)

pytestmark = pytest.mark.slow

MASTERS = 3


@pytest.fixture(scope="module")
def chaos_platform(ray_session, tmp_path_factory):
    """One platform for both cases (each streams its own events; the first reads all of its outputs)."""
    platform = make_platform(tmp_path_factory.mktemp("esp-cluster-chaos"), redis_cluster=MASTERS)
    configure_chaos(platform)
    yield platform
    stop_platform(platform)


def test_on_a_cluster_killing_a_partition_actor_loses_and_doubles_nothing(chaos_platform):
    platform = chaos_platform
    started = time.monotonic()
    thread, result = stream_in_background(platform, "cpa")
    wait_processed(platform, 500)
    assert thread.is_alive()
    victim = platform.actors[0]
    pid = ray.get(victim.status.remote())["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_restarted(victim, pid)
    result["unpaced"].set()  # the crash landed mid-stream: the rest needs no pacing
    thread.join(timeout=300)
    check_exactly_once(platform, result["report"], "cpa", "cluster_kill_partition_actor", started)


def test_on_a_cluster_a_master_crash_and_aof_restart_loses_and_doubles_nothing(chaos_platform):
    """One of the three masters dies mid-stream (its slots unavailable: requests touching them
    stall or fail and are retried, by the cluster client inside ESP or by the sender; actors
    reading them retry) and comes back from its AOF. Whether the sender itself sees a 503
    depends on how long the cluster client's own retries last, so the test does not require it:
    it requires that the outage fell inside the stream and that nothing was lost or doubled."""
    platform = chaos_platform
    started = time.monotonic()
    thread, result = stream_in_background(platform, "cmr")
    wait_processed(platform, 500)
    assert thread.is_alive()
    master = platform.redis_cluster.nodes[1]
    master.kill()
    time.sleep(2.0)
    assert thread.is_alive()  # the outage fell inside the stream, not after it
    master.start()
    result["unpaced"].set()  # the outage fell inside the stream: the rest needs no pacing
    thread.join(timeout=300)
    check_exactly_once(platform, result["report"], "cmr", "cluster_kill_master_restart_on_aof", started)
