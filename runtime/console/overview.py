"""The overview's figures out of ESP's Prometheus text (``esp_*`` series, as ``GET /metrics``
serves them): counters summed over the processes that recorded them, grouped by the label the
page shows; gauges by partition or destination (the largest value any process reports)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from runtime import metrics as m

INGEST_OUTCOMES = ("accepted", "duplicate", "rejected", "dropped", "filtered")


def samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    """(name, labels, value) of every sample of ``text``."""
    out = []
    for family in text_string_to_metric_families(text):
        out += [(s.name, s.labels, s.value) for s in family.samples]
    return out


def _is(name: str, spec: m.MetricSpec) -> bool:
    return name == spec.name or (spec.kind == "counter" and name + "_total" == spec.name)


def summarize(text: str) -> dict[str, Any]:
    """Per source (events by outcome), per rule (fires), per partition (lag, watermark delay),
    per destination (delivered, retries, dead letters) and per contact decision outcome."""
    sources: dict[str, dict[str, float]] = defaultdict(lambda: dict.fromkeys(INGEST_OUTCOMES, 0.0))
    rules: dict[str, float] = defaultdict(float)
    partitions: dict[str, dict[str, float]] = defaultdict(dict)
    destinations: dict[str, dict[str, float]] = defaultdict(lambda: {"delivered": 0.0, "retries": 0.0, "dead": 0.0})
    decisions: dict[str, float] = defaultdict(float)
    counters = {m.DELIVERED.name: "delivered", m.RETRIED.name: "retries", m.DEAD_LETTERED.name: "dead"}
    for name, labels, value in samples(text):
        if _is(name, m.INGEST_EVENTS):
            outcome = labels.get("outcome", "")
            if outcome in INGEST_OUTCOMES:
                sources[labels.get("source", "")][outcome] += value
        elif _is(name, m.RULE_FIRES):
            rules[labels.get("rule", "")] += value
        elif name in (m.LAG.name, m.WATERMARK_DELAY.name):
            field = "lag" if name == m.LAG.name else "watermark_delay_s"
            part = partitions[labels.get("partition", "")]
            part[field] = max(part.get(field, value), value)
        elif any(_is(name, spec) for spec in (m.DELIVERED, m.RETRIED, m.DEAD_LETTERED)):
            key = next(v for k, v in counters.items() if _is(name, m.MetricSpec(k, "counter", "")))
            destinations[labels.get("destination", "")][key] += value
        elif _is(name, m.CONTACT_DECISIONS):
            decisions[labels.get("outcome", "")] += value
    return {
        "sources": dict(sorted(sources.items())),
        "rules": dict(sorted(rules.items())),
        "partitions": dict(sorted(partitions.items(), key=lambda kv: int(kv[0]) if kv[0].isdigit() else -1)),
        "destinations": dict(sorted(destinations.items())),
        "decisions": dict(sorted(decisions.items())),
    }
