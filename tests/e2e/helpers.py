"""Small helpers for end-to-end tests: event factories and reading a subscription."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import httpx
import ray

from runtime import keys
from runtime.dev.client import EspClient
from runtime.redis_client import connect

T0 = 1_790_000_000_000


def event(i: int, kind: str, *, customer: str | None = None, prefix: str = "e", **data: Any) -> dict[str, Any]:
    return {"id": f"{prefix}{i}", "type": kind, "time": T0 + i, "subject": customer or f"c{i % 97}", "data": data}


def every_event_rule(name: str, kind: str) -> dict[str, Any]:
    """A rule that fires once per event of ``kind``: outputs map one to one onto inputs."""
    return {"kind": "rule", "name": name, "when": {"event": kind}, "then": [{"emit": name}]}


def read_exactly(
    platform: Any, client: EspClient, subscription: str, expected: int, *, timeout_s: float = 90.0
) -> list[dict[str, Any]]:
    """Pull and ack until ``expected`` events arrived, then until the platform is idle (every log
    entry processed) and the subscription drained (nothing unread, nothing unacknowledged), so
    that an extra or duplicate output would be among the events returned, however slow the
    machine."""
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = client.pull(subscription, max_events=5000, wait_s=0.5)["events"]
        if got:
            events += got
            client.ack(subscription, [e["ack_id"] for e in got])
        elif len(events) >= expected and processed_everything(platform) and drained(client, subscription):
            return events
    return events


def processed_everything(platform: Any) -> bool:
    """Whether the partition actors have processed every entry of every partition's log (their
    offsets are the streams' last ids), so no more outputs can come from what was accepted."""
    try:
        statuses = ray.get([actor.status.remote() for actor in platform.actors], timeout=30)
    except ray.exceptions.RayError:  # an actor restarting after a crash: not idle yet
        return False
    offsets = {int(p): str(o) for status in statuses for p, o in status["offsets"].items()}
    client = connect(platform.settings.effective_redis_url())
    pipe = client.pipeline(transaction=False)
    for partition in range(platform.settings.partitions):
        pipe.xrevrange(keys.log_stream(partition), count=1)
    for partition, last in enumerate(pipe.execute()):
        if last and offsets.get(partition) != last[0][0].decode():
            return False
    return True


def drained(client: EspClient, subscription: str) -> bool:
    status = client.request("GET", f"/v1/subscriptions/{subscription}")
    return status["pending"] == 0 and status["lag"] == 0


class AsAdmin:
    """httpx's request functions (``get``, ``put``, ...) sending the platform's admin token,
    which ``make_platform`` puts in ``ESP_TOKEN``."""

    def __getattr__(self, method: str) -> Callable[..., httpx.Response]:
        send = getattr(httpx, method)

        def call(url: str, **kwargs: Any) -> httpx.Response:
            headers = {"Authorization": f"Bearer {os.environ['ESP_TOKEN']}", **kwargs.pop("headers", {})}
            return send(url, headers=headers, **kwargs)

        return call


as_admin = AsAdmin()


def admin_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {os.environ['ESP_TOKEN']}"}


def wait_settled(http: httpx.Client, subscription: str, *, timeout_s: float = 60.0) -> dict[str, Any]:
    """Wait until a subscription has nothing unread and nothing unacknowledged: from then on no
    delivery, retry or duplicate can come (short of a crash), so checking "nothing more" after
    it cannot pass just because the machine was slow. Returns the final status."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = http.get(f"/v1/subscriptions/{subscription}").json()
        if status["pending"] == 0 and status["lag"] == 0:
            return status
        if time.monotonic() >= deadline:
            raise AssertionError(f"subscription {subscription!r} not settled within {timeout_s}s: {status}")
        time.sleep(0.1)


def wait_channel_settled(platform: Any, channel: str, *, timeout_s: float = 60.0) -> None:
    """Like :func:`wait_settled` for a channel (whose status route has no backlog figures): the
    partition actors have processed everything and the channel's stream is read and acked."""
    client = connect(platform.settings.effective_redis_url())
    stream = keys.channel_stream(channel)

    def settled() -> bool:
        groups = client.xinfo_groups(stream)
        group = next(g for g in groups if g["name"] in (keys.SUBSCRIPTION_GROUP, keys.SUBSCRIPTION_GROUP.encode()))
        return int(group["pending"]) == 0 and int(group.get("lag") or 0) == 0

    deadline = time.monotonic() + timeout_s
    while not (processed_everything(platform) and settled()):
        assert time.monotonic() < deadline, f"channel {channel!r} not settled within {timeout_s}s"
        time.sleep(0.1)
