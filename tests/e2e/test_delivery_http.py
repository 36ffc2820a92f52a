"""Delivery through the public HTTP contract only: webhooks (signing, redaction, SSRF, dead
letters, trace), subscription tokens, server-sent events with resume, pull projections and
filters, and channels rendered to a message gateway. One whole ESP for the module
(``tests/e2e/conftest.py``); receivers are real HTTP servers on loopback."""

from __future__ import annotations

import hashlib
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import orjson
import pytest

from runtime.dev.client import EspClient
from runtime.dev.gateway import LocalGateway, read_messages
from runtime.subscriptions.webhooks import generate_secret
from tests.e2e.helpers import admin_headers, event, every_event_rule, read_exactly, wait_channel_settled, wait_settled
from tests.support.receiver import Receiver, Request
from tests.unit.test_webhooks import spec_verify

SOURCE = "e2e"  # the source the conftest registers (its key is the client's)
FAST_RETRY = ["50ms", "100ms", "100ms"]
CLOUDEVENT = "application/cloudevents+json"


# --- helpers ---------------------------------------------------------------------------------


@pytest.fixture
def http(platform) -> Iterator[httpx.Client]:
    """An HTTP client on the API acting as the platform's admin (a call's own Authorization
    header replaces that)."""
    with httpx.Client(base_url=platform.base_url, timeout=30, headers=admin_headers()) as c:
        yield c


@pytest.fixture
def bare(platform) -> Iterator[httpx.Client]:
    """An HTTP client without credentials: every call states its own."""
    with httpx.Client(base_url=platform.base_url, timeout=30) as c:
        yield c


def wait_until(condition: Callable[[], Any], *, timeout_s: float, what: str, every_s: float = 0.1) -> Any:
    """Poll ``condition`` until it returns something truthy (returned) or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"not within {timeout_s}s: {what} (last: {value!r})")
        time.sleep(every_s)


def webhook_subscription(name: str, topics: list[str], url: str, **endpoint: Any) -> dict[str, Any]:
    return {
        "kind": "subscription",
        "name": name,
        "topics": topics,
        "mode": "webhook",
        "webhook": {"url": url, "internal": True, "retry": FAST_RETRY, **endpoint},
    }


def put(http: httpx.Client, kind: str, name: str, document: dict[str, Any]) -> httpx.Response:
    return http.put(f"/v1/config/{kind}/{name}", json=document)


def triggering(business_event: dict[str, Any]) -> str:
    """The id of the input event an every-event rule's output was made from."""
    [matched] = business_event["data"]["events"]
    assert matched["source"] == SOURCE
    return matched["id"]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def entry_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq)


# --- 1. webhook end to end -------------------------------------------------------------------


def test_webhook_delivers_each_business_event_once_signed(platform, client, http):
    secret = generate_secret()
    events = [event(i, "hook.tick", prefix="wh", customer=f"hc{i % 7}") for i in range(40)]
    expected = {e["id"]: e["subject"] for e in events}
    with Receiver() as receiver:
        sub = webhook_subscription("hook-e2e", ["business.hook-every"], receiver.url, secrets=[secret])
        assert put(http, "subscription", "hook-e2e", sub).status_code == 200
        assert put(http, "rule", "hook-every", every_event_rule("hook-every", "hook.tick")).status_code == 200
        sent_at = time.time()
        report = client.send(events)
        assert (report.accepted, report.duplicates, report.rejected) == (40, 0, [])
        receiver.wait_for(lambda seen: len(seen) >= 40, timeout_s=60)
        wait_settled(http, "hook-e2e")  # all acked: a duplicate or a stray delivery would be in by now
        seen = list(receiver.requests)

    assert len(seen) == 40
    bodies = [r.json() for r in seen]
    assert {triggering(b): b["subject"] for b in bodies} == expected
    for request, body in zip(seen, bodies, strict=True):
        assert request.path == "/hook"
        assert request.headers["content-type"] == CLOUDEVENT
        assert spec_verify(secret, request.headers, request.body), "signature does not verify"
        assert abs(int(request.headers["webhook-timestamp"]) - sent_at) < 120
        assert body["specversion"] == "1.0"
        assert (body["type"], body["source"]) == ("business.hook-every", "esp/rule/hook-every")
        assert body["data"]["rule"] == "hook-every" and body["data"]["count"] == 1
    webhook_ids = [r.headers["webhook-id"] for r in seen]
    assert len(set(webhook_ids)) == 40, "one webhook-id per event"
    assert len({b["id"] for b in bodies}) == 40, "one output id per event"


# --- 2. secrets and tokens are never shown back ------------------------------------------------


def test_config_api_never_returns_signing_secrets_or_the_token(platform, http):
    secrets = [generate_secret(), generate_secret()]
    token = "redact-token-0123456789abcdef"
    doc = webhook_subscription("redact-e2e", ["business.nothing-here"], "http://127.0.0.1:9/x", secrets=secrets)
    answer = put(http, "subscription", "redact-e2e", {**doc, "token": token})
    assert answer.status_code == 200
    channel = {
        "kind": "channel",
        "type": "sms",
        "endpoint": {"url": "http://127.0.0.1:9/send/redact", "internal": True, "secrets": secrets[:1]},
        "templates": {"hello": "hello {{ customer }}"},
    }
    assert put(http, "channel", "redact-ch", channel).status_code == 200

    views = {
        "put answer": answer,
        "get": http.get("/v1/config/subscription/redact-e2e"),
        "list": http.get("/v1/config/subscription"),
        "own listing": http.get("/v1/subscriptions", headers=bearer(token)),
        "status": http.get("/v1/subscriptions/redact-e2e", headers=bearer(token)),
        "channel get": http.get("/v1/config/channel/redact-ch"),
        "channel list": http.get("/v1/config/channel"),
    }
    for what, response in views.items():
        assert response.status_code == 200, what
        for secret in [*secrets, token, secrets[0].removeprefix("whsec_")]:
            assert secret not in response.text, f"{what} shows a secret or the token"

    stored = views["get"].json()
    assert stored["webhook"]["secrets"] == ["(redacted)", "(redacted)"]
    assert "token" not in stored
    assert stored["token_sha256"] == hashlib.sha256(token.encode()).hexdigest()
    assert views["channel get"].json()["endpoint"]["secrets"] == ["(redacted)"]
    [listed] = [d for d in views["list"].json()["items"] if d["name"] == "redact-e2e"]
    assert listed["webhook"]["secrets"] == ["(redacted)", "(redacted)"] and "token" not in listed

    # a PUT that does not name the token keeps it (and still never shows it)
    assert put(http, "subscription", "redact-e2e", doc).status_code == 200
    again = http.get("/v1/config/subscription/redact-e2e").json()
    assert again["token_sha256"] == stored["token_sha256"] and "token" not in again


# --- 3. subscription tokens -----------------------------------------------------------------


TOKEN_A = "token-alpha-0123456789abcdef"
TOKEN_B = "token-bravo-0123456789abcdef"


def not_found_shape(response: httpx.Response, name: str) -> tuple[int, str, str]:
    """Status, content type and body with the subscription's name blanked: the shape a caller
    sees, which must not tell a guarded subscription from a missing one."""
    return response.status_code, response.headers.get("content-type", ""), response.text.replace(repr(name), "<name>")


def guarded_calls(http: httpx.Client, name: str, headers: dict[str, str]) -> dict[str, httpx.Response]:
    base = f"/v1/subscriptions/{name}"
    return {
        "pull": http.get(f"{base}/events", params={"max": 10}, headers=headers),
        "ack": http.post(f"{base}/ack", json={"ack_ids": ["1-0"]}, headers=headers),
        "status": http.get(base, headers=headers),
        "deadletters": http.get(f"{base}/deadletters", headers=headers),
        "replay": http.post(f"{base}/deadletters/replay", json={}, headers=headers),
        "stream": http.get(f"{base}/stream", headers=headers),
    }


def test_each_token_opens_only_its_own_subscription(platform, client, http, bare):
    for name, token in (("tok-a", TOKEN_A), ("tok-b", TOKEN_B)):
        doc = {"kind": "subscription", "name": name, "topics": ["business.tok-every"], "token": token}
        assert put(http, "subscription", name, doc).status_code == 200
    client.put_config(every_event_rule("tok-every", "tok.tick"))
    assert client.send([event(i, "tok.tick", prefix="tk") for i in range(5)]).accepted == 5

    for name, token in (("tok-a", TOKEN_A), ("tok-b", TOKEN_B)):
        with EspClient(platform.base_url) as own:
            own.http.headers.update(bearer(token))
            got = read_exactly(platform, own, name, 5, timeout_s=30)
            assert sorted(triggering(e) for e in got) == [f"tk{i}" for i in range(5)]
            status = own.request("GET", f"/v1/subscriptions/{name}")
            assert (status["name"], status["pending"], status["dead_letters"]) == (name, 0, 0)
            assert own.request("GET", f"/v1/subscriptions/{name}/deadletters") == {"items": [], "total": 0}
            assert own.request("POST", f"/v1/subscriptions/{name}/ack", json={"ack_ids": [got[0]["ack_id"]]}) == {
                "acked": 0  # acked already: idempotent
            }

    # Another subscriber's token or a wrong token: exactly "no such subscription".
    ghost = guarded_calls(bare, "tok-ghost", bearer(TOKEN_A))
    assert all(r.status_code == 404 for r in ghost.values()), {k: r.status_code for k, r in ghost.items()}
    assert ghost["status"].json() == {"reason": "not_found", "message": "no subscription named 'tok-ghost'"}
    callers = {
        "the other token": {"tok-a": bearer(TOKEN_B), "tok-b": bearer(TOKEN_A)},
        "a wrong token": {"tok-a": bearer("token-wrong-0123456789abcdef"), "tok-b": bearer("x")},
    }
    for who, by_name in callers.items():
        for name, headers in by_name.items():
            for call, response in guarded_calls(bare, name, headers).items():
                assert not_found_shape(response, name) == not_found_shape(ghost[call], "tok-ghost"), (
                    f"{call} of {name} with {who}: {response.status_code} {response.text}"
                )
    # No credentials, or not a bearer token: 401, whichever the subscription.
    for headers in ({}, {"Authorization": f"Basic {TOKEN_A}"}, {"Authorization": ""}):
        for name in ("tok-a", "tok-ghost"):
            for call, response in guarded_calls(bare, name, headers).items():
                assert (response.status_code, response.json()["reason"]) == (401, "missing_token"), (call, headers)

    # nothing was taken from the guarded subscriptions by those calls
    for name, token in (("tok-a", TOKEN_A), ("tok-b", TOKEN_B)):
        assert http.get(f"/v1/subscriptions/{name}", headers=bearer(token)).json()["pending"] == 0

    def listed(headers: dict[str, str]) -> dict[str, dict[str, Any]]:
        response = bare.get("/v1/subscriptions", headers=headers)
        assert response.status_code == 200
        return {d["name"]: d for d in response.json()["items"]}

    for token, mine in ((TOKEN_A, "tok-a"), (TOKEN_B, "tok-b")):
        assert set(listed(bearer(token))) == {mine}  # subscriptions without a token need an operator token
    assert set(listed(bearer("token-wrong-0123456789abcdef"))) == set()
    assert {"tok-a", "tok-b"} <= set(listed(admin_headers()))
    assert bare.get("/v1/subscriptions").status_code == 401


# --- 4. SSRF guard ----------------------------------------------------------------------------


REFUSED_URLS = [
    ("http://127.0.0.1:9/x", "loopback_address"),
    ("http://10.0.0.1/", "private_address"),
    ("http://169.254.169.254/latest/meta-data", "link_local_address"),
    ("http://[::1]/", "loopback_address"),
    ("http://2130706433/", "loopback_address"),
    ("http://localhost/", "loopback_address"),
    ("file:///etc/passwd", "scheme_not_allowed"),
    ("ftp://example.com/x", "scheme_not_allowed"),
]


@pytest.mark.parametrize(("url", "reason"), REFUSED_URLS, ids=[u for u, _ in REFUSED_URLS])
def test_webhook_urls_into_our_own_network_are_refused_when_saved(platform, http, url, reason):
    name = "ssrf-" + hashlib.sha256(url.encode()).hexdigest()[:8]
    doc = webhook_subscription(name, ["business.ssrf"], url)
    del doc["webhook"]["internal"]
    response = put(http, "subscription", name, doc)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["reason"] == "invalid_config"
    [error] = body["errors"]
    assert error["path"] == "webhook"
    assert f"refused: {reason}" in error["expected"], error  # which check refused it, by its name
    assert http.get(f"/v1/config/subscription/{name}").status_code == 404  # nothing was stored

    channel = {"kind": "channel", "type": "sms", "endpoint": {"url": url}, "templates": {"t": "x"}}
    refused = put(http, "channel", name, channel)
    assert refused.status_code == 422 and f"refused: {reason}" in refused.json()["errors"][0]["expected"]


def test_internal_endpoints_may_use_loopback_but_never_other_schemes(platform, http):
    for url in ("http://127.0.0.1:9/x", "http://localhost:9/x", "http://[::1]:9/x"):
        doc = webhook_subscription("ssrf-internal", ["business.ssrf"], url)
        response = put(http, "subscription", "ssrf-internal", doc)
        assert response.status_code == 200, (url, response.text)
    for url in ("file:///etc/passwd", "ftp://127.0.0.1/x", "http://user:pw@127.0.0.1:9/x"):
        response = put(http, "subscription", "ssrf-internal-bad", webhook_subscription("x", ["business.x"], url))
        assert response.status_code == 422, (url, response.text)


# --- 5. server-sent events ------------------------------------------------------------------


def read_sse(
    http: httpx.Client,
    name: str,
    token: str,
    want: int,
    *,
    last_event_id: str | None = None,
    as_query: bool = False,
    timeout_s: float = 30,
) -> list[dict[str, str]]:
    """Stream until ``want`` events were parsed, then disconnect (mid-stream if more were sent)."""
    headers = bearer(token)
    params = {}
    if last_event_id is not None and as_query:
        params["last_event_id"] = last_event_id
    elif last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    got: list[dict[str, str]] = []
    deadline = time.monotonic() + timeout_s
    timeout = httpx.Timeout(10.0, read=timeout_s)
    url = f"/v1/subscriptions/{name}/stream"
    with http.stream("GET", url, params=params, headers=headers, timeout=timeout) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        fields: dict[str, str] = {}
        for line in response.iter_lines():
            if time.monotonic() > deadline:
                raise AssertionError(f"SSE: {len(got)} of {want} events in {timeout_s}s")
            if line == "":
                if "data" in fields:
                    got.append(fields)
                    if len(got) >= want:
                        break
                fields = {}
            elif not line.startswith(":"):
                field, _, value = line.partition(":")
                fields[field] = value.removeprefix(" ")
    return got


def test_sse_resumes_after_last_event_id_without_gap_or_duplicate(platform, client, http, bare):
    token = "sse-token-0123456789abcdef"
    doc = {"kind": "subscription", "name": "sse-e2e", "topics": ["business.sse-every"], "mode": "sse"}
    assert put(http, "subscription", "sse-e2e", {**doc, "token": token}).status_code == 200
    client.put_config(every_event_rule("sse-every", "sse.tick"))

    assert client.send([event(i, "sse.tick", prefix="ss") for i in range(30)]).accepted == 30
    wait_until(  # all 30 are in the stream: the first connection gets more than it reads
        lambda: http.get("/v1/subscriptions/sse-e2e", headers=bearer(token)).json()["lag"] >= 30,
        timeout_s=30,
        what="30 business events in the SSE subscription",
    )
    first = read_sse(http, "sse-e2e", token, 12)  # then hang up mid-stream
    assert client.send([event(i, "sse.tick", prefix="ss") for i in range(30, 60)]).accepted == 30
    rest = read_sse(http, "sse-e2e", token, 60 - 12, last_event_id=first[-1]["id"])

    union = first + rest
    ids = [e["id"] for e in union]
    assert all(entry_key(a) < entry_key(b) for a, b in itertools.pairwise(ids)), "out of order or repeated"
    assert all(e["event"] == "business.sse-every" for e in union)
    payloads = [orjson.loads(e["data"]) for e in union]
    assert sorted(triggering(p) for p in payloads) == sorted(f"ss{i}" for i in range(60))
    assert len({p["id"] for p in payloads}) == 60

    # the query parameter form resumes the same way
    resumed = read_sse(http, "sse-e2e", token, 19, last_event_id=ids[40], as_query=True)
    assert [e["id"] for e in resumed] == ids[41:]

    # an SSE subscription is not pulled; a caller without credentials is refused
    wrong = http.get("/v1/subscriptions/sse-e2e/events", headers=bearer(token))
    assert (wrong.status_code, wrong.json()["reason"]) == (409, "wrong_mode")
    ack = http.post("/v1/subscriptions/sse-e2e/ack", json={"ack_ids": [ids[0]]}, headers=bearer(token))
    assert (ack.status_code, ack.json()["reason"]) == (409, "wrong_mode")
    assert bare.get("/v1/subscriptions/sse-e2e/events").status_code == 401
    assert bare.get("/v1/subscriptions/sse-e2e/stream").status_code == 401


# --- 6. pull with filter and fields -----------------------------------------------------------


def test_pull_applies_the_filter_and_the_fields_projection(platform, client, http):
    doc = {
        "kind": "subscription",
        "name": "proj-e2e",
        "topics": ["business.proj-every"],
        "filter": "subject in ['pc1', 'pc3']",
        "fields": ["id", "subject", "data.rule", "data.events", "data.missing"],
    }
    assert put(http, "subscription", "proj-e2e", doc).status_code == 200
    client.put_config(every_event_rule("proj-every", "proj.tick"))
    events = [event(i, "proj.tick", prefix="pj", customer=f"pc{i % 6}") for i in range(36)]
    expected = sorted(e["id"] for e in events if e["subject"] in ("pc1", "pc3"))
    assert client.send(events).accepted == 36

    got = read_exactly(platform, client, "proj-e2e", len(expected), timeout_s=30)
    assert sorted(triggering(e) for e in got) == expected
    for e in got:
        assert set(e) == {"id", "subject", "data", "ack_id"}, e
        assert set(e["data"]) == {"rule", "events"} and e["data"]["rule"] == "proj-every"
        assert e["subject"] in ("pc1", "pc3")


# --- 7. dead letters and replay ---------------------------------------------------------------


def replay(http: httpx.Client, path: str) -> dict[str, Any]:
    response = http.post(path, json={})
    assert response.status_code == 200, f"POST {path}: {response.status_code} {response.text}"
    return response.json()


class FailingReceiver:
    """A receiver answering 500 until ``healthy`` is set; records (webhook-id, status) per call."""

    def __init__(self) -> None:
        self.healthy = threading.Event()
        self.answered: list[tuple[str, int]] = []
        self.receiver = Receiver(self._script)

    def _script(self, n: int, request: Request) -> tuple[int, dict[str, str], float]:
        status = 200 if self.healthy.is_set() else 500
        self.answered.append((request.headers["webhook-id"], status))
        return status, {}, 0.0


def dead_letter_three(http: httpx.Client, client: EspClient, failing: FailingReceiver, name: str) -> set[str]:
    """Three events whose receiver answers 500 through a 2-step retry schedule: after 3
    attempts each they are dead letters, listed over HTTP. Returns their webhook-ids."""
    rule = f"{name}-every"
    sub = webhook_subscription(name, [f"business.{rule}"], failing.receiver.url, retry=["50ms", "50ms"])
    assert put(http, "subscription", name, sub).status_code == 200
    client.put_config(every_event_rule(rule, f"{name}.tick"))
    assert client.send([event(i, f"{name}.tick", prefix=name) for i in range(3)]).accepted == 3

    def dead_letters() -> dict[str, Any] | None:
        listing = http.get(f"/v1/subscriptions/{name}/deadletters").json()
        return listing if len(listing["items"]) >= 3 else None

    listing = wait_until(dead_letters, timeout_s=60, what="3 dead letters")
    wait_settled(http, name)  # nothing more may come
    listing = http.get(f"/v1/subscriptions/{name}/deadletters").json()
    assert listing["total"] == 3 and len(listing["items"]) == 3
    assert sorted(triggering(item["event"]) for item in listing["items"]) == [f"{name}{i}" for i in range(3)]
    for item in listing["items"]:
        assert (item["status"], item["attempts"]) == (500, 3), item
        assert "scripted" in item["error"]
    status = http.get(f"/v1/subscriptions/{name}").json()
    assert (status["dead_letters"], status["disabled"], status["pending"]) == (3, False, 0)
    failed_ids = {wid for wid, s in failing.answered if s == 500}
    assert len(failed_ids) == 3 and len(failing.answered) == 9  # 1 attempt + 2 retries each
    assert all(s == 500 for _, s in failing.answered)
    return failed_ids


def test_exhausted_retries_become_dead_letters_listed_over_http(platform, client, http):
    failing = FailingReceiver()
    with failing.receiver:
        dead_letter_three(http, client, failing, "dead-list")
        one = http.get("/v1/subscriptions/dead-list/deadletters", params={"limit": 1}).json()
        assert one["total"] == 3 and len(one["items"]) == 1
        older = http.get("/v1/subscriptions/dead-list/deadletters", params={"before": one["items"][0]["id"]}).json()
        assert len(older["items"]) == 2  # newest first, paged back with 'before'


def test_replayed_dead_letters_are_delivered_with_the_same_webhook_id(platform, client, http):
    failing = FailingReceiver()
    with failing.receiver as receiver:
        failed_ids = dead_letter_three(http, client, failing, "dead-replay")
        failing.healthy.set()
        assert replay(http, "/v1/subscriptions/dead-replay/deadletters/replay") == {"replayed": 3}
        receiver.wait_for(lambda seen: len(seen) >= 12, timeout_s=30)
        wait_settled(http, "dead-replay")

    delivered_ids = [wid for wid, s in failing.answered if s == 200]
    assert sorted(delivered_ids) == sorted(failed_ids), "replay must keep each event's webhook-id"
    assert len(failing.answered) == 12
    assert http.get("/v1/subscriptions/dead-replay/deadletters").json() == {"items": [], "total": 0}
    assert http.get("/v1/subscriptions/dead-replay").json()["dead_letters"] == 0


# --- 8. channels ------------------------------------------------------------------------------


def test_channel_renders_notifications_into_the_gateway(platform, client, http, tmp_path):
    path = tmp_path / "gateway" / "messages.jsonl"
    with LocalGateway(path) as gateway:
        channel = {
            "kind": "channel",
            "type": "sms",
            "endpoint": {"url": f"{gateway.url}/send/sms-e2e", "internal": True, "retry": ["100ms", "200ms"]},
            "templates": {"welcome": "Dear {{ profile.name }} ({{ customer }}), welcome to {{ campaign }}."},
        }
        assert put(http, "channel", "sms-e2e", channel).status_code == 200
        for customer, name in (("ch-ann", "Ann"), ("ch-bob", "Bob")):
            assert http.put(f"/v1/profiles/{customer}", json={"name": name}).status_code == 200
        rule = {
            "kind": "rule",
            "name": "ch-welcome",
            "when": {"event": "ch.signup"},
            "then": [{"notify": {"channel": "sms-e2e", "template": "welcome", "campaign": "spring-e2e"}}],
        }
        assert put(http, "rule", "ch-welcome", rule).status_code == 200
        sent = [
            event(1, "ch.signup", prefix="ch", customer="ch-ann"),
            event(2, "ch.signup", prefix="ch", customer="ch-bob"),
        ]
        assert client.send(sent).accepted == 2

        wait_until(lambda: len(read_messages(path, "sms-e2e")) >= 2, timeout_s=30, what="2 gateway messages")
        wait_channel_settled(platform, "sms-e2e")
        messages = read_messages(path, "sms-e2e")

    assert len(messages) == 2
    bodies = sorted((m["body"] for m in messages), key=lambda b: b["to"])
    for body, (customer, name) in zip(bodies, (("ch-ann", "Ann"), ("ch-bob", "Bob")), strict=True):
        assert body["message"] == f"Dear {name} ({customer}), welcome to spring-e2e."
        assert (body["to"], body["campaign"], body["channel"], body["type"]) == (
            customer,
            "spring-e2e",
            "sms-e2e",
            "sms",
        )
        assert body["rule"] == "ch-welcome"
    assert len({m["headers"]["webhook-id"] for m in messages}) == 2
    status = http.get("/v1/channels/sms-e2e").json()
    assert status["dead_letters"] == 0


def strict_channel(http: httpx.Client, client: EspClient, gateway: LocalGateway, name: str) -> None:
    """A channel whose template needs ``profile.tier``, which the customer lacks: the
    notification goes to the channel's dead letters at once, with the reason."""
    channel = {
        "kind": "channel",
        "type": "sms",
        "endpoint": {"url": f"{gateway.url}/send/{name}", "internal": True, "retry": ["100ms"]},
        "templates": {"tiered": "Hello {{ profile.tier }} member {{ customer }}"},
    }
    assert put(http, "channel", name, channel).status_code == 200
    rule = {
        "kind": "rule",
        "name": f"{name}-rule",
        "when": {"event": f"{name}.tick"},
        "then": [{"notify": {"channel": name, "template": "tiered", "campaign": "tiers"}}],
    }
    assert put(http, "rule", f"{name}-rule", rule).status_code == 200
    customer = f"{name}-carl"
    assert http.put(f"/v1/profiles/{customer}", json={"name": "Carl"}).status_code == 200
    assert client.send([event(1, f"{name}.tick", prefix=name, customer=customer)]).accepted == 1

    def dead() -> dict[str, Any] | None:
        listing = http.get(f"/v1/channels/{name}/deadletters").json()
        return listing if listing["items"] else None  # not 'total': it is read after the items

    try:
        listing = wait_until(dead, timeout_s=30, what="a channel dead letter")
    except AssertionError as exc:  # say where the notification got stuck
        trace = http.get(f"/v1/events/{SOURCE}/{name}1/trace").json()
        status = http.get(f"/v1/channels/{name}").json()
        raise AssertionError(f"{exc}; trace {trace}; channel {status}") from None
    [item] = listing["items"]
    assert item["event"]["subject"] == customer and item["event"]["type"] == f"notifications.{name}"
    assert item["status"] is None and "profile.tier" in item["error"], item
    assert http.get(f"/v1/channels/{name}").json()["dead_letters"] == 1
    assert read_messages(gateway.path, name) == []  # nothing guessed, nothing sent


def test_a_template_missing_a_profile_field_dead_letters_the_notification(platform, client, http, tmp_path):
    with LocalGateway(tmp_path / "messages.jsonl") as gateway:
        strict_channel(http, client, gateway, "sms-strict")


def test_channel_dead_letters_replay_once_the_profile_is_fixed(platform, client, http, tmp_path):
    with LocalGateway(tmp_path / "messages.jsonl") as gateway:
        strict_channel(http, client, gateway, "sms-fixed")
        assert http.put("/v1/profiles/sms-fixed-carl", json={"tier": "gold"}).status_code == 200
        assert replay(http, "/v1/channels/sms-fixed/deadletters/replay") == {"replayed": 1}
        wait_until(lambda: read_messages(gateway.path, "sms-fixed"), timeout_s=30, what="the replayed message")
        [message] = read_messages(gateway.path, "sms-fixed")
    assert message["body"]["message"] == "Hello gold member sms-fixed-carl"
    assert http.get("/v1/channels/sms-fixed/deadletters").json()["total"] == 0


# --- webhooks with a projection and batches -----------------------------------------------------


def test_webhook_batches_carry_the_projected_events_signed(platform, client, http):
    secret = generate_secret()
    with Receiver() as receiver:
        sub = webhook_subscription(
            "batch-e2e", ["business.batch-every"], receiver.url, secrets=[secret], batch=5, max_in_flight=1
        )
        sub["fields"] = ["id", "subject", "data.events"]
        assert put(http, "subscription", "batch-e2e", sub).status_code == 200
        client.put_config(every_event_rule("batch-every", "batch.tick"))
        assert client.send([event(i, "batch.tick", prefix="bt") for i in range(23)]).accepted == 23
        receiver.wait_for(lambda seen: sum(len(r.json()) for r in seen) >= 23, timeout_s=30)
        wait_settled(http, "batch-e2e")
        seen = list(receiver.requests)

    delivered = [e for r in seen for e in r.json()]
    assert sorted(triggering(e) for e in delivered) == sorted(f"bt{i}" for i in range(23))
    assert all(set(e) == {"id", "subject", "data"} and set(e["data"]) == {"events"} for e in delivered)
    for request in seen:
        assert request.headers["content-type"] == "application/cloudevents-batch+json"
        assert 1 <= len(request.json()) <= 5
        assert spec_verify(secret, request.headers, request.body)
    assert len({r.headers["webhook-id"] for r in seen}) == len(seen)


# --- 9. trace -------------------------------------------------------------------------------


def test_trace_lists_the_webhook_delivery_of_an_event(platform, client, http):
    with Receiver() as receiver:
        sub = webhook_subscription("trace-e2e", ["business.trace-every"], receiver.url)
        assert put(http, "subscription", "trace-e2e", sub).status_code == 200
        client.put_config(every_event_rule("trace-every", "trace.tick"))
        assert client.send([event(1, "trace.tick", prefix="tr")]).accepted == 1
        [request] = receiver.wait_for(lambda seen: len(seen) >= 1, timeout_s=30)

    def delivered() -> dict[str, Any] | None:
        trace = http.get(f"/v1/events/{SOURCE}/tr1/trace").json()
        return trace if any(s["step"] == "delivery" for s in trace["steps"]) else None

    trace = wait_until(delivered, timeout_s=15, what="a delivery step in the trace")
    assert trace["status"] == "accepted"
    [matched] = [s for s in trace["steps"] if s["step"] == "matched"]
    assert matched["rule"] == "trace-every" and matched["output"] == request.json()["id"]
    [delivery] = [s for s in trace["steps"] if s["step"] == "delivery"]
    assert delivery["status"] == 200 and delivery["outcome"] == "delivered" and delivery["attempt"] == 1
    assert delivery["destination"] == "subscription/trace-e2e"
    assert delivery["event"] == f"esp/rule/trace-every/{matched['output']}"
