"""Ray metric objects built from the specs in ``runtime.metrics`` (created once per process)."""

from __future__ import annotations

from functools import cache
from typing import Any

from ray.util import metrics as ray_metrics

from runtime.metrics import MetricSpec


@cache
def metric(spec: MetricSpec) -> Any:
    if spec.kind == "counter":
        return ray_metrics.Counter(spec.name, description=spec.description, tag_keys=spec.labels)
    if spec.kind == "gauge":
        return ray_metrics.Gauge(spec.name, description=spec.description, tag_keys=spec.labels)
    return ray_metrics.Histogram(
        spec.name, description=spec.description, boundaries=list(spec.boundaries), tag_keys=spec.labels
    )
