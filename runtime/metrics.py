"""Names, descriptions and labels of ESP's Prometheus metrics, in one place.

The values are recorded with Ray's metrics API (``serve/metrics.py``) and exported by every Ray
node on its metrics export port, where Ray prefixes each name with ``ray_``. ESP's own names are
the ones below: ``GET /metrics`` serves them without the prefix (``serve/exposition.py``), and
the scrape config in ``deploy/prometheus/`` renames them the same way when Prometheus scrapes
Ray's agents directly. The Grafana dashboard and alert rules in ``deploy/`` query these names.

Labels stay bounded by configuration (sources, rules, subscriptions, channels, partitions,
actors): never a customer, an event or an output id.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class MetricSpec:
    name: str
    kind: str  # counter | gauge | histogram
    description: str
    labels: tuple[str, ...] = ()
    boundaries: tuple[float, ...] = ()


# Ray's metrics agent replays every histogram observation one by one when it exports (every 10 s),
# at some 10-15 µs each: thousands a second (a webhook per event) make it burst a large part of a
# core, delaying everything else on the node. Beyond this many a second per histogram and label
# set, observations are sampled at random down to about this many; quantiles stay as they were,
# and the matching counters (deliveries, requests) still count everything.
HISTOGRAM_SAMPLES_PER_S = 100


class HistogramSampler:
    """Which observations of a histogram to record: every one while a label set had at most
    ``per_s`` in the previous second, else each with probability ``per_s / that count``."""

    def __init__(
        self,
        per_s: int = HISTOGRAM_SAMPLES_PER_S,
        clock: Callable[[], float] = time.monotonic,
        draw: Callable[[], float] = random.random,
    ) -> None:
        self._per_s, self._clock, self._draw = per_s, clock, draw
        self._second = 0
        self._seen: dict[Hashable, int] = {}  # this second's observations per key
        self._before: dict[Hashable, int] = {}  # the previous second's

    def keep(self, key: Hashable) -> bool:
        second = int(self._clock())
        if second != self._second:
            self._before = self._seen if second == self._second + 1 else {}
            self._seen, self._second = {}, second
        self._seen[key] = self._seen.get(key, 0) + 1
        rate = self._before.get(key, 0)
        return rate <= self._per_s or self._draw() * rate < self._per_s


LATENCY_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
SIZES = (1, 10, 100, 1000, 5000, 10_000, 50_000, 100_000)

INGEST_EVENTS = MetricSpec(
    "esp_ingest_events_total", "counter", "Events received, by source and outcome.", ("source", "outcome", "reason")
)
INGEST_REQUESTS = MetricSpec(
    "esp_ingest_requests_total",
    "counter",
    "Ingestion requests, by source and HTTP status (source empty when the request named none we know).",
    ("source", "status"),
)
INGEST_LATENCY = MetricSpec("esp_ingest_request_seconds", "histogram", "Ingestion request latency.", (), LATENCY_S)
INGEST_BATCH = MetricSpec("esp_ingest_batch_events", "histogram", "Events per ingestion request.", (), SIZES)
LOG_APPENDS = MetricSpec(
    "esp_log_appends_total",
    "counter",
    "Appends of the API replicas to the partition log; concurrent requests share one (group commit).",
)
PROCESSED = MetricSpec("esp_partition_events_total", "counter", "Events processed by partition actors.", ("actor",))
LATE = MetricSpec(
    "esp_late_events_total",
    "counter",
    "Events older than the newest event of their customer minus the allowed lateness, by what was done with them.",
    ("policy",),
)
RETRACTIONS = MetricSpec(
    "esp_retractions_total",
    "counter",
    "Late events showing that an output a rule already published no longer holds (outputs are not un-sent).",
    ("rule",),
)
EVENT_DELAY = MetricSpec(
    "esp_event_delay_seconds",
    "histogram",
    "How far behind its partition's newest event time log entries arrive: per partition and second, the "
    "largest such delay of an entry's oldest event (size ESP_REORDER_WAIT_MS / ESP_MAX_OUT_OF_ORDER_S from it).",
    ("partition",),
    (0.01, 0.1, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0),
)
POISON = MetricSpec(
    "esp_poison_entries_total",
    "counter",
    "Events, contact-policy requests and deliveries set aside (quarantine or dead letters, reason processing_error) "
    "after their processing raised on every try, by stage (partition, policy, delivery).",
    ("stage",),
)
RULE_FIRES = MetricSpec("esp_rule_fires_total", "counter", "Outputs produced by each rule.", ("rule",))
PUBLISHED = MetricSpec(
    "esp_outputs_published_total", "counter", "Outputs delivered to subscription streams.", ("actor",)
)
LAG = MetricSpec("esp_partition_lag_entries", "gauge", "Log entries not yet read, per partition.", ("partition",))
WATERMARK_DELAY = MetricSpec(
    "esp_partition_watermark_delay_seconds",
    "gauge",
    "How far the partition's watermark trails the wall clock (event time; large while backfilling history).",
    ("partition",),
)
PULLED = MetricSpec(
    "esp_subscription_events_pulled_total", "counter", "Events handed to pull subscribers.", ("subscription",)
)
ACKED = MetricSpec(
    "esp_subscription_events_acked_total", "counter", "Events acknowledged by subscribers.", ("subscription",)
)

DELIVERY_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
DELIVERED = MetricSpec(
    "esp_delivery_events_total", "counter", "Events delivered to webhook and channel receivers.", ("destination",)
)
RETRIED = MetricSpec(
    "esp_delivery_retries_total", "counter", "Delivery attempts that will be retried.", ("destination",)
)
DEAD_LETTERED = MetricSpec(
    "esp_delivery_dead_letters_total", "counter", "Events moved to a destination's dead letters.", ("destination",)
)
DELIVERY_LAG = MetricSpec(
    "esp_delivery_lag_seconds", "gauge", "Age of the oldest event not yet delivered, per destination.", ("destination",)
)
DELIVERY_LATENCY = MetricSpec(
    "esp_delivery_latency_seconds",
    "histogram",
    "From publication to the receiver's 2xx (retries included).",
    ("destination",),
    DELIVERY_S,
)
CONTACT_DECISIONS = MetricSpec(
    "esp_contact_decisions_total",
    "counter",
    "Contact-policy decisions on notify and task requests, by outcome (sent, held:<why>, suppressed:<why>, lost).",
    ("outcome",),
)

ACTOR_RESTARTS = MetricSpec(
    "esp_actor_restarts_total",
    "counter",
    "ESP actors Ray restarted after their process died, by role (partition, dispatcher, policy) and actor name.",
    ("role", "actor"),
)

SPECS: tuple[MetricSpec, ...] = tuple(v for v in list(globals().values()) if isinstance(v, MetricSpec))
"""Every metric ESP records (what the dashboard and the alert rules may query)."""
