"""No secret leaks: a source key, a webhook signing secret, a receiver credential, a subscriber
token and an operator token are planted, the platform is exercised (events fire a rule whose
output is delivered, signed, to a real receiver), and then the state directory (Redis data
and AOF included), the Ray session's logs, the config history, the audit trail and every GET
answer are scanned for each of them. The log lines of every ESP process are JSON with their
context, and secrets a request carries (in its credentials, in a field quoted by an error
message) are not in them."""

from __future__ import annotations

import base64
import json
import re
import time
from pathlib import Path

import httpx
import ray

from runtime.dev.client import EspClient
from runtime.redis_client import connect
from tests.e2e.helpers import admin_headers, event, every_event_rule
from tests.support.receiver import Receiver

SOURCE_KEY = "canary-source-key-4f1e9b7d2c"
WHSEC = "whsec_" + base64.b64encode(b"canary-signing-secret-4f1e9b").decode()
RECEIVER_CREDENTIAL = "canary-receiver-credential-4f1e9b"
SUBSCRIBER_TOKEN = "canary-subscriber-token-4f1e9b"
# Sent where ESP may keep them (a quarantined payload) but must never log them.
LOG_TOKEN = "esp_4f1e9b7d2c0a1b3e_" + "LogCanaryOperatorTokenSecretPart0123456789a"
LOG_WHSEC = "whsec_" + base64.b64encode(b"log-canary-signing-secret-4f1e9b").decode()
ESP_TEXT_LINE = re.compile(  # ESP's text format, or one of its messages printed bare (a process left unconfigured)
    r"^\d{4}-\d\d-\d\dT\S+Z (DEBUG|INFO|WARNING|ERROR|CRITICAL) (esp|runtime|actors|serve)\b"
    r"|ingest refused \(|quarantined \("
)


def first_attempt_fails(n: int, request: object) -> tuple[int, dict[str, str], float]:
    return (503 if n == 1 else 200), {}, 0.0  # the dispatcher logs a retry of the first delivery


def test_no_secret_is_kept_or_shown_in_clear(platform) -> None:
    with (
        Receiver(first_attempt_fails) as receiver,
        httpx.Client(base_url=platform.base_url, headers=admin_headers()) as http,
    ):
        made = http.post("/v1/tokens", json={"name": "canary-operator", "role": "operator"}).json()
        operator_token = made["token"]
        canaries = [SOURCE_KEY, WHSEC, WHSEC.removeprefix("whsec_"), RECEIVER_CREDENTIAL, SUBSCRIBER_TOKEN]
        canaries += [operator_token, operator_token.split("_", 2)[2]]  # esp_<id>_<secret>: the secret may hold "_"

        operator = {"Authorization": f"Bearer {operator_token}"}
        documents = [
            {"kind": "source", "name": "canary", "api_key": SOURCE_KEY},
            every_event_rule("canary-every", "canary.tick"),
            {"kind": "subscription", "name": "canary-pull", "topics": ["business.canary-every"]},
            {
                "kind": "subscription",
                "name": "canary-token",
                "topics": ["business.canary-every"],
                "token": SUBSCRIBER_TOKEN,
            },
        ]
        for doc in documents:
            answer = http.put(f"/v1/config/{doc['kind']}/{doc['name']}", json=doc, headers=operator)
            assert answer.status_code == 200, answer.text
        hook = {
            "kind": "subscription",
            "name": "canary-hook",
            "topics": ["business.canary-every"],
            "mode": "webhook",
            "webhook": {
                "url": receiver.url,
                "internal": True,
                "secrets": [WHSEC],
                "headers": {"X-Receiver-Auth": RECEIVER_CREDENTIAL},
                "retry": ["50ms"],
            },
        }
        assert http.put("/v1/config/subscription/canary-hook", json=hook).status_code == 200
        assert http.put("/v1/config/subscription/canary-hook", json={**hook, "description": "v2"}).status_code == 200

        with EspClient(platform.base_url, key=SOURCE_KEY) as sender:
            assert sender.send([event(i, "canary.tick", prefix="canary") for i in range(5)]).accepted == 5
        deadline = time.monotonic() + 60
        while len([r for r in receiver.requests if r.status == 200]) < 5 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len([r for r in receiver.requests if r.status == 200]) >= 5, "the webhook was not delivered"
        assert receiver.requests[0].headers["x-receiver-auth"] == RECEIVER_CREDENTIAL  # usable, yet never shown
        assert "webhook-signature" in receiver.requests[0].headers

        answers = [
            http.get(path).text
            for path in [
                "/v1/config/source",
                "/v1/config/source/canary",
                "/v1/config/source/canary/history",
                "/v1/config/subscription",
                "/v1/config/subscription/canary-hook",
                "/v1/config/subscription/canary-hook/history",
                "/v1/config/subscription/canary-token",
                "/v1/subscriptions",
                "/v1/subscriptions/canary-hook",
                "/v1/subscriptions/canary-token",
                "/v1/tokens",
                "/v1/audit?limit=10000",
                "/v1/events/canary/canary1/trace",
                "/v1/quarantine",
                "/v1/decisions/c1",
                "/metrics",
            ]
        ]
        answers.append(http.get("/v1/subscriptions/canary-pull/events", params={"max": 10}).text)

    _wait_aof_flushed(platform)
    leaks = {c: where for c in canaries if (where := _found(c, answers, platform.settings.state_dir))}
    assert not leaks, f"secrets found in clear: {leaks}"
    retries = [line for line in _esp_lines() if line["message"].startswith("subscription/canary-hook: attempt 1")]
    assert retries, "the dispatcher logged no retry of the first delivery"
    assert retries[0]["destination"] == "subscription/canary-hook" and retries[0]["subscription"] == "canary-hook"
    assert retries[0]["output_id"] and retries[0]["rule"] == "canary-every" and retries[0]["customer"]


def test_log_lines_are_json_with_context_and_carry_no_secret(platform) -> None:
    """Requests with secrets in their credentials and in fields an error message quotes; then
    every line of the Ray session's logs that an ESP process wrote must be JSON, and no secret
    may be in any log file."""
    with EspClient(platform.base_url) as admin:  # as the test above left it, also when run alone
        admin.put_config({"kind": "source", "name": "canary", "api_key": SOURCE_KEY})
    events = f"{platform.base_url}/v1/events"
    batch = [event(1, "canary.tick", prefix="log")]
    for credential in (LOG_TOKEN, LOG_WHSEC, SOURCE_KEY[:-1]):  # none is a source key
        refused = httpx.post(events, json=batch, headers={"Authorization": f"Bearer {credential}"})
        assert refused.status_code == 401
    quoted = [
        {**event(i, "canary.tick", prefix="log"), "time": secret} for i, secret in enumerate([LOG_TOKEN, LOG_WHSEC])
    ]
    with EspClient(platform.base_url, key=SOURCE_KEY) as sender:
        assert len(sender.send(quoted).rejected) == 2  # quarantined, and logged with the message that quotes them

    deadline = time.monotonic() + 30
    while len(_quarantine_lines()) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    quarantined = _quarantine_lines()
    assert {line["event_id"] for line in quarantined} == {"log0", "log1"}
    assert all(line["source"] == "canary" and line["component"] == "esp-api" for line in quarantined)
    assert all(line["reason"] == "invalid_time" for line in quarantined)
    assert any("got 'whsec_***'" in line["message"] for line in quarantined)

    components = {str(line["component"]).rstrip("0123456789") for line in _esp_lines()}
    assert {"esp-api", "esp-partition-", "esp-dispatcher-", "esp-policy-"} <= components
    assert any(line["message"].startswith("ingest refused (401)") for line in _esp_lines())
    assert not _text_lines(), f"ESP log lines that are not JSON: {_text_lines()[:5]}"
    logs = _session_logs()
    secrets = [LOG_TOKEN, LOG_TOKEN.rsplit("_", 1)[1], LOG_WHSEC, LOG_WHSEC.removeprefix("whsec_"), SOURCE_KEY, WHSEC]
    leaks = {s: [str(p) for p in logs.rglob("*") if p.is_file() and s.encode() in _read(p)] for s in secrets}
    assert not any(leaks.values()), f"secrets in the Ray session's logs: {leaks}"


def _session_logs() -> Path:
    return Path(ray._private.worker._global_node.get_session_dir_path()) / "logs"


def _worker_lines() -> list[str]:
    """Every line the worker processes (actors, Serve replicas) wrote to stdout and stderr."""
    paths = [*_session_logs().glob("worker-*.err"), *_session_logs().glob("worker-*.out")]
    return [line for path in paths for line in _read(path).decode(errors="replace").splitlines()]


def _esp_lines() -> list[dict]:
    """The JSON lines of ESP's processes (every line that starts with '{' must parse)."""
    parsed = [json.loads(line) for line in _worker_lines() if line.startswith("{")]
    return [line for line in parsed if str(line.get("component", "")).startswith("esp-")]


def _text_lines() -> list[str]:
    return [line for line in _worker_lines() if not line.startswith("{") and ESP_TEXT_LINE.search(line)]


def _quarantine_lines() -> list[dict]:
    """This test's quarantined events (the Ray session also holds the lines of earlier tests)."""
    return [
        line for line in _esp_lines() if line.get("event_id") in ("log0", "log1") and "quarantined" in line["message"]
    ]


def _found(canary: str, answers: list[str], state_dir: Path) -> list[str]:
    places = [f"GET answer {i}" for i, text in enumerate(answers) if canary in text]
    needle = canary.encode()
    roots = [state_dir, Path(ray._private.worker._global_node.get_session_dir_path()) / "logs"]
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file() and not path.is_symlink() and needle in _read(path):
                places.append(str(path))
    return places


def _wait_aof_flushed(platform, timeout_s: float = 30.0) -> None:
    """Write a marker after everything else and wait until it is on disk: the AOF is appended
    in order, so every secret written before it is in the files scanned next."""
    marker = f"canary-aof-marker-{time.time_ns()}"
    connect(platform.settings.effective_redis_url()).set(marker, 1)
    deadline = time.monotonic() + timeout_s
    while not any(marker.encode() in _read(p) for p in (platform.settings.state_dir).rglob("*.aof*")):
        assert time.monotonic() < deadline, f"the AOF did not reach the disk within {timeout_s}s"
        time.sleep(0.1)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def test_state_files_that_hold_secrets_are_private(platform) -> None:
    loose = []
    for path in platform.settings.state_dir.rglob("*"):
        if path.is_file() and re.search(r"(secret|token|\.conf$|platform\.json)", path.name):
            if path.stat().st_mode & 0o077:
                loose.append(f"{path} {oct(path.stat().st_mode & 0o777)}")
    assert not loose, f"secret-bearing files readable by others: {loose}"
