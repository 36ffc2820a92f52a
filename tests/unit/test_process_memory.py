"""The platform's memory over a process tree: which processes belong to it, what kind each
is, and how one sample sums."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from runtime.dev.process_memory import MemorySampler, ProcessMemory, descendants, kind_of, sample_tree, tree_sum


def test_descendants_follow_parents_to_any_depth_and_nothing_else():
    parents = {1: 0, 10: 1, 11: 10, 12: 11, 13: 10, 20: 1, 21: 20}
    assert descendants(10, parents) == {10, 11, 12, 13}
    assert descendants(12, parents) == {12}
    assert descendants(99, parents) == {99}


def test_kinds_from_command_lines():
    assert kind_of("/venv/lib/ray/core/src/ray/gcs/gcs_server --redis_address=") == "ray_gcs"
    assert kind_of("/venv/lib/ray/core/src/ray/raylet/raylet --raylet_socket_name=") == "ray_raylet"
    assert kind_of("ray::ServeReplica:esp:Api") == "serve_replica"
    assert kind_of("ray::ProxyActor") == "serve_proxy"
    assert kind_of("ray::ServeController") == "serve_controller"
    assert kind_of("ray::IDLE") == "ray_idle_worker"
    assert kind_of("ray::PartitionActor.step") == "esp_actor"
    assert kind_of("/usr/bin/redis-server 127.0.0.1:6379") == "redis"
    assert kind_of("python /venv/lib/ray/dashboard/agent.py --node-ip-address") == "ray_dashboard_agent"
    assert kind_of("ray::DashboardAgent") == "ray_dashboard_agent"
    assert kind_of("ray::RuntimeEnvAgent") == "ray_runtime_env_agent"
    assert kind_of("redis-aof-rewrite 127.0.0.1:6379") == "redis_fork"
    assert kind_of("bash") == "other"


def test_one_sample_sums_by_kind_and_in_total():
    summed = tree_sum(
        [
            ProcessMemory(1, "redis", 100, 60),
            ProcessMemory(2, "esp_actor", 300, 200),
            ProcessMemory(3, "esp_actor", 500, None),  # no smaps_rollup for this one
        ]
    )
    assert (summed["rss_bytes"], summed["pss_bytes"]) == (900, 260)
    assert summed["kinds"]["esp_actor"] == {"processes": 2, "rss_bytes": 800, "pss_bytes": 200}
    assert summed["kinds"]["redis"] == {"processes": 1, "rss_bytes": 100, "pss_bytes": 60}
    assert tree_sum([ProcessMemory(1, "other", 5, None)])["pss_bytes"] is None
    assert tree_sum([]) == {"rss_bytes": 0, "pss_bytes": None, "kinds": {}}


# A driver holding 100 MiB that starts a child holding 64 MiB: the root of the sampled tree is
# this driver, not pytest (whose tree also holds whatever Ray or Redis other tests started).
DRIVER = """
import subprocess, sys, time
held = bytearray(100 * 2**20)
child = subprocess.Popen([sys.executable, "-c", "b = bytearray(64 * 2**20); import time; time.sleep(30)"])
time.sleep(30)
child.kill()
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads /proc")
def test_the_sampler_sees_a_child_and_leaves_the_driver_out_of_the_total():
    driver = subprocess.Popen([sys.executable, "-c", DRIVER])
    try:
        deadline = time.monotonic() + 10
        while not any(p.pid != driver.pid and p.rss > 64 * 2**20 for p in sample_tree(driver.pid)):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        with MemorySampler(driver.pid, interval_s=0.05) as sampler:
            time.sleep(0.2)
        result = sampler.result()
    finally:
        for process in sample_tree(driver.pid):
            if process.pid != driver.pid:
                os.kill(process.pid, 9)
        driver.kill()
        driver.wait()
    assert result["samples"] >= 2
    assert result["driver_peak_rss_bytes"] > 100 * 2**20
    assert 64 * 2**20 < result["peak_rss_bytes"] < 64 * 2**20 + 40 * 2**20  # the child alone, not the driver
    assert result["at_rss_peak"]["other"]["processes"] == 1
