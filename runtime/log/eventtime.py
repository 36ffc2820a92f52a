"""A partition's event-time clock: the watermark, late events, and the reorder buffer.

The watermark is the newest event time the partition has seen minus the out-of-order bound
(``ESP_MAX_OUT_OF_ORDER_S``). Events are held back until the watermark passes them and then go
to the rules in event-time order, so any disorder within the bound gives exactly the outputs of
the ordered stream. With a bound of 0 (the default) nothing waits; each log entry is still put
in time order. Once a partition has read all of its log, wall-clock time minus the bound moves
the watermark too, so a quiet stream does not hold events (or timers) forever.

An event older than the watermark minus the allowed lateness (``ESP_ALLOWED_LATENESS_S``) is
late: the partition runner counts it, records it for the trace, and then evaluates, drops or
quarantines it (``ESP_LATE_EVENTS``).

Pure logic: no clock, no Redis; the buffer is part of the partition's checkpoint.
"""

from __future__ import annotations

import heapq
import itertools
from typing import Any

import msgspec

from runtime.events.envelope import Event


class EventClock:
    def __init__(self, *, out_of_order_ms: int, lateness_ms: int, resume: dict[str, Any] | None = None) -> None:
        self.out_of_order_ms = out_of_order_ms
        self.lateness_ms = lateness_ms
        resume = resume or {}
        self.newest: int = int(resume.get("newest", 0))
        self._order = itertools.count()
        self._held: list[tuple[int, int, Event]] = []
        for event in msgspec.convert(resume.get("held", []), list[Event]):
            heapq.heappush(self._held, (event.time, next(self._order), event))

    @property
    def watermark(self) -> int:
        return self.newest - self.out_of_order_ms

    @property
    def held(self) -> int:
        return len(self._held)

    def late(self, events: list[Event]) -> list[Event]:
        """The events of a batch that are late against the watermark before it."""
        if not self.newest:
            return []
        cutoff = self.watermark - self.lateness_ms
        return [e for e in events if e.time < cutoff]

    def push(self, events: list[Event]) -> list[Event]:
        """Take a batch; return the events the watermark has now passed, in event-time order
        (arrival order among equal times)."""
        if not events:
            return []
        self.newest = max(self.newest, max(e.time for e in events))
        if not self.out_of_order_ms and not self._held:
            return sorted(events, key=_time)  # nothing waits: the common, fast case
        for event in events:
            heapq.heappush(self._held, (event.time, next(self._order), event))
        return self.release(self.watermark)

    def release(self, until_ms: int) -> list[Event]:
        """The held events at or before ``until_ms``, in event-time order."""
        held, ready = self._held, []
        while held and held[0][0] <= until_ms:
            ready.append(heapq.heappop(held)[2])
        return ready

    def snapshot(self) -> dict[str, Any]:
        return {"newest": self.newest, "held": [entry[2] for entry in sorted(self._held)]}


def _time(event: Event) -> int:
    return event.time
