"""ESP's series out of a Ray metrics agent's Prometheus text, under ESP's own names.

Ray's agent exports every metric recorded with ``ray.util.metrics`` as ``ray_<name>``, next to
Ray's own series (``ray_tasks``, ``ray_node_mem_used``, ...). ``GET /metrics`` serves only ESP's,
renamed ``ray_esp_*`` → ``esp_*`` (the names in ``runtime/metrics.py``), so that scraping the API
gives the names the dashboard and alert rules in ``deploy/`` query. The labels Ray adds are kept
(``NodeAddress``, ``WorkerId``: one series per process, so queries sum over them), except the
OpenTelemetry scope labels (``otel_scope_*``), which say only which Ray module recorded the
value. Ray's own series stay on the agent's port, unchanged, for whoever scrapes it.
``deploy/prometheus/prometheus.yml`` applies the same rename and label drop
(``metric_relabel_configs``) when Prometheus scrapes the agents directly.

Pure text in, text out: no Ray, no HTTP.
"""

from __future__ import annotations

import re

RAY_PREFIX = "ray_"
ESP_PREFIX = "esp_"
SCRAPED_PREFIX = RAY_PREFIX + ESP_PREFIX  # how Ray's agent names ESP's metrics
DROPPED_LABELS = "otel_scope_.*"  # the labels left out, as the scrape config's labeldrop regex
_DROPPED = re.compile(r'(?<=[{,])otel_scope_\w*="(?:[^"\\]|\\.)*",?')  # one such label="value" pair


def esp_series(ray_text: str) -> str:
    """The ``ray_esp_*`` samples and their ``# HELP``/``# TYPE`` lines of ``ray_text``, renamed
    ``esp_*``; every other line (Ray's own metrics) left out."""
    kept = [renamed for line in ray_text.splitlines() if (renamed := _esp_line(line)) is not None]
    return "\n".join(kept) + "\n" if kept else ""


def _esp_line(line: str) -> str | None:
    """``line`` without the ``ray_`` of its metric name and its ``otel_scope_*`` labels if the
    metric is ESP's, else None."""
    if line.startswith("#"):  # "# HELP <name> ...", "# TYPE <name> <kind>"
        words = line.split(" ", 3)
        if len(words) >= 3 and words[2].startswith(SCRAPED_PREFIX):
            return " ".join([*words[:2], words[2].removeprefix(RAY_PREFIX), *words[3:]])
        return None
    if not line.startswith(SCRAPED_PREFIX):
        return None
    return _DROPPED.sub("", line.removeprefix(RAY_PREFIX)).replace(",}", "}").replace("{}", "")
