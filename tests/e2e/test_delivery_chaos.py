"""Webhook delivery under crashes: while events stream in and their business events are being
POSTed to a receiver, SIGKILL the dispatcher actor (by PID) twice. Ray restarts it and the new
one sends what its predecessor left unacknowledged again, with the same ``webhook-id``.
Afterwards every business event has arrived at least once, exactly once after de-duplication
on ``webhook-id``, and nothing went to the dead letters."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import httpx
import pytest
import ray

from actors.platform import NAMESPACE
from runtime.dev.client import EspClient, SendReport
from runtime.subscriptions.webhooks import generate_secret
from tests.e2e.conftest import SOURCE_KEY
from tests.e2e.helpers import admin_headers, event, every_event_rule, wait_settled
from tests.support.receiver import Receiver, Request
from tests.unit.test_webhooks import spec_verify

pytestmark = pytest.mark.slow

EVENTS = 5_000
BATCH = 250
PACE_S = 0.25  # between batches: the stream spans about 5 s, so the kills land while it runs
RECEIVER_DELAY_S = 0.005
KILL_EVERY = 600  # events the receiver gets between kills
REPORT = Path(".esp/test-reports/delivery-chaos.json")
DISPATCHER = "esp-dispatcher-0"


def slow_ok(n: int, request: Request) -> tuple[int, dict[str, str], float]:
    return 200, {}, RECEIVER_DELAY_S


def whole(request: Request) -> bool:
    """A request cut off by the kill reaches the receiver with a short body. It was never
    answered, so it is no delivery: the restarted dispatcher sends its events again."""
    return len(request.body) == int(request.headers.get("content-length", -1))


def events_of(request: Request) -> list[dict[str, Any]]:
    body = request.json()
    return body if isinstance(body, list) else [body]


class Tally:
    """What the receiver got: requests, and the business events in the whole ones."""

    def __init__(self, requests: list[Request]) -> None:
        self.requests = requests
        self.complete = [r for r in requests if whole(r)]
        self.by_webhook_id: dict[str, list[Request]] = defaultdict(list)
        for request in self.complete:
            self.by_webhook_id[request.headers["webhook-id"]].append(request)
        # after de-duplication on webhook-id: one request per id
        self.deduped = Counter(e["id"] for rs in self.by_webhook_id.values() for e in events_of(rs[0]))
        self.raw = Counter(e["id"] for r in self.complete for e in events_of(r))
        self.triggering = {
            e["id"]: e["data"]["events"][0]["id"] for rs in self.by_webhook_id.values() for e in events_of(rs[0])
        }


def received_events(receiver: Receiver) -> int:
    """Distinct business events among the requests that arrived whole."""
    return len({e["id"] for r in list(receiver.requests) if whole(r) for e in events_of(r)})


def stream_in_background(base_url: str, prefix: str, kind: str) -> tuple[threading.Thread, dict[str, Any]]:
    result: dict[str, Any] = {}

    def run() -> None:
        events = [event(i, kind, prefix=prefix, customer=f"c{i % 500}") for i in range(EVENTS)]
        total = SendReport()
        try:
            with EspClient(base_url, key=SOURCE_KEY, timeout_s=30) as client:
                for start in range(0, EVENTS, BATCH):
                    report = client.send(events[start : start + BATCH], batch_size=BATCH)
                    total.accepted += report.accepted
                    total.duplicates += report.duplicates
                    total.rejected += report.rejected
                    total.retries += report.retries
                    time.sleep(PACE_S)
        finally:
            result["report"] = total

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, result


def dispatcher_pid(timeout_s: float = 60.0, *, other_than: int | None = None) -> int:
    """The dispatcher actor's PID, waiting (bounded) for Ray to restart it after a kill."""
    deadline = time.monotonic() + timeout_s
    last: object = None
    while time.monotonic() < deadline:
        try:
            handle = ray.get_actor(DISPATCHER, namespace=NAMESPACE)
            pid = int(ray.get(handle.status.remote(), timeout=10)["pid"])
            if pid != other_than:
                return pid
            last = f"still pid {pid}"
        except Exception as exc:  # restarting: the call fails or times out until it is back
            last = exc
        time.sleep(0.2)
    raise AssertionError(f"the dispatcher was not back within {timeout_s}s: {last}")


def deliver_through_kills(platform: Any, *, key: str, batch: int) -> tuple[dict[str, Any], Tally, set[str], str]:
    """Stream EVENTS events whose every-event rule feeds a webhook subscription (``batch``
    events per request) and SIGKILL the dispatcher twice mid-delivery. Writes the figures to
    REPORT under ``key``; returns them, the tally, the expected triggering ids and the secret."""
    started = time.monotonic()
    secret = generate_secret()
    name, rule, prefix, kind = f"{key}-hook", f"{key}-every", f"{key}-", f"{key}.tick"
    kills: list[dict[str, Any]] = []
    with (
        Receiver(slow_ok) as receiver,
        httpx.Client(base_url=platform.base_url, timeout=30, headers=admin_headers()) as http,
    ):
        subscription = {
            "kind": "subscription",
            "name": name,
            "topics": [f"business.{rule}"],
            "mode": "webhook",
            "webhook": {
                "url": receiver.url,
                "internal": True,
                "secrets": [secret],
                "max_in_flight": 8,
                "batch": batch,
                # long enough that no event can exhaust it while the dispatcher is down
                "retry": ["100ms", "200ms", "500ms", "1s", "2s", "5s", "10s", "20s"],
            },
        }
        assert http.put(f"/v1/config/subscription/{name}", json=subscription).status_code == 200
        assert http.put(f"/v1/config/rule/{rule}", json=every_event_rule(rule, kind)).status_code == 200
        pid = dispatcher_pid()

        thread, result = stream_in_background(platform.base_url, prefix, kind)
        for _ in range(2):
            threshold = received_events(receiver) + KILL_EVERY
            receiver.wait_for(
                lambda seen, t=threshold: len({e["id"] for r in seen if whole(r) for e in events_of(r)}) >= t,
                timeout_s=60,
            )
            delivered_before = received_events(receiver)
            os.kill(pid, signal.SIGKILL)
            kills.append({"pid": pid, "events_delivered_before": delivered_before, "streaming": thread.is_alive()})
            pid = dispatcher_pid(other_than=pid)  # Ray restarted it

        thread.join(timeout=120)
        assert not thread.is_alive(), "the event stream did not finish"
        report: SendReport = result["report"]

        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and received_events(receiver) < EVENTS:
            time.sleep(0.2)
        final = wait_settled(http, name, timeout_s=60)  # all acked: late redeliveries are in by now
        dead = http.get(f"/v1/subscriptions/{name}/deadletters", params={"limit": 100}).json()
        tally = Tally(list(receiver.requests))

    expected = {f"{prefix}{i}" for i in range(EVENTS)}
    arrived = set(tally.triggering.values())
    figures = {
        "batch": batch,
        "acked_events": report.accepted,
        "duplicates_at_ingest": report.duplicates,
        "client_retries": report.retries,
        "expected_outputs": len(expected),
        "received_requests": len(tally.requests),
        "torn_requests": len(tally.requests) - len(tally.complete),
        "unique_webhook_ids": len(tally.by_webhook_id),
        "duplicate_requests_before_dedupe": len(tally.complete) - len(tally.by_webhook_id),
        "received_events": sum(tally.raw.values()),
        "unique_events": len(tally.raw),
        "duplicate_events_before_dedupe": sum(tally.raw.values()) - len(tally.raw),
        "duplicate_events_after_dedupe": sum(tally.deduped.values()) - len(tally.deduped),
        "lost": len(expected - arrived),
        "unexpected": len(arrived - expected),
        "dead_letters": dead["total"],
        "pending_at_end": final["pending"],
        "disabled": final["disabled"],
        "dispatcher_kills": len(kills),
        "kills": kills,
        "receiver_delay_ms": RECEIVER_DELAY_S * 1000,
        "seconds": round(time.monotonic() - started, 1),
    }
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    existing = json.loads(REPORT.read_text()) if REPORT.exists() else {}
    REPORT.write_text(json.dumps({**existing, key: figures}, indent=2))

    assert (report.accepted, report.duplicates, report.rejected) == (EVENTS, 0, [])
    assert len(kills) == 2 and all(k["events_delivered_before"] < EVENTS for k in kills), kills
    return figures, tally, expected, secret


def test_killing_the_dispatcher_mid_delivery_loses_nothing(platform):
    figures, tally, expected, secret = deliver_through_kills(platform, key="dchaos", batch=1)
    assert figures["lost"] == 0, f"{figures['lost']} business events never arrived"
    assert figures["unexpected"] == 0
    assert figures["unique_webhook_ids"] == len(expected)  # exactly once after de-duplication
    assert figures["duplicate_events_after_dedupe"] == 0
    assert all(len({r.body for r in rs}) == 1 for rs in tally.by_webhook_id.values()), (
        "a webhook-id must always carry the same event"
    )
    assert figures["dead_letters"] == 0, "nothing may be dead-lettered"
    assert figures["pending_at_end"] == 0 and not figures["disabled"]
    sample = tally.complete[:: max(1, len(tally.complete) // 500)]  # signatures still verify after restarts
    assert all(spec_verify(secret, r.headers, r.body) for r in sample)


def test_batched_delivery_through_kills_loses_nothing(platform):
    """The same with 10 events per request. Redelivery is allowed (the figures count the raw
    duplicates, before and after de-duplication on webhook-id), but after de-duplication on the
    business event id every acked event arrived exactly once, and an id always names one event."""
    figures, tally, expected, _ = deliver_through_kills(platform, key="bchaos", batch=10)
    assert figures["lost"] == 0 and figures["unexpected"] == 0
    assert set(tally.raw) == {e for e in tally.deduped} and len(tally.deduped) == len(expected)
    triggering_of = triggering_by_event_id(tally)
    assert all(len(t) == 1 for t in triggering_of.values()), "one business event id carried different events"
    once = Counter(t for ts in triggering_of.values() for t in ts)
    assert set(once) == expected and set(once.values()) == {1}, "an acked event arrived under two business ids"
    assert figures["dead_letters"] == 0 and figures["pending_at_end"] == 0


def triggering_by_event_id(tally: Tally) -> dict[str, set[str]]:
    """Business event id -> the triggering event ids it arrived with, over every whole request."""
    seen: dict[str, set[str]] = defaultdict(set)
    for request in tally.complete:
        for e in events_of(request):
            seen[e["id"]].add(e["data"]["events"][0]["id"])
    return seen


class RedeliveredUnderNewIds(AssertionError):
    """Events were sent again under webhook-ids they were never sent with."""


def test_a_batch_redelivered_after_a_crash_keeps_its_webhook_id(platform):
    """batch 3: one event goes out alone, then three together (one customer, so they are
    published in one step); both requests hang at the receiver while the dispatcher is killed.
    The restarted dispatcher must send them again under the webhook-ids they had."""

    def hang_twice(n: int, request: Request) -> tuple[int, dict[str, str], float]:
        return 200, {}, (15.0 if n <= 2 else 0.0)

    name, rule, kind = "rebatch-hook", "rebatch-every", "rebatch.tick"
    with Receiver(hang_twice) as receiver, EspClient(platform.base_url, key=SOURCE_KEY) as client:
        subscription = {
            "kind": "subscription",
            "name": name,
            "topics": [f"business.{rule}"],
            "mode": "webhook",
            "webhook": {"url": receiver.url, "internal": True, "batch": 3, "max_in_flight": 4, "timeout": "60s"},
        }
        client.put_config(subscription)
        client.put_config(every_event_rule(rule, kind))
        pid = dispatcher_pid()
        assert client.send([event(0, kind, prefix="rb", customer="c-rebatch")]).accepted == 1
        receiver.wait_for(lambda seen: len(seen) >= 1, timeout_s=30)
        assert client.send([event(i, kind, prefix="rb", customer="c-rebatch") for i in (1, 2, 3)]).accepted == 3
        first = receiver.wait_for(lambda seen: len(seen) >= 2, timeout_s=30)
        sent = {r.headers["webhook-id"]: sorted(e["data"]["events"][0]["id"] for e in events_of(r)) for r in first}
        assert sorted(sent.values()) == [["rb0"], ["rb1", "rb2", "rb3"]], sent  # the two chunks in flight
        os.kill(pid, signal.SIGKILL)
        dispatcher_pid(other_than=pid)
        seen = receiver.wait_for(lambda seen: sum(len(events_of(r)) for r in seen[2:]) >= 4, timeout_s=60)
        again = {r.headers["webhook-id"]: sorted(e["data"]["events"][0]["id"] for e in events_of(r)) for r in seen[2:]}

    assert sorted(e for ids in again.values() for e in ids) == ["rb0", "rb1", "rb2", "rb3"]
    if not set(again) <= set(sent):
        raise RedeliveredUnderNewIds(f"first sent as {sorted(sent.values())}, again as {sorted(again.values())}")
