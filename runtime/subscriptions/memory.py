"""The outbox in a process's memory, for unit tests: :class:`OutboxStorage` with the Redis
outbox's behaviour (an output id is published once within the horizon; its streams, trace
notes, tag action and last fires are written with it or not at all), plus reads of what it
wrote. Outputs are encoded by the same functions as in Redis. Not thread-safe."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson

from runtime.events.memory import MemoryProfileStore
from runtime.subscriptions.outbox import (
    FIRES_KEPT,
    Publication,
    fire_record,
    pick_fires,
    routed,
    tag_change,
    trace_note,
)
from runtime.subscriptions.topics import Routes


class MemoryOutbox:
    """:class:`OutboxStorage` in dictionaries; ``tag`` actions go to ``profiles`` when given.
    Streams keep their last ``maxlen`` entries (Redis keeps at least that many)."""

    def __init__(
        self,
        *,
        horizon_s: int,
        maxlen: int,
        profiles: MemoryProfileStore | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._horizon_s = horizon_s
        self._maxlen = maxlen
        self._profiles = profiles
        self._clock = clock  # seconds; a test may pass its own to step past the horizon
        self._published: dict[str, float] = {}  # output id -> when its dedupe entry expires
        self._streams: dict[str, list[bytes]] = {}
        self._notes: dict[tuple[str, str], list[bytes]] = {}
        self._fires: dict[str, list[bytes]] = {}  # newest first

    def publish(self, publications: list[Publication], router: Routes, *, fence: dict[int, int] | None = None) -> int:
        return sum(self._publish_one(pub, router) for pub in publications)

    def _publish_one(self, pub: Publication, router: Routes) -> bool:
        now = self._clock()
        if self._published.get(pub.id, now) > now:
            return False
        self._published[pub.id] = now + self._horizon_s
        streams, payload = routed(pub, router)
        for stream in streams:
            entries = self._streams.setdefault(stream, [])
            entries.append(payload)
            del entries[: -self._maxlen]
        for ref in pub.refs:
            self._notes.setdefault(ref, []).append(trace_note(pub))
        change, fire = tag_change(pub), fire_record(pub)
        if change and self._profiles is not None:
            self._profiles.change_tag(pub.event["subject"], change[1], present=change[0] == "set")
        if fire:
            fires = self._fires.setdefault(pub.event["subject"], [])
            fires.insert(0, fire)
            del fires[FIRES_KEPT:]
        return True

    def entries(self, stream: str) -> list[dict[str, Any]]:
        """The events appended to ``stream``, oldest first."""
        return [orjson.loads(raw) for raw in self._streams.get(stream, [])]

    def notes(self, source: str, event_id: str) -> list[dict[str, Any]]:
        """The outputs the event (``source``, ``event_id``) produced, as its trace shows them."""
        return [orjson.loads(raw) for raw in self._notes.get((source, event_id), [])]

    def last_fires(self, customer: str, rule: str | None = None, limit: int = 5) -> dict[str, list[dict[str, Any]]]:
        """As :func:`runtime.subscriptions.outbox.last_fires` reads them from Redis."""
        return pick_fires(self._fires.get(customer, []), rule, limit)
