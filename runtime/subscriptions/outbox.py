"""The outbox: outputs fanned out to the streams of the subscriptions that want them.

Each output has a deterministic id; the emit script records the id and appends to every
subscriber stream in one atomic step, so replaying a partition after a crash never delivers an
output twice (invariant 3). The same step keeps each customer's last rule outputs (``esp why``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from runtime import keys
from runtime.log.partition_log import Fenced
from runtime.lua import read_script
from runtime.subscriptions.topics import Routes

FIRES_KEPT = 20  # per customer, all rules together: enough for the last few of each in ``esp why``
NOT_FIRES = ("atomic/", "sent/", "decision/")  # re-published inputs, decided contacts, decisions: not rule fires

if TYPE_CHECKING:
    import redis

_EMIT = read_script("runtime.subscriptions", "outbox_emit.lua")


@dataclass(frozen=True, slots=True)
class Publication:
    """One output ready to publish: its id, topic and CloudEvent."""

    id: str
    topic: str
    event: dict[str, Any]
    refs: tuple[tuple[str, str], ...] = ()  # (source, id) of the events that produced it, for the trace


class OutboxStorage(Protocol):
    """Publishing outputs, effectively once per output id within the horizon."""

    def publish(self, publications: list[Publication], router: Routes, *, fence: dict[int, int] | None = None) -> int:
        """Append each output not seen before to the streams ``router`` names for it, note it in
        the trace of the events in its ``refs``, apply its ``tag`` action to the customer's
        profile and keep it among the customer's last fires; an output already published does
        none of this. Returns how many were new."""
        ...


class Outbox:
    """:class:`OutboxStorage` in Redis: one Lua call per batch (``outbox_emit.lua``)."""

    def __init__(self, client: redis.Redis, *, horizon_s: int, maxlen: int) -> None:
        self._emit = client.register_script(_EMIT)
        self._horizon_ms = horizon_s * 1000
        self._maxlen = maxlen

    def publish(self, publications: list[Publication], router: Routes, *, fence: dict[int, int] | None = None) -> int:
        """Deliver to subscribers; returns how many were new (not seen before). With ``fence``
        (partition -> the publisher's ownership epoch), publish nothing and raise
        :class:`Fenced` if another runner has taken one of those partitions since."""
        if not publications:
            return 0
        fences = fence or {}
        argv: list[Any] = [self._horizon_ms, self._maxlen, len(publications), FIRES_KEPT, keys.EPOCHS, len(fences)]
        for partition, epoch in fences.items():
            argv += [partition, epoch]
        for pub in publications:
            streams, payload = routed(pub, router)
            hits = [keys.hits(source, event_id) for source, event_id in pub.refs]
            argv += [keys.emitted(pub.id), payload, len(streams), *streams, trace_note(pub), len(hits), *hits]
            change, fire = tag_change(pub), fire_record(pub)
            argv += [keys.profile(pub.event["subject"]), *change] if change else ["", "", ""]
            argv += [keys.fires(pub.event["subject"]), fire] if fire else ["", ""]
        try:
            return int(self._emit(keys=[], args=argv))
        except Exception as exc:  # the script's error reply arrives as redis.ResponseError
            if str(exc).startswith("FENCED "):
                raise Fenced([int(p) for p in str(exc).removeprefix("FENCED ").split(",")]) from exc
            raise


def routed(pub: Publication, router: Routes) -> tuple[list[str], bytes]:
    """The streams that want ``pub`` and what they get: its event with its topic."""
    event = {**pub.event, "topic": pub.topic}
    return router.streams(pub.topic, event), orjson.dumps(event)


def trace_note(pub: Publication) -> bytes:
    """What the trace of each event in ``pub.refs`` records about the output."""
    return orjson.dumps({"output": pub.id, "topic": pub.topic, "rule": pub.event.get("data", {}).get("rule")})


def tag_change(pub: Publication) -> tuple[str, str] | None:
    """A ``tag`` action's profile update ("set" or "clear", tag), applied once with the output."""
    change = pub.event.get("data", {}).get("tag")
    if not change:
        return None
    op = "set" if "set" in change else "clear"
    return op, change[op]


def fire_record(pub: Publication) -> bytes | None:
    """A rule output's entry in its customer's last fires, or None (atomic re-publications and
    other outputs are not rule fires)."""
    data = pub.event.get("data")
    if pub.id.startswith(NOT_FIRES) or not isinstance(data, dict) or "rule" not in data:
        return None
    fire = {
        "rule": data["rule"],
        "version": data.get("rule_version"),
        "topic": pub.topic,
        "id": pub.id,
        "time": pub.event.get("time"),
        "events": data.get("events", []),
    }
    return orjson.dumps(fire)


def last_fires(
    client: redis.Redis, customer: str, rule: str | None = None, limit: int = 5
) -> dict[str, list[dict[str, Any]]]:
    """The customer's last outputs per rule (one rule, or all), newest first: what did fire, next to
    the live state that says what has not yet. One read of a list of at most ``FIRES_KEPT``."""
    return pick_fires(client.lrange(keys.fires(customer), 0, -1), rule, limit)


def pick_fires(records: Iterable[bytes | str], rule: str | None, limit: int) -> dict[str, list[dict[str, Any]]]:
    """From fire records newest first: at most ``limit`` per rule, of ``rule`` or of all."""
    out: dict[str, list[dict[str, Any]]] = {}
    for raw in records:
        fire = orjson.loads(raw)
        if (rule is None or fire["rule"] == rule) and len(out.setdefault(fire["rule"], [])) < limit:
            out[fire["rule"]].append(fire)
    return out
