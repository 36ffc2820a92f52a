"""Who may call what, over HTTP on the real app: the route x role matrix is generated from the
app's own route table, so a new route without a declared access level fails here; then tokens
(hashed at rest, shown once, revocable, expiring), subscriber tokens, and the audit trail."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute

from runtime.security.tokens import ROLES
from serve import access
from serve.app import app

ALL_ROLES = ("none", *ROLES)


def routes() -> list[tuple[str, str]]:
    """(method, path template) of every route the app serves, however FastAPI nests them."""
    found = []
    for route in walk(app.router):
        found += [(method, route.path) for method in sorted(route.methods)]
    return found


def walk(router: Any) -> Iterator[APIRoute]:
    for route in router.routes:
        if isinstance(route, APIRoute):
            yield route
        elif hasattr(route, "original_router"):  # FastAPI >= 0.137 keeps included routers nested
            yield from walk(route.original_router)


def test_every_route_declares_its_access() -> None:
    undeclared = [r for r in routes() if r not in access.ACCESS]
    assert not undeclared, f"routes without a declared access level in serve/access.py: {undeclared}"
    stale = [r for r in access.ACCESS if r not in routes()]
    assert not stale, f"access levels declared for routes that do not exist: {stale}"


def expected(level: str, role: str) -> str:
    """What a caller with ``role`` gets from a route of ``level``: pass, 401 or 403."""
    if level in ("public", "console"):  # the console checks its own session cookie, not bearer tokens
        return "pass"
    if level == "source":
        return "401"  # ingestion takes source keys only; no operator token is one
    needed = level.removeprefix("subscriber:")
    if role == "none":
        return "401"
    return "pass" if ROLES.index(role) >= ROLES.index(needed) else "403"


def call(http: httpx.Client, method: str, path: str, token: str | None) -> httpx.Response:
    url = re.sub(r"\{[^}]+\}", "matrix-probe", path)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    body: Any = [] if path in ("/v1/optouts", "/v1/identities", "/v1/consents") else {}
    kwargs: dict[str, Any] = {"json": body} if method in ("POST", "PUT", "DELETE") else {}
    if path.endswith("/stream"):
        with http.stream(method, url, headers=headers, timeout=5, **kwargs) as response:
            if response.status_code != 200:  # an open stream never ends: only refusals are read
                response.read()
            return response
    return http.request(method, url, headers=headers, timeout=30, **kwargs)


@pytest.fixture(scope="module")
def http(platform) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=platform.base_url) as client:
        yield client


@pytest.fixture(scope="module")
def tokens(platform, http) -> dict[str, str | None]:
    admin = {"Authorization": f"Bearer {platform.admin_token}"}
    made: dict[str, str | None] = {"none": None, "admin": platform.admin_token}
    for role in ("viewer", "operator"):
        answer = http.post("/v1/tokens", json={"name": f"matrix-{role}", "role": role}, headers=admin)
        assert answer.status_code == 201, answer.text
        made[role] = answer.json()["token"]
    return made


def test_route_role_matrix(http, tokens) -> None:
    """Every route, every role: 401 without a token, 403 below the route's role, and past the
    access check (any other status) at or above it — with a machine-readable reason."""
    wrong = []
    for method, path in routes():
        if path in access.UNDOCUMENTED:
            continue
        level = access.ACCESS[(method, path)]
        for role in ALL_ROLES:
            response = call(http, method, path, tokens[role])
            want = expected(level, role)
            got = str(response.status_code) if response.status_code in (401, 403) else "pass"
            if got != want:
                wrong.append(
                    f"{method} {path} as {role}: got {response.status_code} {response.text[:120]}, want {want}"
                )
            elif got in ("401", "403"):
                assert response.json()["reason"] in (
                    "missing_token",
                    "invalid_token",
                    "insufficient_role",
                    "unauthorized",
                )
    assert not wrong, "\n".join(wrong)


def test_health_stays_open(http) -> None:
    assert http.get("/healthz").status_code == 200
    assert http.get("/readyz").status_code == 200


def test_a_revoked_or_expired_token_is_refused_at_once(http, tokens) -> None:
    admin = {"Authorization": f"Bearer {tokens['admin']}"}
    made = http.post("/v1/tokens", json={"name": "short-lived", "role": "viewer"}, headers=admin).json()
    mine = {"Authorization": f"Bearer {made['token']}"}
    assert http.get("/v1/config/rule", headers=mine).status_code == 200
    assert http.delete("/v1/tokens/short-lived", headers=admin).status_code == 200
    refused = http.get("/v1/config/rule", headers=mine)
    assert (refused.status_code, refused.json()["reason"]) == (401, "token_revoked")

    tampered = made["token"][:-2] + ("AA" if not made["token"].endswith("AA") else "BB")
    assert http.get("/v1/config/rule", headers={"Authorization": f"Bearer {tampered}"}).status_code == 401


def test_tokens_are_listed_without_secrets_and_names_are_unique(http, tokens) -> None:
    admin = {"Authorization": f"Bearer {tokens['admin']}"}
    listed = http.get("/v1/tokens", headers=admin).json()["items"]
    by_name = {t["name"]: t for t in listed}
    assert by_name["matrix-viewer"]["role"] == "viewer"
    text = str(listed)
    assert tokens["viewer"] not in text and tokens["viewer"].split("_", 2)[2] not in text and "digest" not in text
    again = http.post("/v1/tokens", json={"name": "matrix-viewer", "role": "admin"}, headers=admin)
    assert (again.status_code, again.json()["reason"]) == (409, "conflict")
    bad = http.post("/v1/tokens", json={"name": "x", "role": "root"}, headers=admin)
    assert bad.status_code == 422


def test_only_an_admin_may_point_a_webhook_inside(http, tokens) -> None:
    doc = {
        "kind": "subscription",
        "name": "inside",
        "topics": ["business.x"],
        "mode": "webhook",
        "webhook": {"url": "http://127.0.0.1:9/hook", "internal": True},
    }
    as_operator = http.put("/v1/config/subscription/inside", json=doc, headers=bearer(tokens["operator"]))
    assert (as_operator.status_code, as_operator.json()["reason"]) == (403, "insufficient_role")
    as_admin = http.put("/v1/config/subscription/inside", json=doc, headers=bearer(tokens["admin"]))
    assert as_admin.status_code == 200, as_admin.text


def test_changes_are_audited_with_who_what_and_diff(http, tokens) -> None:
    operator = bearer(tokens["operator"])
    source = {"kind": "source", "name": "audited", "api_key": "audited-key-0123456789-canary"}
    assert http.put("/v1/config/source/audited", json=source, headers=operator).status_code == 200
    changed = {**source, "enabled": False}
    assert http.put("/v1/config/source/audited", json=changed, headers=operator).status_code == 200
    assert (
        http.put("/v1/optouts", json=[{"customer": "c-audit", "channel": "sms"}], headers=operator).status_code == 200
    )

    trail = http.get("/v1/audit", params={"target": "source/audited"}, headers=bearer(tokens["viewer"])).json()
    puts = [r for r in trail["items"] if r["action"] == "config.put"]
    assert len(puts) == 2 and all((r["who"], r["role"]) == ("matrix-operator", "operator") for r in puts)
    newest = puts[0]
    assert newest["detail"]["version"] == 2
    assert {"path": "enabled", "from": True, "to": False} in newest["detail"]["changes"]
    assert newest["remote"] == "127.0.0.1"
    optouts = http.get("/v1/audit", params={"action": "optout"}, headers=bearer(tokens["viewer"])).json()["items"]
    assert optouts and optouts[0]["detail"]["customers"] == ["c-audit"]
    tokens_made = http.get("/v1/audit", params={"action": "token.create"}, headers=bearer(tokens["admin"])).json()
    assert {"matrix-viewer", "matrix-operator"} <= {r["detail"]["name"] for r in tokens_made["items"]}
    everything = str(http.get("/v1/audit", params={"limit": 10_000}, headers=bearer(tokens["admin"])).json())
    assert "canary" not in everything and tokens["viewer"] not in everything


def test_subscriber_tokens_open_only_their_own_subscription(http, tokens) -> None:
    admin = bearer(tokens["admin"])
    mine = {"kind": "subscription", "name": "sub-mine", "topics": ["business.x"], "token": "subscriber-0123456789ab"}
    open_ = {"kind": "subscription", "name": "sub-open", "topics": ["business.x"]}
    for doc in (mine, open_):
        assert http.put(f"/v1/config/subscription/{doc['name']}", json=doc, headers=admin).status_code == 200
    subscriber = bearer("subscriber-0123456789ab")
    assert http.get("/v1/subscriptions/sub-mine/events", headers=subscriber).status_code == 200
    assert http.get("/v1/subscriptions/sub-open/events", headers=subscriber).status_code == 404  # not theirs
    assert http.get("/v1/subscriptions/sub-open/events").status_code == 401
    assert http.get("/v1/subscriptions/sub-open/events", headers=bearer(tokens["viewer"])).status_code == 200
    listed = http.get("/v1/subscriptions", headers=subscriber).json()["items"]
    assert [d["name"] for d in listed] == ["sub-mine"]
    # a subscriber token is no operator token anywhere else
    assert http.get("/v1/config/rule", headers=subscriber).status_code == 401


def test_config_history_is_bounded_and_holds_no_secret(http, tokens) -> None:
    operator = bearer(tokens["operator"])
    for i in range(3):
        doc = {"kind": "source", "name": "churn", "api_key": f"churn-key-{i}-0123456789abcdef"}
        assert http.put("/v1/config/source/churn", json=doc, headers=operator).status_code == 200
    history = http.get("/v1/config/source/churn/history", headers=bearer(tokens["viewer"])).json()["items"]
    assert [h["version"] for h in history] == [1, 2, 3]
    assert "churn-key" not in str(history)


def test_every_body_is_bounded(http, tokens) -> None:
    huge = b"[" + b"1," * (3 * 1024 * 1024) + b"1]"  # over the 4 MiB default of non-ingest routes
    answer = http.put(
        "/v1/optouts", content=huge, headers={**bearer(tokens["operator"]), "Content-Type": "application/json"}
    )
    assert (answer.status_code, answer.json()["reason"]) == (413, "body_too_large")

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while read
        for _ in range(6):
            yield b" " * (1024 * 1024)

    chunked = http.put(
        "/v1/optouts", content=chunks(), headers={**bearer(tokens["operator"]), "Content-Type": "application/json"}
    )
    assert chunked.status_code == 413


def bearer(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
