"""The Host allowlist refuses requests that name another host (DNS rebinding)."""

from __future__ import annotations

import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from runtime.settings import EspSettings
from serve.hosts import HostAllowlist, allowed_hosts, normalised_host


def client(allowed: object) -> TestClient:
    app = Starlette(routes=[Route("/", lambda request: PlainTextResponse("ok"), methods=["GET", "POST"])])
    return TestClient(HostAllowlist(app, allowed), base_url="http://localhost")  # type: ignore[arg-type]


@pytest.mark.parametrize("host", ["localhost", "localhost:8000", "LOCALHOST.", "127.0.0.1:8000", "[::1]", "[::1]:8000"])
def test_local_names_pass_with_or_without_a_port(host: str):
    answer = client(["localhost", "127.0.0.1", "::1"]).get("/", headers={"host": host})
    assert (answer.status_code, answer.text) == (200, "ok")


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", "localhost.evil.example", "[::2]", ""])
def test_other_hosts_get_400_with_a_reason(host: str):
    answer = client(["localhost", "127.0.0.1", "[::1]"]).post("/", headers={"host": host}, content=b"x")
    assert answer.status_code == 400
    assert answer.json()["reason"] == "host_not_allowed" and "ESP_ALLOWED_HOSTS" in answer.json()["message"]


def test_star_allows_any_host_and_a_callable_is_read_per_request():
    assert client(["*"]).get("/", headers={"host": "anything.example"}).status_code == 200
    allowed = ["a.example"]
    guarded = client(lambda: allowed)
    assert guarded.get("/", headers={"host": "b.example"}).status_code == 400
    allowed.append("b.example")
    assert guarded.get("/", headers={"host": "b.example"}).status_code == 200


def test_allowed_hosts_setting():
    assert allowed_hosts(EspSettings()) == ["localhost", "127.0.0.1", "[::1]"]
    assert allowed_hosts(EspSettings(http_host="10.0.0.5")) == ["localhost", "127.0.0.1", "[::1]", "10.0.0.5"]
    assert allowed_hosts(EspSettings(http_host="0.0.0.0")) == ["localhost", "127.0.0.1", "[::1]"]
    assert allowed_hosts(EspSettings(allowed_hosts=" esp.example.com, *")) == ["esp.example.com", "*"]


def test_normalised_host():
    assert [normalised_host(h) for h in ("Esp.Example.com:443", "[::1]:80", "::1", "0.0.0.0")] == [
        "esp.example.com",
        "[::1]",
        "[::1]",
        "0.0.0.0",
    ]
