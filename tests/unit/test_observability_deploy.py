"""The Grafana dashboard and Prometheus alert rules in ``deploy/``: they parse, query only metrics
``runtime/metrics.py`` declares, and cover what operators must be told about. That a running ESP
exports each of them is ``tests/e2e/test_metrics_export.py``."""

from __future__ import annotations

import re

import pytest
import yaml

from runtime import metrics as m
from tests.support.promql import (
    ALERTS,
    SCRAPE_CONFIG,
    alert_rules,
    base_name,
    dashboard_panels,
    dashboard_queries,
    metric_names,
    parse,
    queried_names,
)

DECLARED = {spec.name: spec for spec in m.SPECS}
HISTOGRAMS = {spec.name for spec in m.SPECS if spec.kind == "histogram"}
DURATION = re.compile(r"^(\d+[smhdwy])+$")
REQUIRED_ALERTS = {
    "EspPartitionLagGrowing": m.LAG,
    "EspDeadLetters": m.DEAD_LETTERED,
    "EspIngestClientErrors": m.INGEST_REQUESTS,
    "EspIngestServerErrors": m.INGEST_REQUESTS,
    "EspActorRestarts": m.ACTOR_RESTARTS,
    "EspWatermarkDelayHigh": m.WATERMARK_DELAY,
    "EspContactSuppressionSpike": m.CONTACT_DECISIONS,
}


def test_every_metric_queried_is_declared_in_runtime_metrics():
    queried = queried_names()
    assert queried, "no queries found"
    undeclared = {name for name in queried if base_name(name, HISTOGRAMS) not in DECLARED}
    assert not undeclared, f"queried but not in runtime/metrics.py: {sorted(undeclared)}"
    assert all(name.startswith("esp_") for name in queried), "query ESP's own names, not ray_esp_*"


def test_histograms_are_queried_through_their_series_and_others_by_name():
    for name in queried_names():
        spec = DECLARED[base_name(name, HISTOGRAMS)]
        assert (spec.kind == "histogram") == (name != spec.name), name


def test_every_query_aggregates_only_declared_labels():
    """A ``by (...)`` on a label ESP does not record would group everything into one series."""
    for expr in dashboard_queries() + [r["expr"] for r in alert_rules()]:
        allowed = {"le"} | {
            label for name in metric_names(expr) for label in DECLARED[base_name(name, HISTOGRAMS)].labels
        }
        for group in re.findall(r"\bby \(([^)]*)\)", expr):
            labels = {label.strip() for label in group.split(",")}
            assert labels <= allowed, f"{expr!r} groups by {sorted(labels - allowed)}"


def test_the_alert_rules_are_prometheus_rules_covering_what_operators_must_hear():
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    assert all(set(g) == {"name", "rules"} for g in groups)
    rules = alert_rules()
    assert len({r["alert"] for r in rules}) == len(rules), "alert names are unique"
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        parse(rule["expr"])
        assert DURATION.match(rule.get("for", "0s")), rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
    by_name = {r["alert"]: metric_names(r["expr"]) for r in rules}
    for alert, spec in REQUIRED_ALERTS.items():
        assert spec.name in by_name.get(alert, set()), f"{alert} must query {spec.name}"


def test_the_scrape_config_loads_the_alert_rules():
    config = yaml.safe_load(SCRAPE_CONFIG.read_text())
    assert [(SCRAPE_CONFIG.parent / f).resolve() for f in config["rule_files"]] == [ALERTS.resolve()]


PANELS = [p for p in dashboard_panels() if p["type"] != "row"]


def test_the_dashboard_has_unique_ids_and_only_prometheus_targets():
    ids = [p["id"] for p in dashboard_panels()]
    assert len(ids) == len(set(ids))
    for panel in PANELS:
        assert panel["targets"], panel["title"]
        assert all(t["datasource"] == {"type": "prometheus", "uid": "${datasource}"} for t in panel["targets"])


@pytest.mark.parametrize(
    "spec",
    [
        m.INGEST_EVENTS,
        m.INGEST_REQUESTS,
        m.RULE_FIRES,
        m.LAG,
        m.WATERMARK_DELAY,
        m.DELIVERED,
        m.RETRIED,
        m.DEAD_LETTERED,
        m.CONTACT_DECISIONS,
        m.ACTOR_RESTARTS,
    ],
    ids=lambda spec: spec.name,
)
def test_the_dashboard_shows(spec):
    shown = {
        base_name(name, HISTOGRAMS) for panel in PANELS for t in panel["targets"] for name in metric_names(t["expr"])
    }
    assert spec.name in shown


def test_every_metric_is_documented_with_its_labels():
    docs = (SCRAPE_CONFIG.parents[2] / "docs" / "operations" / "metrics.md").read_text()
    rows = {row.split("|")[1].strip(" `"): row.split("|")[3] for row in docs.splitlines() if row.startswith("| `esp_")}
    for spec in m.SPECS:
        assert spec.name in rows, f"{spec.name} is not in docs/operations/metrics.md"
        assert all(f"`{label}`" in rows[spec.name] for label in spec.labels), spec.name
