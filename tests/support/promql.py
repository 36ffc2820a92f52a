"""The metric names the shipped Grafana dashboard and Prometheus alert rules query.

Expressions are parsed with ``promql-parser`` (the Prometheus grammar), so a query that does not
parse fails here, and names are read from its selectors, not guessed from the text. Grafana's
variables (``$__rate_interval``, ``${datasource}``) are replaced by values first.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import promql_parser
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DASHBOARD = DEPLOY / "grafana" / "esp-dashboard.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yaml"
SCRAPE_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")

_GRAFANA_RANGE = re.compile(r"\$__(rate_)?interval|\$\{__(rate_)?interval\}")
_GRAFANA_VARIABLE = re.compile(r"\$\{?\w+\}?")


def dashboard_panels(path: Path = DASHBOARD) -> list[dict[str, Any]]:
    """The dashboard's panels, those inside rows included."""
    panels = json.loads(path.read_text())["panels"]
    return [p for panel in panels for p in (panel, *panel.get("panels", []))]


def dashboard_queries(path: Path = DASHBOARD) -> list[str]:
    return [t["expr"] for panel in dashboard_panels(path) for t in panel.get("targets", [])]


def alert_rules(path: Path = ALERTS) -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(path.read_text())["groups"] for rule in group["rules"]]


def alert_queries(path: Path = ALERTS) -> list[str]:
    return [rule["expr"] for rule in alert_rules(path)]


def parse(expr: str) -> Any:
    """The expression's syntax tree, Grafana's variables replaced (a range by 5m, others by ".*")."""
    return promql_parser.parse(_GRAFANA_VARIABLE.sub(".*", _GRAFANA_RANGE.sub("5m", expr)))


def metric_names(expr: str) -> set[str]:
    """The metric names ``expr`` selects, as queried (a histogram's ``_bucket`` included)."""
    return set(_selected(parse(expr)))


def _selected(node: Any) -> Iterator[str]:
    if isinstance(node, promql_parser.VectorSelector):
        yield node.name
    elif isinstance(node, promql_parser.MatrixSelector):
        yield from _selected(node.vector_selector)
    elif isinstance(node, promql_parser.BinaryExpr):
        yield from _selected(node.lhs)
        yield from _selected(node.rhs)
    elif isinstance(node, promql_parser.Call):
        for arg in node.args:
            yield from _selected(arg)
    elif isinstance(node, (promql_parser.AggregateExpr, promql_parser.ParenExpr, promql_parser.UnaryExpr)):
        yield from _selected(node.expr)
    elif isinstance(node, promql_parser.SubqueryExpr):
        yield from _selected(node.expr)


def queried_names() -> set[str]:
    """Every metric name the dashboard and the alert rules query."""
    return {name for expr in dashboard_queries() + alert_queries() for name in metric_names(expr)}


def base_name(name: str, histograms: set[str]) -> str:
    """``name`` without a histogram series suffix when what is left is one of ``histograms``."""
    for suffix in HISTOGRAM_SUFFIXES:
        if name.endswith(suffix) and name.removesuffix(suffix) in histograms:
            return name.removesuffix(suffix)
    return name
