"""Ingestion and subscription contracts at their edges, over real HTTP, on a platform with tiny
bounds: too many events (400), a backlog over its bound (429 + Retry-After), Redis down (only
503 ``store_unavailable`` + Retry-After), a source PUT applying to the very next request, and an
idle SSE stream kept open by keep-alive comments (every ``SSE_KEEPALIVE_S`` here instead of the
15 s default, so holding it over several of them takes seconds, not a minute)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import httpx
import orjson
import pytest
import ray

from actors.platform import Platform
from runtime.dev.client import EspClient
from tests.e2e.conftest import SOURCE_KEY, make_platform, stop_platform
from tests.e2e.helpers import admin_headers, event

AUTH = {"Authorization": f"Bearer {SOURCE_KEY}", "Content-Type": "application/json"}
MAX_EVENTS = 50
MAX_BACKLOG = 10
# Longer than the 5 s idle limits of the stack under the stream (redis-py's default socket
# timeout, HTTP keep-alive timeouts), as the 15 s default is; short enough to hold several.
SSE_KEEPALIVE_S = 6.0
SSE_KEEP_ALIVES = 2
SSE_HOLD_S = SSE_KEEP_ALIVES * SSE_KEEPALIVE_S  # reached at the last of them (lines are read as they come)


@pytest.fixture(scope="module")
def platform(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """This module's own platform: a request bound and a backlog bound small enough to reach, and
    a keep-alive interval short enough to wait for."""
    platform = make_platform(
        tmp_path_factory.mktemp("esp-edges"),
        max_events_per_request=MAX_EVENTS,
        max_backlog_entries=MAX_BACKLOG,
        sse_keepalive_s=SSE_KEEPALIVE_S,
    )
    with EspClient(platform.base_url) as admin:
        admin.put_config({"kind": "source", "name": "e2e", "api_key": SOURCE_KEY})
    yield platform
    stop_platform(platform)


def post(platform: Platform, events: list[dict], headers: dict[str, str] = AUTH) -> httpx.Response:
    return httpx.post(f"{platform.base_url}/v1/events", content=orjson.dumps(events), headers=headers, timeout=30)


def post_until(platform: Platform, status: int, prefix: str, timeout_s: float = 30.0) -> httpx.Response:
    """Post one event per request (one customer, so one partition) until ``status`` comes back."""
    deadline = time.monotonic() + timeout_s
    i = 0
    while time.monotonic() < deadline:
        answer = post(platform, [event(i, "edge.tick", prefix=prefix, customer="edge-one")])
        if answer.status_code == status:
            return answer
        assert answer.status_code in (202, 429, 503), answer.text
        i += 1
        time.sleep(0.05)
    raise AssertionError(f"no {status} within {timeout_s}s; last answer {answer.status_code} {answer.text}")


def test_more_events_than_a_request_may_carry_is_400_too_many_events(platform: Platform) -> None:
    answer = post(platform, [event(i, "edge.many", prefix="many") for i in range(MAX_EVENTS + 1)])
    assert (answer.status_code, answer.json()["reason"]) == (400, "too_many_events")
    assert post(platform, [event(i, "edge.many", prefix="many") for i in range(MAX_EVENTS)]).status_code == 202


def test_a_backlog_over_its_bound_is_429_with_retry_after_until_it_drains(platform: Platform) -> None:
    """Freeze the partition actors (SIGSTOP) so the log falls behind; thaw them and ingestion
    is accepted again."""
    pids = [ray.get(actor.status.remote(), timeout=30)["pid"] for actor in platform.actors]
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        refused = post_until(platform, 429, "lag")
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
    assert refused.json()["reason"] == "overloaded", refused.text
    assert int(refused.headers["Retry-After"]) >= 1
    post_until(platform, 202, "drained", timeout_s=60)


def test_a_source_put_applies_to_the_very_next_request(platform: Platform) -> None:
    """Each version of the mapping reads the subject from a field of its own, so a request mapped
    with the previous version is rejected with ``missing_field`` instead of accepted."""
    with EspClient(platform.base_url) as admin:
        for version in range(30):
            admin.put_config(
                {
                    "kind": "source",
                    "name": "hot-mapping",
                    "api_key": "hot-mapping-key-0123456789",
                    "mapping": {"type": "edge.hot", "id": "seq", "subject": f"who{version}", "time": "ts"},
                }
            )
            record = {"seq": f"hot{version}", f"who{version}": "c1", "ts": 1_790_000_000_000 + version}
            headers = {**AUTH, "Authorization": "Bearer hot-mapping-key-0123456789"}
            answer = post(platform, [record], headers=headers)
            assert answer.status_code == 202, answer.text
            got = answer.json()
            assert (got["accepted"], got["rejected"]) == (1, []), f"mapping version {version}: {answer.text}"


def test_an_idle_sse_stream_stays_open_with_a_keep_alive_at_each_interval(platform: Platform) -> None:
    with EspClient(platform.base_url) as admin:
        admin.put_config({"kind": "subscription", "name": "edge-idle", "topics": ["business.never"], "mode": "sse"})
    keep_alives = 0
    started = time.monotonic()
    with httpx.Client(base_url=platform.base_url, headers=admin_headers(), timeout=30) as http:
        with http.stream("GET", "/v1/subscriptions/edge-idle/stream") as answer:
            assert answer.status_code == 200
            for line in answer.iter_lines():  # ends early only if the server closes the stream
                keep_alives += line == ": keep-alive"
                if time.monotonic() - started >= SSE_HOLD_S:
                    break
    held_s = time.monotonic() - started
    assert held_s >= SSE_HOLD_S, f"the server closed an idle stream after {held_s:.0f}s"
    assert keep_alives >= SSE_KEEP_ALIVES, f"{keep_alives} keep-alive comments in {held_s:.0f}s"


def test_while_redis_is_down_ingestion_answers_only_503_store_unavailable(platform: Platform) -> None:
    """Runs last: it stops Redis, then restarts it on its AOF and waits for ingestion to resume."""
    platform.redis_server.kill()
    try:
        answers = [post(platform, [event(i, "edge.down", prefix="down")]) for i in range(20)]
    finally:
        platform.redis_server.start()
    assert {(a.status_code, a.json()["reason"]) for a in answers} == {(503, "store_unavailable")}
    assert all(int(a.headers["Retry-After"]) >= 1 for a in answers)
    post_until(platform, 202, "up", timeout_s=60)
