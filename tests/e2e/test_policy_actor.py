"""The contact-policy stage in its own actor (``esp-policy-<i>``, made by ``actors.factory``):
SIGKILLed by PID mid-stream, Ray restarts it, and the new one decides what its predecessor
read and did not acknowledge. Every notify request gets exactly one decision."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from typing import Any

import pytest
import ray

from actors.factory import NAMESPACE, actor_name
from runtime import keys
from runtime.dev.client import EspClient
from runtime.redis_client import connect
from tests.e2e.helpers import event, read_exactly

pytestmark = pytest.mark.slow

POLICY = actor_name("policy", 0)
EVENTS = 400
HALF = EVENTS // 2


def policy_status(*, other_than: int | None = None, timeout_s: float = 60.0) -> dict[str, Any]:
    """The policy actor's status, waiting (bounded) for one from a process other than ``other_than``."""
    deadline = time.monotonic() + timeout_s
    last: object = None
    while time.monotonic() < deadline:
        try:
            status = ray.get(ray.get_actor(POLICY, namespace=NAMESPACE).status.remote(), timeout=10)
            if status["pid"] != other_than:
                return status
            last = f"still pid {status['pid']}"
        except Exception as exc:  # restarting: the call fails or times out until it is back
            last = exc
        time.sleep(0.2)
    raise AssertionError(f"{POLICY} was not back within {timeout_s}s: {last}")


def policy_settled(platform: Any) -> bool:
    """Every policy request read and acknowledged: no decision can still come."""
    client = connect(platform.settings.effective_redis_url())
    for shard in range(platform.settings.policy_shards):
        for group in client.xinfo_groups(keys.policy_requests(shard)):
            if group["pending"] or group["lag"]:
                return False
    return True


def test_a_killed_policy_actor_comes_back_and_decides_each_request_once(platform, client):
    with EspClient(platform.base_url) as admin:
        admin.put_config({"kind": "subscription", "name": "pa-decided", "topics": ["decisions"]})
        rule = {"kind": "rule", "name": "pa-offer", "when": {"event": "pa.tick"}}
        admin.put_config({**rule, "then": [{"notify": {"channel": "pa-sms", "template": "offer"}}]})
    first = policy_status()
    assert sorted(first["policy_shards"]) == list(range(platform.settings.policy_shards))  # one instance: all

    sent = [event(i, "pa.tick", prefix="pa", customer=f"pa-c{i}") for i in range(EVENTS)]
    assert client.send(sent[:HALF]).accepted == HALF
    os.kill(first["pid"], signal.SIGKILL)
    assert client.send(sent[HALF:]).accepted == HALF
    reborn = policy_status(other_than=first["pid"])

    decisions = read_exactly(platform, client, "pa-decided", EVENTS)
    deadline = time.monotonic() + 60
    while not policy_settled(platform) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert policy_settled(platform)
    decisions += client.pull("pa-decided", max_events=5000)["events"]  # none may come after settling
    per_customer = Counter(d["subject"] for d in decisions)
    assert per_customer == Counter(f"pa-c{i}" for i in range(EVENTS))  # each request decided once
    assert {d["data"]["outcome"] for d in decisions} == {"sent"}
    assert reborn["pid"] != first["pid"]
