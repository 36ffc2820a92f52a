"""runtime.dev.client: the retry loop of ``post_body`` against a scripted transport (no server):
which answers are retried, how long it waits, what it reports and when it gives up."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from runtime.dev import client as client_module
from runtime.dev.client import EspClient
from runtime.errors import EspError

ACCEPTED = httpx.Response(202, json={"accepted": 1, "duplicates": 0, "rejected": []})


@pytest.fixture
def waits(monkeypatch) -> list[float]:
    """The waits between attempts, recorded instead of slept."""
    slept: list[float] = []
    monkeypatch.setattr(client_module.time, "sleep", slept.append)
    return slept


def scripted(*answers: httpx.Response | Exception) -> tuple[EspClient, list[httpx.Request]]:
    """A client whose transport plays ``answers`` in order; every request is kept."""
    seen: list[httpx.Request] = []
    script: Iterator[httpx.Response | Exception] = iter(answers)

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = next(script)
        if isinstance(answer, Exception):
            raise answer
        return answer

    esp = EspClient("http://esp.test", source="s1", token="operator-token")
    esp.http = httpx.Client(base_url="http://esp.test", transport=httpx.MockTransport(handle))
    return esp, seen


def test_backs_off_as_asked_then_reports_the_retries(waits):
    esp, seen = scripted(
        httpx.Response(429, headers={"Retry-After": "2"}),
        httpx.Response(503, headers={"Retry-After": "30"}),  # longer than the 5 s cap
        httpx.ConnectError("refused"),
        httpx.Response(502),  # no Retry-After
        ACCEPTED,
    )
    answer, retries = esp.post_body(b'{"id":"e1"}', "application/json")
    assert (answer["accepted"], retries) == (1, 4)
    assert waits == [2.0, 5.0, 1.0, 1.0]
    assert {r.content for r in seen} == {b'{"id":"e1"}'}  # the whole body every time
    assert all(r.headers["X-ESP-Source"] == "s1" and "Authorization" not in r.headers for r in seen)


def test_a_refusal_is_not_retried(waits):
    esp, seen = scripted(httpx.Response(400, json={"reason": "unparseable_body", "message": "not JSON"}))
    with pytest.raises(EspError) as refused:
        esp.post_body(b"{", "application/json")
    assert (refused.value.reason, len(seen), waits) == ("unparseable_body", 1, [])


def test_gives_up_after_max_retries(waits):
    esp, seen = scripted(*[httpx.Response(503, headers={"Retry-After": "0"})] * 4)
    with pytest.raises(EspError, match=r"gave up after 3 retries \(503\)") as gave_up:
        esp.post_body(b"{}", "application/json", max_retries=3)
    assert (gave_up.value.reason, len(seen), waits) == ("unavailable", 4, [0.0, 0.0, 0.0])


def test_send_adds_up_retries_over_batches(waits):
    esp, _ = scripted(httpx.Response(503), ACCEPTED, ACCEPTED)
    report = esp.send([{"id": "a"}, {"id": "b"}], batch_size=1)
    assert (report.requests, report.retries, report.accepted) == (2, 1, 2)
