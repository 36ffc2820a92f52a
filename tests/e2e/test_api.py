"""Config, subscription and operations endpoints over real HTTP."""

from __future__ import annotations

import time

from tests.e2e.conftest import METRICS_PORT
from tests.e2e.helpers import as_admin, event, every_event_rule, read_exactly


def test_config_documents_are_validated_versioned_and_listed(platform):
    url = f"{platform.base_url}/v1/config"
    rule = every_event_rule("api-rule", "api.x")
    first = as_admin.put(f"{url}/rule/api-rule", json=rule)
    assert first.status_code == 200 and first.json()["version"] == 1
    second = as_admin.put(f"{url}/rule/api-rule", json={**rule, "priority": 70})
    assert second.json()["version"] == 2
    stored = as_admin.get(f"{url}/rule/api-rule").json()
    assert (stored["priority"], stored["version"]) == (70, 2)
    assert "api-rule" in [d["name"] for d in as_admin.get(f"{url}/rule").json()["items"]]

    bad = as_admin.put(f"{url}/rule/api-bad", json={**rule, "name": "api-bad", "when": {"event": "a.b", "count": 0}})
    assert bad.status_code == 422
    error = bad.json()
    assert error["reason"] == "invalid_config"
    assert error["errors"][0]["path"] == "when.count.gte" and error["errors"][0]["got"] == 0

    expr = as_admin.put(
        f"{url}/rule/api-expr", json={**rule, "name": "api-expr", "when": {"event": "a.b", "where": "data.x >"}}
    )
    assert (expr.status_code, expr.json()["reason"]) == (422, "invalid_expression")
    assert expr.json()["position"] is not None

    mismatch = as_admin.put(f"{url}/rule/other-name", json=rule)
    assert mismatch.status_code == 422
    assert as_admin.get(f"{url}/widget").status_code == 404
    assert as_admin.get(f"{url}/rule/nope").json()["reason"] == "not_found"

    assert as_admin.delete(f"{url}/rule/api-rule").json()["deleted"] is True
    assert as_admin.get(f"{url}/rule/api-rule").status_code == 404


def test_a_deleted_and_recreated_document_never_repeats_a_version(platform):
    """Outputs name the rule version that produced them: a re-created rule must not reuse one."""
    url = f"{platform.base_url}/v1/config/rule/api-reborn"
    rule = every_event_rule("api-reborn", "api.reborn")
    versions = []
    for _ in range(3):
        versions.append(as_admin.put(url, json=rule).json()["version"])
        assert as_admin.delete(url).json()["deleted"] is True
    versions.append(as_admin.put(url, json=rule).json()["version"])
    assert versions == [1, 2, 3, 4]
    assert as_admin.get(url).json()["version"] == 4


def test_source_keys_are_never_returned(platform):
    url = f"{platform.base_url}/v1/config/source/keyed"
    as_admin.put(url, json={"api_key": "a-very-secret-key-123456"}).raise_for_status()
    stored = as_admin.get(url).json()
    assert "api_key" not in stored and len(stored["api_key_sha256"]) == 64
    assert "a-very-secret" not in as_admin.get(f"{platform.base_url}/v1/config/source").text


def test_pull_ack_and_redelivery_over_http(platform, client):
    client.put_config(every_event_rule("api-pull", "pull.x"))
    client.put_config({"kind": "subscription", "name": "pull-sub", "topics": ["business.api-pull"]})
    client.send([event(i, "pull.x", prefix="pull") for i in range(20)])
    deadline = time.monotonic() + 30
    got: list = []
    while len(got) < 20 and time.monotonic() < deadline:
        got += client.pull("pull-sub", max_events=50, wait_s=1)["events"]
    assert len(got) == 20
    client.ack("pull-sub", [e["ack_id"] for e in got[:15]])
    time.sleep(platform.settings.visibility_timeout_s + 0.5)
    redelivered = client.pull("pull-sub", max_events=50, wait_s=1)
    assert sorted(e["id"] for e in redelivered["events"]) == sorted(e["id"] for e in got[15:])
    assert redelivered["cursor"] == max(
        (e["ack_id"] for e in redelivered["events"]), key=lambda i: tuple(map(int, i.split("-")))
    )
    response = as_admin.post(
        f"{platform.base_url}/v1/subscriptions/pull-sub/ack", json={"cursor": redelivered["cursor"]}
    )
    assert response.json() == {"acked": 5}
    assert as_admin.get(f"{platform.base_url}/v1/subscriptions/nope/events").status_code == 404
    assert as_admin.get(f"{platform.base_url}/v1/subscriptions/pull-sub/events", params={"max": 0}).status_code == 422


def test_health_readiness_and_metrics(platform, client):
    assert as_admin.get(f"{platform.base_url}/healthz").json() == {"status": "ok"}
    ready = as_admin.get(f"{platform.base_url}/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    client.send([event(i, "metrics.x", prefix="met") for i in range(10)])
    deadline = time.monotonic() + 60
    text = ""
    while time.monotonic() < deadline:
        text = as_admin.get(f"http://127.0.0.1:{METRICS_PORT}/metrics", timeout=10).text
        if "esp_ingest_events_total" in text and "esp_partition_events_total" in text:
            break
        time.sleep(0.25)  # polling until Ray's agent exports the new series
    assert "esp_ingest_events_total" in text and "esp_partition_events_total" in text
    assert 'outcome="accepted"' in text
    proxied = as_admin.get(f"{platform.base_url}/metrics", timeout=10)
    assert proxied.status_code == 200 and "esp_ingest_events_total" in proxied.text


def test_openapi_is_served(platform):
    paths = as_admin.get(f"{platform.base_url}/openapi.json").json()["paths"]
    assert {"/v1/events", "/v1/config/{kind}/{name}", "/v1/subscriptions/{name}/events"} <= set(paths)


def test_a_new_rule_applies_without_restart_and_records_its_version(platform, client):
    rule = every_event_rule("hot-rule", "hot.x")
    client.put_config({"kind": "subscription", "name": "hot", "topics": ["business.hot-rule"]})
    client.put_config(rule)
    client.send([event(1, "hot.x", prefix="hot")])
    client.put_config({**rule, "description": "second version"})
    client.send([event(2, "hot.x", prefix="hot")])
    received = read_exactly(platform, client, "hot", 2, timeout_s=30)
    versions = {e["data"]["events"][0]["id"]: e["data"]["rule_version"] for e in received}
    assert versions == {"hot1": 1, "hot2": 2}
