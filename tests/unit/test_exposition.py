"""``serve/exposition.py``: ESP's series out of Ray's agent text, named ``esp_*``."""

from __future__ import annotations

import re

from prometheus_client.parser import text_string_to_metric_families

from serve.exposition import DROPPED_LABELS, SCRAPED_PREFIX, esp_series

RAY_LABELS = 'Component="core_worker",NodeAddress="10.0.0.5",WorkerId="ab12"'
OTEL = 'otel_scope_name="ray._private.telemetry",otel_scope_schema_url="",otel_scope_version=""'
AGENT_TEXT = f"""\
# HELP ray_tasks Current number of tasks.
# TYPE ray_tasks gauge
ray_tasks{{State="RUNNING",{RAY_LABELS}}} 3.0
# HELP ray_esp_ingest_events_total Events received, by source and outcome.
# TYPE ray_esp_ingest_events_total counter
ray_esp_ingest_events_total{{{RAY_LABELS},{OTEL},outcome="accepted",reason="",source="app"}} 7.0
# HELP ray_esp_ingest_request_seconds Ingestion request latency.
# TYPE ray_esp_ingest_request_seconds histogram
ray_esp_ingest_request_seconds_bucket{{{RAY_LABELS},le="0.01",{OTEL}}} 1.0
ray_esp_ingest_request_seconds_bucket{{{RAY_LABELS},le="+Inf",{OTEL}}} 2.0
ray_esp_ingest_request_seconds_count{{{RAY_LABELS},{OTEL}}} 2.0
ray_esp_ingest_request_seconds_sum{{{RAY_LABELS},{OTEL}}} 0.5
# HELP ray_esp_partition_lag_entries Log entries not yet read, per partition.
# TYPE ray_esp_partition_lag_entries gauge
ray_esp_partition_lag_entries{{{OTEL}}} 4.0
process_open_fds 12.0
"""


def test_only_esp_series_are_kept_under_their_own_names():
    families = {f.name: f for f in text_string_to_metric_families(esp_series(AGENT_TEXT))}
    assert sorted(families) == ["esp_ingest_events", "esp_ingest_request_seconds", "esp_partition_lag_entries"]
    assert [f.type for f in families.values()] == ["counter", "histogram", "gauge"]
    assert families["esp_ingest_events"].documentation == "Events received, by source and outcome."
    (events,) = families["esp_ingest_events"].samples
    assert (events.name, events.value) == ("esp_ingest_events_total", 7.0)
    assert events.labels == {
        "Component": "core_worker",
        "NodeAddress": "10.0.0.5",
        "WorkerId": "ab12",
        "outcome": "accepted",
        "reason": "",
        "source": "app",
    }
    buckets = [s for s in families["esp_ingest_request_seconds"].samples if s.name.endswith("_bucket")]
    assert [(s.labels["le"], s.value) for s in buckets] == [("0.01", 1.0), ("+Inf", 2.0)]
    assert "otel_scope_name" not in buckets[0].labels
    (lag,) = families["esp_partition_lag_entries"].samples
    assert (lag.labels, lag.value) == ({}, 4.0)  # every label dropped: no empty braces left


def test_nothing_of_esp_gives_an_empty_answer():
    assert esp_series("# TYPE ray_tasks gauge\nray_tasks 1.0\n") == ""


def test_a_label_value_with_quotes_and_commas_is_kept_whole():
    line = 'ray_esp_x_total{otel_scope_name="a\\",b",reason="x,\\"y\\"",source="s"} 1.0'
    assert esp_series(line) == 'esp_x_total{reason="x,\\"y\\"",source="s"} 1.0\n'


def test_the_shipped_scrape_config_renames_and_drops_the_same_way():
    """Prometheus relabels with fully anchored RE2 regexes; Python's re agrees on these."""
    import yaml

    from tests.support.promql import SCRAPE_CONFIG

    (job,) = yaml.safe_load(SCRAPE_CONFIG.read_text())["scrape_configs"]
    rename, drop = job["metric_relabel_configs"]
    assert rename["source_labels"] == ["__name__"] and rename["target_label"] == "__name__"
    renamed = re.fullmatch(rename["regex"], SCRAPED_PREFIX + "rule_fires_total")
    assert renamed and renamed.expand(rename["replacement"].replace("$1", r"\1")) == "esp_rule_fires_total"
    assert re.fullmatch(rename["regex"], "ray_tasks") is None  # Ray's own keep their names
    assert (drop["action"], drop["regex"]) == ("labeldrop", DROPPED_LABELS)
