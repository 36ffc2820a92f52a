"""Idle SSE streams and long polls cannot starve ingestion or the health checks: with more
waiting subscribers than a replica admits, the extra ones are refused with 429 and events and
/healthz are still answered at once."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from serve.app import MAX_WAITING
from tests.e2e.helpers import admin_headers, event

WAIT_S = 8.0


def test_waiting_subscribers_leave_room_for_ingestion_and_health(platform, client) -> None:
    for name, mode in (("idle-pull", "pull"), ("idle-sse", "sse")):
        client.put_config({"kind": "subscription", "name": name, "topics": ["business.nothing-fires"], "mode": mode})
    statuses: list[int] = []
    odd: list[str] = []  # answers other than 200 and 429, for the failure message
    lock = threading.Lock()
    stop = threading.Event()

    def long_poll() -> None:
        with httpx.Client(base_url=platform.base_url, headers=admin_headers(), timeout=30) as http:
            answer = http.get("/v1/subscriptions/idle-pull/events", params={"wait": WAIT_S})
            with lock:
                statuses.append(answer.status_code)
                if answer.status_code not in (200, 429):
                    odd.append(answer.text[:200])

    def idle_stream() -> None:
        with httpx.Client(base_url=platform.base_url, headers=admin_headers(), timeout=30) as http:
            with http.stream("GET", "/v1/subscriptions/idle-sse/stream") as answer:
                with lock:
                    statuses.append(answer.status_code)
                if answer.status_code == 200:
                    stop.wait(WAIT_S)  # hold the stream open, reading nothing
                else:
                    answer.read()
                    if answer.status_code != 429:
                        odd.append(answer.text[:200])

    waiting = MAX_WAITING + 32
    with ThreadPoolExecutor(max_workers=waiting) as pool:
        futures = [pool.submit(long_poll if i % 2 else idle_stream) for i in range(waiting)]
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # every waiting request has been answered or admitted
            with lock:
                if len([s for s in statuses if s == 429]) >= waiting - MAX_WAITING:
                    break
            time.sleep(0.1)

        started = time.perf_counter()
        health = httpx.get(f"{platform.base_url}/healthz", timeout=10)
        report = client.send([event(i, "idle.tick", prefix="idle") for i in range(100)])
        answered_s = time.perf_counter() - started
        stop.set()
        for future in futures:
            future.result(timeout=60)

    assert health.status_code == 200 and report.accepted == 100
    assert answered_s < WAIT_S / 2, f"ingestion waited behind subscribers for {answered_s:.1f}s"
    assert set(statuses) <= {200, 429}, odd[:5]
    refused = statuses.count(429)
    assert refused >= waiting - MAX_WAITING, f"{refused} of {waiting} waiting subscribers refused: {statuses}"
