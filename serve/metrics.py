"""Ray metric objects built from the specs in ``runtime.metrics`` (created once per process).

The one helper of both shells, the Serve replicas and the actors: it lives on the HTTP side
because the actors may import ``serve`` (the platform deploys it) but ``serve`` never imports
the actors (the layer contract in pyproject.toml). Ray's metrics agent exports them all on one
port per node; ``GET /metrics`` relays it.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import ray
from ray.util import metrics as ray_metrics

from runtime.metrics import ACTOR_RESTARTS, HistogramSampler, MetricSpec

_sampler = HistogramSampler()


@cache
def metric(spec: MetricSpec) -> Any:
    """The process's one Ray metric for ``spec`` (Ray refuses a second one of the same name)."""
    if spec.kind == "counter":
        return ray_metrics.Counter(spec.name, description=spec.description, tag_keys=spec.labels)
    if spec.kind == "gauge":
        return ray_metrics.Gauge(spec.name, description=spec.description, tag_keys=spec.labels)
    return ray_metrics.Histogram(
        spec.name, description=spec.description, boundaries=list(spec.boundaries), tag_keys=spec.labels
    )


def observe(spec: MetricSpec, value: float, tags: dict[str, str] | None = None) -> None:
    """Record ``value`` in the histogram ``spec``, sampled above ``HISTOGRAM_SAMPLES_PER_S`` a
    second per label set (see ``runtime.metrics.HistogramSampler``)."""
    if _sampler.keep((spec.name, *(tags or {}).values())):
        metric(spec).observe(value, tags=tags)


def count_restart(role: str, actor: str) -> None:
    """Count in ``esp_actor_restarts_total`` that Ray restarted the calling actor (called from the
    actor's constructor; a first start counts nothing)."""
    if ray.get_runtime_context().was_current_actor_reconstructed:
        metric(ACTOR_RESTARTS).inc(1, tags={"role": role, "actor": actor})
