"""The outbox: outputs fanned out to the streams of the subscriptions that want them.

Each output has a deterministic id; the emit script records the id and appends to every
subscriber stream in one atomic step, so replaying a partition after a crash never delivers an
output twice (invariant 3). The same step keeps each customer's last rule outputs (``esp why``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
import redis

from runtime import keys
from runtime.lua import read_script
from runtime.subscriptions.topics import TopicRouter

FIRES_KEPT = 20  # per customer, all rules together: enough for the last few of each in ``esp why``
NOT_FIRES = ("atomic/", "sent/", "decision/")  # re-published inputs, decided contacts, decisions: not rule fires

_EMIT = read_script("runtime.subscriptions", "outbox_emit.lua")


@dataclass(frozen=True, slots=True)
class Publication:
    """One output ready to publish: its id, topic and CloudEvent."""

    id: str
    topic: str
    event: dict[str, Any]
    refs: tuple[tuple[str, str], ...] = ()  # (source, id) of the events that produced it, for the trace


class Outbox:
    def __init__(self, client: redis.Redis, *, horizon_s: int, maxlen: int) -> None:
        self._emit = client.register_script(_EMIT)
        self._horizon_ms = horizon_s * 1000
        self._maxlen = maxlen

    def publish(self, publications: list[Publication], router: TopicRouter) -> int:
        """Deliver to subscribers; returns how many were new (not seen before)."""
        argv: list[Any] = [self._horizon_ms, self._maxlen, 0, FIRES_KEPT]
        count = 0
        for pub in publications:
            event = {**pub.event, "topic": pub.topic}
            streams = router.streams(pub.topic, event)
            payload = orjson.dumps(event)
            note = orjson.dumps({"output": pub.id, "topic": pub.topic, "rule": pub.event.get("data", {}).get("rule")})
            hits = [keys.hits(source, event_id) for source, event_id in pub.refs]
            argv += [keys.emitted(pub.id), payload, len(streams), *streams, note, len(hits), *hits]
            argv += _tag_change(pub)
            argv += _fire(pub)
            count += 1
        if not count:
            return 0
        argv[2] = count
        return int(self._emit(keys=[], args=argv))


def _tag_change(pub: Publication) -> list[str]:
    """A ``tag`` action's profile update (applied once, with the output), or nothing."""
    change = pub.event.get("data", {}).get("tag")
    if not change:
        return ["", "", ""]
    op = "set" if "set" in change else "clear"
    return [keys.profile(pub.event["subject"]), op, change[op]]


def _fire(pub: Publication) -> list[Any]:
    """A rule output's entry in its customer's last fires, or nothing (atomic re-publications and
    other outputs are not rule fires)."""
    data = pub.event.get("data")
    if pub.id.startswith(NOT_FIRES) or not isinstance(data, dict) or "rule" not in data:
        return ["", ""]
    fire = {
        "rule": data["rule"],
        "version": data.get("rule_version"),
        "topic": pub.topic,
        "id": pub.id,
        "time": pub.event.get("time"),
        "events": data.get("events", []),
    }
    return [keys.fires(pub.event["subject"]), orjson.dumps(fire)]


def last_fires(
    client: redis.Redis, customer: str, rule: str | None = None, limit: int = 5
) -> dict[str, list[dict[str, Any]]]:
    """The customer's last outputs per rule (one rule, or all), newest first: what did fire, next to
    the live state that says what has not yet. One read of a list of at most ``FIRES_KEPT``."""
    out: dict[str, list[dict[str, Any]]] = {}
    for raw in client.lrange(keys.fires(customer), 0, -1):
        fire = orjson.loads(raw)
        if (rule is None or fire["rule"] == rule) and len(out.setdefault(fire["rule"], [])) < limit:
            out[fire["rule"]].append(fire)
    return out
