"""Every metric the shipped Grafana dashboard and Prometheus alert rules query is exported by a
running ESP under its own name, by ``GET /metrics``, with the labels ``runtime/metrics.py``
declares.

Ray's agent exports a metric only once some process recorded a value, so the test first drives
what records each one: events accepted and refused, rule fires, an event that retracts an absence
rule's output, a late event, a pull subscription, webhooks that retry and dead-letter, a contact
decision, and a SIGKILLed policy actor that Ray restarts. ``esp_poison_entries_total`` is recorded
only when processing an entry fails on every try, which fails this module's platform on purpose:
``tests/e2e/test_poison.py`` checks it in ``GET /metrics`` on a platform of its own.
"""

from __future__ import annotations

import os
import signal
import time

import httpx
import ray
from prometheus_client.parser import text_string_to_metric_families

from runtime import metrics as m
from runtime.dev.client import EspClient
from tests.e2e.helpers import T0, as_admin, event, every_event_rule, read_exactly
from tests.e2e.test_delivery_http import webhook_subscription
from tests.e2e.test_policy_actor import policy_status
from tests.support.promql import base_name, queried_names
from tests.support.receiver import Receiver

CHECKED_ELSEWHERE = {m.POISON.name}  # tests/e2e/test_poison.py
SPECS = {spec.name: spec for spec in m.SPECS}
HISTOGRAMS = {spec.name for spec in m.SPECS if spec.kind == "histogram"}


def exported(platform) -> dict[str, list[dict[str, str]]]:
    """``GET /metrics`` parsed by prometheus-client: each sample name and its label sets."""
    text = as_admin.get(f"{platform.base_url}/metrics", timeout=10).text
    samples: dict[str, list[dict[str, str]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample.labels)
    return samples


def drive_every_metric(platform, client: EspClient) -> None:
    """Traffic that makes each metric the dashboard and the alerts query record a value."""
    configure_rules_and_subscriptions(platform)
    restart_the_policy_actor()  # the contact decision below is made by the restarted actor
    with Receiver(flaky) as ok_later, Receiver(refusing) as refuses, EspClient(platform.base_url) as admin:
        admin.put_config(webhook_subscription("mx-hook", ["business.mx-every"], ok_later.url))
        admin.put_config(webhook_subscription("mx-refused", ["business.mx-every"], refuses.url))
        assert client.send([event(i, "mx.tick", prefix="mx", customer=f"mx{i}") for i in range(5)]).accepted == 5
        assert client.send([event(0, "mx.offer", prefix="mxo", customer="mx-offer")]).accepted == 1
        refused = httpx.post(f"{platform.base_url}/v1/events", json=[], headers={"Authorization": "Bearer nope"})
        assert refused.status_code == 401
        retract_and_be_late(platform, client, admin)
        ok_later.wait_for(lambda seen: len(seen) >= 6, timeout_s=60)  # one retried, five delivered
        refuses.wait_for(lambda seen: len(seen) >= 5, timeout_s=60)
        assert len(read_exactly(platform, admin, "mx-decided", 1)) == 1


def configure_rules_and_subscriptions(platform) -> None:
    unpaid = {"absence": {"after": {"event": "mx.order"}, "missing": {"event": "mx.pay"}, "within": "10s"}}
    notify = {"notify": {"channel": "mx-sms", "template": "offer"}}
    with EspClient(platform.base_url) as admin:
        admin.put_config(every_event_rule("mx-every", "mx.tick"))
        admin.put_config({"kind": "subscription", "name": "mx-pull", "topics": ["business.mx-every"]})
        admin.put_config({"kind": "rule", "name": "mx-unpaid", "when": unpaid, "then": [{"emit": "mx-unpaid"}]})
        admin.put_config({"kind": "subscription", "name": "mx-unpaid", "topics": ["business.mx-unpaid"]})
        admin.put_config(every_event_rule("mx-other", "mx.other"))  # a matched event moves its customer's clock
        admin.put_config({"kind": "rule", "name": "mx-offer", "when": {"event": "mx.offer"}, "then": [notify]})
        admin.put_config({"kind": "subscription", "name": "mx-decided", "topics": ["decisions"]})


def restart_the_policy_actor() -> None:
    first = policy_status()
    os.kill(first["pid"], signal.SIGKILL)
    policy_status(other_than=first["pid"])


def flaky(n, request):
    return (503, {}, 0.0) if n == 1 else (200, {}, 0.0)


def refusing(n, request):  # a 4xx other than 410: dead letters at once
    return 400, {}, 0.0, "no such customer"


def retract_and_be_late(platform, client: EspClient, admin: EspClient) -> None:
    """'Order not paid within 10 s' fires, then the payment 5 s after the order arrives (a
    retraction); then a customer's event 2 h behind its newest (late: beyond the allowed 1 h)."""
    order = {"id": "mx-order", "type": "mx.order", "time": T0, "subject": "mx-buyer", "data": {}}
    later = {**order, "id": "mx-later", "type": "mx.other", "time": T0 + 60_000}  # moves time past the wait
    assert client.send([order, later]).accepted == 2
    assert len(read_exactly(platform, admin, "mx-unpaid", 1)) == 1  # the wait fired
    assert client.send([{**order, "id": "mx-pay", "type": "mx.pay", "time": T0 + 5_000}]).accepted == 1
    assert len(read_exactly(platform, admin, "mx-pull", 5)) == 5  # pulled and acked; everything processed
    # After the payment (this jump in event time would expire its wait), in two requests further
    # apart than the reorder wait, which would otherwise put them back in event-time order.
    for hours in (2, 0):
        late = {**later, "id": f"mx-late{hours}", "subject": "mx-late", "time": T0 + hours * 3_600_000}
        assert client.send([late]).accepted == 1
        time.sleep(platform.settings.reorder_wait_ms / 1000 + 1)


def test_every_metric_the_dashboard_and_alerts_query_is_exported(platform, client):
    drive_every_metric(platform, client)
    wanted = queried_names() - CHECKED_ELSEWHERE
    deadline, samples = time.monotonic() + 90, {}
    while time.monotonic() < deadline:  # Ray's agent takes a few seconds to export new values
        samples = exported(platform)
        if wanted <= samples.keys():
            break
        time.sleep(0.25)
    assert sorted(wanted - samples.keys()) == []
    for name in wanted:  # labelled per source, rule, destination, partition... as declared
        declared = set(SPECS[base_name(name, HISTOGRAMS)].labels)
        assert all(declared <= labels.keys() for labels in samples[name]), (name, samples[name][0])


def test_metrics_are_only_esp_series_under_their_own_names(platform, client):
    assert client.send([event(0, "mx.own", prefix="own")]).accepted == 1
    httpx.post(f"{platform.base_url}/v1/events", json=[], headers={"Authorization": "Bearer nope"})
    deadline, samples = time.monotonic() + 90, {}
    while time.monotonic() < deadline and not (samples := exported(platform)).get("esp_ingest_requests_total"):
        time.sleep(0.25)
    assert samples and all(name.startswith("esp_") for name in samples), sorted(samples)[:5]  # no Ray series
    labels = {label for label_sets in samples.values() for label_set in label_sets for label in label_set}
    assert not any(label.startswith("otel_scope_") for label in labels), labels
    requests = {(r["source"], r["status"]) for r in samples["esp_ingest_requests_total"]}
    assert requests >= {("e2e", "202"), ("", "401")}  # per source; empty when none was named


def delay_observations(platform) -> float:
    """How many values ``esp_event_delay_seconds`` holds, over every partition and actor."""
    text = as_admin.get(f"{platform.base_url}/metrics", timeout=10).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == f"{m.EVENT_DELAY.name}_count"
    )


def test_entry_delays_are_observed_once_per_partition_and_second_not_once_per_entry(platform, client):
    """A hundred log entries of one partition (one customer, a request each) within a second or
    two make one observation per second at most: one per entry would make Ray's agent replay
    every one of them at each export, a burst that delays the events in flight. (The earlier
    tests' last event may add one observation of its own.)"""
    before = delay_observations(platform)
    started = time.monotonic()
    for i in range(100):
        assert client.send([event(i, "mx.delay", prefix="mxd", customer="mx-delay")]).accepted == 1
    sending_s = time.monotonic() - started
    export_every_s = ray._config.metrics_report_interval_ms() / 1000  # how often values reach the agent
    time.sleep(export_every_s + 2)  # the actor's next observation, then Ray's next export
    after = delay_observations(platform)
    assert 1 <= after - before <= sending_s + 3, (after - before, sending_s)
