"""A partition's event-time clock: the watermark and the reorder buffer.

Events wait in the buffer until the watermark passes them and then go to the rules in
event-time order (arrival order among equal times). The watermark is the lower of two bounds:

- event time: the newest event time seen minus ``out_of_order_ms`` (``ESP_MAX_OUT_OF_ORDER_S``);
- arrival time: the newest event time among the events that arrived ``reorder_wait_ms`` or
  more ago (``ESP_REORDER_WAIT_MS``). Arrival is when the event's log entry was appended (the
  ms of its stream id), so a replay decides exactly as the live run did; once the partition
  has read all of its log, the wall clock (``advance``).

So disorder gives exactly the outputs of the ordered stream when an event arrives within the
reorder wait of the events newer than it (concurrent senders: the request that carried older
events finished a little later), or within the out-of-order bound of the newest event time.
An event the watermark has already passed is evaluated at once, placed by the operators where
its time says (``runtime.rules.operators``); whether it is *late* is up to its own customer's
clock (``PartitionEngine.late``).

A partition that holds more than ``pack_above`` events keeps each run it holds from then on
packed (:class:`Packed`: a log entry's bytes, about 45 B an event against ~200 decoded) and
decodes the events again when they are released: under a backlog or at a high rate every event
waits out the reorder wait, and decoded they were most of a partition actor's memory.

How far behind the partition's newest event time each log entry's oldest event arrives is
counted in ``delays`` (for the metric and ``esp status``), so the bounds can be sized from
real traffic.

Pure logic: no clock, no Redis; the buffer is part of the partition's checkpoint.
"""

from __future__ import annotations

import bisect
import heapq
from array import array
from collections import deque
from collections.abc import Sequence
from operator import itemgetter
from typing import Any

import msgspec

from runtime.events.columns import EventColumns
from runtime.events.envelope import Event, event_time

DELAY_BUCKETS_MS = (0, 10, 100, 1_000, 2_000, 5_000, 10_000, 30_000, 60_000, 300_000, 3_600_000)
PACK_ABOVE = 2_048  # held events a partition keeps decoded before it packs the runs it holds


class Packed:
    """A run of events held as a log entry's bytes (as columns, about 45 B an event against
    ~200 decoded; under 16 events, as rows). A run that is a whole entry as read keeps the
    entry's bytes."""

    __slots__ = ("body", "size")

    def __init__(self, body: bytes, size: int) -> None:
        self.body, self.size = body, size

    @classmethod
    def of(cls, events: EventColumns) -> Packed:
        return cls(events.encode(), len(events))

    def __len__(self) -> int:
        return self.size

    def columns(self) -> EventColumns:
        return EventColumns.decode(self.body)


class EventClock:
    def __init__(
        self,
        *,
        out_of_order_ms: int,
        lateness_ms: int,
        reorder_wait_ms: int = 0,
        resume: dict[str, Any] | None = None,
        pack_above: int | None = None,  # PACK_ABOVE
    ) -> None:
        self.out_of_order_ms = out_of_order_ms
        self.lateness_ms = lateness_ms
        self.reorder_wait_ms = reorder_wait_ms
        self.pack_above = PACK_ABOVE if pack_above is None else pack_above
        resume = resume or {}
        self.newest: int = int(resume.get("newest", 0))
        # (arrival ms, newest event time once it arrived) of the arrivals still inside the wait
        self._arrivals: deque[tuple[int, int]] = deque(tuple(a) for a in resume.get("arrivals", ()))  # type: ignore[misc]
        self._settled: int = int(resume.get("settled", self.newest))  # newest event time that arrived long enough ago
        # the waiting events as runs, one per log entry, each sorted by event time, in a heap by
        # the time of their first event still held: (that time, arrival number, its index,
        # times, events, decoded or packed). Released by prefix: most entries arrive in order or
        # nearly, so this is a sort per entry and a bisection per run released, not a heap entry
        # per event, and a release touches only the runs it takes from (with small requests and a
        # reorder wait a partition holds a hundred runs or more)
        self._runs: list[tuple[int, int, int, list[int] | array[int], EventColumns | Packed]] = []
        self._arrived = 0  # runs held so far: their arrival numbers
        self._held = 0
        for start, body in resume.get("runs", ()):
            self._resume_run(start, body)
        # checkpoints written before runs were kept as log entries hold the events as rows
        self._hold(msgspec.convert(resume.get("held", []), list[Event]))
        self.delays = [0] * (len(DELAY_BUCKETS_MS) + 1)  # entries by how far behind the newest they arrived
        self.max_delay_ms = 0
        self.last_delay_ms: int | None = None  # of the last entry pushed (None: the partition's first)

    @property
    def watermark(self) -> int:
        bound = self.newest - self.out_of_order_ms
        return min(bound, self._settled) if self.reorder_wait_ms else bound

    @property
    def held(self) -> int:
        return self._held

    @property
    def oldest_held(self) -> int | None:
        """The event time of the oldest event still waiting, if any."""
        return self._runs[0][0] if self._runs else None

    def _hold(self, events: Sequence[Event]) -> None:
        """Hold a log entry's events as one run; past ``pack_above`` held, those the watermark
        does not release at once (the rest) as a second run, packed."""
        if not events:
            return
        ordered = EventColumns.of(events).ordered()  # stable: arrival order among equal times
        times = ordered.times
        cut = len(ordered) if self._held < self.pack_above else bisect.bisect_right(times, self.watermark)
        if cut == len(ordered):
            self._run(times, ordered)
        elif cut == 0:
            self._run(array("q", times), Packed.of(ordered))
        else:  # consecutive arrival numbers: the two keep the entry's order among equal times
            self._run(times[:cut], ordered[:cut])
            self._run(array("q", times[cut:]), Packed.of(ordered[cut:]))

    def _run(self, times: list[int] | array[int], items: EventColumns | Packed, start: int = 0) -> None:
        """Hold ``items`` from ``start`` on (``times``: all of theirs)."""
        if len(items) > start:
            heapq.heappush(self._runs, (times[start], self._arrived, start, times, items))
            self._arrived += 1
            self._held += len(items) - start

    def _resume_run(self, start: int, body: bytes) -> None:
        """A run from a checkpoint (``snapshot``): past ``pack_above`` held, kept packed."""
        events = EventColumns.decode(body)
        if self._held < self.pack_above:
            self._run(events.times, events, start)
        else:
            self._run(array("q", events.times), Packed(body, len(events)), start)

    def push(self, events: Sequence[Event], arrival_ms: int | None = None) -> Sequence[Event]:
        """Take a log entry's events (appended at ``arrival_ms``); return the events the
        watermark has now passed, in event-time order (arrival order among equal times)."""
        if not events:
            return []
        events = EventColumns.of(events)
        oldest, newest = min(events.times), max(events.times)
        self.last_delay_ms = None
        if self.newest:
            self._count_delay(self.newest - oldest)
        self.newest = max(self.newest, newest)
        if self.reorder_wait_ms:
            if arrival_ms is None:  # no arrival time (tests, backtests): nothing waits for later arrivals
                self._settled = self.newest
            else:
                self._arrivals.append((arrival_ms, self.newest))
                self._settle(arrival_ms)
        if not self.out_of_order_ms and not self.reorder_wait_ms and not self._held:
            return events.ordered()  # nothing waits: each entry is put in order
        self._hold(events)
        return self.release(self.watermark)

    def advance(self, arrival_ms: int) -> Sequence[Event]:
        """The arrival clock moved to ``arrival_ms`` with nothing new (the partition has read all
        of its log): release what the wait no longer holds."""
        if self.reorder_wait_ms:
            self._settle(arrival_ms)
        return self.release(self.watermark)

    def _settle(self, arrival_ms: int) -> None:
        arrivals, since = self._arrivals, arrival_ms - self.reorder_wait_ms
        while arrivals and arrivals[0][0] <= since:
            self._settled = max(self._settled, arrivals.popleft()[1])

    def release(self, until_ms: int) -> Sequence[Event]:
        """The held events at or before ``until_ms``, in event-time order."""
        runs = self._runs
        taken: list[tuple[int, EventColumns]] = []  # (arrival number, prefix)
        while runs and runs[0][0] <= until_ms:
            _, arrived, start, times, items = heapq.heappop(runs)
            items = _columns(items)  # what a packed run does not release now stays decoded
            end = bisect.bisect_right(times, until_ms, start)
            taken.append((arrived, items if start == 0 and end == len(times) else items[start:end]))
            if end < len(times):
                heapq.heappush(runs, (times[end], arrived, end, times, items))
        if not taken:
            return []
        if len(taken) == 1:
            ready = taken[0][1]
        else:  # the prefixes in arrival order, sorted stably: event-time order, arrival order among equal times
            taken.sort(key=itemgetter(0))  # by arrival number
            ready = EventColumns.merge([prefix for _, prefix in taken])
        self._held -= len(ready)
        return ready

    def _count_delay(self, delay_ms: int) -> None:
        delay_ms = self.last_delay_ms = max(delay_ms, 0)
        self.delays[bisect.bisect_left(DELAY_BUCKETS_MS, delay_ms)] += 1
        self.max_delay_ms = max(self.max_delay_ms, delay_ms)

    def delay_quantile_ms(self, q: float) -> int | None:
        """The bucket bound under which a fraction ``q`` of the entries arrived (None: none yet;
        -1: above the largest bucket)."""
        total = sum(self.delays)
        if not total:
            return None
        running = 0
        for i, count in enumerate(self.delays):
            running += count
            if running >= q * total:
                return DELAY_BUCKETS_MS[i] if i < len(DELAY_BUCKETS_MS) else -1
        return -1

    def held_events(self) -> list[Event]:
        """The events still waiting, in event-time order (arrival order among equal times)."""
        runs = sorted(self._runs, key=itemgetter(1))
        held = [e for _, _, start, _, items in runs for e in _columns(items)[start:]]
        return sorted(held, key=event_time)

    def snapshot(self) -> dict[str, Any]:
        """The clock for a checkpoint. The held runs go as log entries (their bytes as read or
        packed, else encoded in C) with where each still starts, in arrival order: a partition
        holding a reorder wait's worth of a busy stream checkpoints it without building an
        event per held event (a tenth of a partition actor's time at 120 k events/s)."""
        return {
            "newest": self.newest,
            "settled": self._settled,
            "arrivals": [list(a) for a in self._arrivals],
            "runs": [[start, _body(items)] for _, _, start, _, items in sorted(self._runs, key=itemgetter(1))],
        }


def _body(items: EventColumns | Packed) -> bytes:
    return items.body if type(items) is Packed else items.encode()  # type: ignore[union-attr]


def _columns(items: EventColumns | Packed) -> EventColumns:
    return items.columns() if type(items) is Packed else items  # type: ignore[return-value]
