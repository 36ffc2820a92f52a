"""Backtesting: run one rule over historical events with the very engine the partition actors
use, in-process, and report who would have been reached and when."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

from runtime.config.documents import load_yaml_documents, parse_document
from runtime.errors import ConfigError, InputError
from runtime.events.envelope import Event, format_time_ms, validate_batch
from runtime.rules import Output, PartitionEngine, compile_rule
from runtime.rules.models import Rule


def load_rule(path: Path, name: str | None = None) -> Rule:
    """The rule document in ``path`` (the one called ``name`` if the file holds several)."""
    rules = [doc for _, raw in load_yaml_documents(path) if isinstance(doc := parse_document(raw), Rule)]
    if name is not None:
        rules = [r for r in rules if r.name == name]
    if len(rules) != 1:
        found = [r.name for r in rules]
        raise ConfigError(f"{path}: expected exactly one rule{f' named {name!r}' if name else ''}, found {found}")
    return rules[0]


def load_events(path: Path) -> list[dict[str, Any]]:
    """Envelopes from NDJSON, a JSON array, or Parquet (columns id, type, time, subject, data)."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    text = path.read_bytes().strip()
    try:
        if text.startswith(b"["):
            return orjson.loads(text)
        return [orjson.loads(line) for line in text.splitlines() if line.strip()]
    except orjson.JSONDecodeError as exc:
        raise InputError(f"{path}: not JSON or NDJSON: {exc}", reason="unparseable_body") from None


def replay(
    rule: Rule, items: list[dict[str, Any]], *, profiles: dict[str, dict[str, Any]] | None = None
) -> tuple[list[Output], list[Event], int, int]:
    """The rule's outputs over ``items`` taken in event-time order: (outputs, the ordered valid
    events, rejected items, customers with open state at the end)."""
    batch = validate_batch(items, source="backtest", received_at=0)
    ordered = sorted(batch.events, key=lambda e: e.time)
    engine = PartitionEngine([compile_rule(rule, version=0)])
    outputs = engine.on_events(ordered, profiles if engine.reads_profiles else None)
    if ordered:
        outputs += engine.on_timer(ordered[-1].time)  # absences whose wait ended within the history
    return outputs, ordered, len(batch.rejected), engine.customers


def backtest(
    rule: Rule, events: Iterable[dict[str, Any]], *, profiles: dict[str, dict[str, Any]] | None = None
) -> dict[str, Any]:
    """Fires, customers reached and fires per day, replaying ``events`` in event-time order."""
    items = list(events)
    outputs, ordered, rejected, open_state = replay(rule, items, profiles=profiles)
    return summary(rule, outputs, ordered, events=len(items), rejected=rejected, open_state=open_state)


def backtest_logged(
    rule: Rule, events: Iterable[Event], *, profiles: dict[str, dict[str, Any]] | None = None
) -> dict[str, Any]:
    """:func:`backtest` over events read back from the partition log (already validated)."""
    ordered = sorted(events, key=lambda e: e.time)
    engine = PartitionEngine([compile_rule(rule, version=0)])
    outputs = engine.on_events(ordered, profiles if engine.reads_profiles else None)
    if ordered:
        outputs += engine.on_timer(ordered[-1].time)
    return summary(rule, outputs, ordered, events=len(ordered), rejected=0, open_state=engine.customers)


def summary(
    rule: Rule, outputs: list[Output], ordered: list[Event], *, events: int, rejected: int, open_state: int
) -> dict[str, Any]:
    """What a backtest reports of a rule's ``outputs`` over the ``ordered`` events."""
    first_action = [o for o in outputs if o.topic == rule.then[0].topic] if rule.then else []
    per_day = Counter(o.event["time"][:10] for o in first_action)
    customers = Counter(o.event["subject"] for o in first_action)
    return {
        "rule": rule.name,
        "events": events,
        "rejected": rejected,
        "span": [format_time_ms(ordered[0].time), format_time_ms(ordered[-1].time)] if ordered else None,
        "fires": len(first_action),
        "outputs": len(outputs),
        "customers": len(customers),
        "most_fires_per_customer": max(customers.values(), default=0),
        "per_day": dict(sorted(per_day.items())),
        "first_fires": [
            {
                "customer": o.event["subject"],
                "time": o.event["time"],
                "events": [m["id"] for m in o.event["data"]["events"]],
            }
            for o in first_action[:5]
        ],
        "open_state_customers": open_state,
    }
