"""Group commit: the appends of concurrent requests to the partition log, made as one.

While two appends run, the requests that reach the log queue up; when one returns, the first
of them leads the next append for all of them. A hundred-event request touches about 50 of the
64 partitions, so four of them appended together make about a third of the log entries (and of
the append script's per-partition work) that four appends would, and the partition actors read
fewer, larger entries.

A request announces itself when it arrives (:meth:`GroupCommit.arrive`), before its body is
decoded. A leader about to append while other requests are still on their way waits for them
up to ``linger_s`` (``ESP_APPEND_LINGER_MS``), so that they go in its append rather than each in
its own; a request that finds no other on its way appends at once, so a lone sender never
waits. Concurrent senders rarely reach the log within one append of each other (the appends are
short next to the decoding before them), so without the wait nearly every request appended
alone.

Each request still gets its own answer: which of its events were duplicates. Events of one
group with the same id count once, for the request that came first (as within one request);
the others are duplicates for theirs. A failed append fails every request of the group, and
their retries find the events that did go in already seen (as for a request alone).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field

from runtime.events.envelope import Event
from runtime.log.partition_log import Appended, LogAppender

GROUP_LEADERS = 2  # appends of small requests at once
ALONE_EVENTS = 1_000  # a request this large appends at once, beside the others: see GroupCommit
GROUP_MAX_EVENTS = 5_000  # per append of a group: a longer queue goes in more than one
LINGER_S = 0.02  # how long a leader waits for requests on their way (ESP_APPEND_LINGER_MS)


@dataclass(eq=False, slots=True)
class Arrival:
    """A request on its way to the log: from :meth:`GroupCommit.arrive` until it appends (or
    leaves: it failed, or it is large enough to append alone)."""

    on_the_way: bool = True


@dataclass(eq=False, slots=True)
class _Request:
    by_partition: dict[int, list[Event]]
    source: str
    now_ms: int
    horizon_s: int | None
    config_version: int | None
    events: int
    ready: threading.Event = field(default_factory=threading.Event)  # answered, or asked to lead
    lead: bool = False
    result: list[Appended] | None = None
    error: BaseException | None = None


class GroupCommit:
    """:meth:`append` as :meth:`PartitionLog.append` answers it for one request (the events of
    one source, ids unique within the request), for requests on any number of threads.

    Up to ``leaders`` appends run at once, each led by the thread of the request it started
    with; requests that find them all running queue, and the next leader takes the queue. With
    one, a request arriving during an append waited for it even when no group formed: four
    senders of 100-event requests acknowledged 5-9 % fewer events/s. A leader first gathers:
    while requests that announced themselves (:meth:`arrive`) are still on their way, it waits
    for them up to ``linger_s``, and requests reaching the log meanwhile queue behind it. Only
    requests under ``alone_events`` events queue: a large request already fills its partitions'
    entries, and behind its long append the others would wait for its Redis time instead of
    doing their own Python work meanwhile (4 senders of 10,000-event requests acknowledged
    87,000-92,000 events/s appending alone, 66,000 grouped)."""

    def __init__(
        self,
        log: LogAppender,
        *,
        leaders: int = GROUP_LEADERS,
        alone_events: int = ALONE_EVENTS,
        max_events: int = GROUP_MAX_EVENTS,
        linger_s: float = LINGER_S,
    ) -> None:
        self._log = log
        self._leaders = leaders
        self._alone_events = alone_events
        self._max_events = max_events
        self._linger_s = linger_s
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # a request queued, or one on its way left
        self._queue: deque[_Request] = deque()
        self._leading = 0  # appends running, or being handed over to a queued request
        self._coming = 0  # requests on their way (arrived, not yet appending)
        self._gathering = 0  # leaders waiting for them: requests reaching the log queue behind them
        self.appends = 0  # made so far (esp_log_appends_total)

    def arrive(self) -> Arrival:
        """Announce a request on its way to the log; :meth:`append` (with it) or :meth:`leave`
        ends its way."""
        with self._lock:
            self._coming += 1
        return Arrival()

    def leave(self, arrival: Arrival) -> None:
        """The request will not append after all, or not in a group (a no-op once it left)."""
        with self._lock:
            self._left(arrival)

    def sized(self, arrival: Arrival | None, events: int) -> None:
        """The request turned out to hold ``events`` events: one with none, or large enough to
        append alone, leaves at once, so that no group waits for it."""
        if arrival is not None and (not events or events >= self._alone_events):
            self.leave(arrival)

    def _left(self, arrival: Arrival | None) -> None:  # under the lock
        if arrival is not None and arrival.on_the_way:
            arrival.on_the_way = False
            self._coming -= 1
            self._changed.notify_all()

    def append(
        self,
        by_partition: dict[int, list[Event]],
        *,
        now_ms: int,
        horizon_s: int | None = None,
        config_version: int | None = None,
        arrival: Arrival | None = None,
    ) -> list[Appended]:
        """``arrival``: what :meth:`arrive` gave the request, which it leaves here."""
        events = sum(len(e) for e in by_partition.values())
        self.sized(arrival, events)
        if not events:
            return []
        source = next(iter(by_partition.values()))[0].source
        request = _Request(by_partition, source, now_ms, horizon_s, config_version, events)
        if events >= self._alone_events:
            self._append_together([request])
        else:
            self._join(request, arrival)
        if request.error is not None:
            raise request.error
        assert request.result is not None
        return request.result

    def _join(self, request: _Request, arrival: Arrival | None) -> None:
        """Lead an append with ``request`` if fewer than ``leaders`` run and none gathers, else
        queue it until a leader answers it or hands it the lead."""
        with self._lock:
            self._left(arrival)
            if self._leading < self._leaders and not self._gathering:
                self._leading += 1
                request.lead = True
            else:
                self._queue.append(request)
        if not request.lead:
            request.ready.wait()  # answered, or handed the lead
        if request.lead:
            self._lead(request)

    def _lead(self, first: _Request) -> None:
        """Append ``first`` and the requests queued behind it, answer them, and hand the lead
        to the next request queued meanwhile, if any. Requests still on their way are waited
        for first, up to ``linger_s``."""
        with self._lock:
            if self._coming and self._linger_s > 0:
                self._gather(first)
            group, total = [first], first.events
            while self._queue and total + self._queue[0].events <= self._max_events:
                total += self._queue[0].events
                group.append(self._queue.popleft())
        try:
            by_kind: dict[tuple[str, int | None], list[_Request]] = {}
            for request in group:
                by_kind.setdefault((request.source, request.horizon_s), []).append(request)
            for requests in by_kind.values():
                self._append_together(requests)
        except BaseException as exc:  # every request of the group fails with it
            for request in group:
                if request.result is None:
                    request.error = exc
        finally:
            with self._lock:  # a gathering leader takes the queue itself
                successor = self._queue.popleft() if self._queue and not self._gathering else None
                if successor is not None:
                    successor.lead = True
                else:
                    self._leading -= 1
            for request in group[1:]:
                request.ready.set()
            if successor is not None:
                successor.ready.set()

    def _gather(self, first: _Request) -> None:  # under the lock
        """Wait while requests are on their way, up to ``linger_s`` and until the group is full."""
        self._gathering += 1
        deadline = time.monotonic() + self._linger_s
        try:
            while self._coming and first.events + sum(r.events for r in self._queue) < self._max_events:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._changed.wait(remaining):
                    break
        finally:
            self._gathering -= 1

    def _append_together(self, requests: list[_Request]) -> None:
        """One append for requests of one source and horizon; each answered with its own
        duplicates. An id a request before it in the group carries is a duplicate here."""
        with self._lock:
            self.appends += 1
        if len(requests) == 1:
            request = requests[0]
            request.result = self._log.append(
                request.by_partition,
                now_ms=request.now_ms,
                horizon_s=request.horizon_s,
                config_version=request.config_version,
            )
            return
        merged: dict[int, list[Event]] = {}
        origin: dict[int, list[tuple[int, int]]] = {}  # partition -> (request, position) per merged event
        answers: list[dict[int, list[int]]] = [{} for _ in requests]  # request -> partition -> duplicates
        seen: set[str] = set()
        for r, request in enumerate(requests):
            for partition, events in request.by_partition.items():
                own = answers[r].setdefault(partition, [])
                into = merged.setdefault(partition, [])
                where = origin.setdefault(partition, [])
                for position, event in enumerate(events):
                    if event.id in seen:
                        own.append(position)
                        continue
                    seen.add(event.id)
                    into.append(event)
                    where.append((r, position))
        merged = {p: events for p, events in merged.items() if events}
        versions = [r.config_version for r in requests]
        appended = self._log.append(
            merged,
            now_ms=max(r.now_ms for r in requests),
            horizon_s=requests[0].horizon_s,
            config_version=None if None in versions else max(v for v in versions if v is not None),
        )
        entries: dict[int, str | None] = {}
        for part in appended:
            entries[part.partition] = part.entry_id
            where = origin[part.partition]
            for index in part.duplicates:
                r, position = where[index]
                answers[r][part.partition].append(position)
        for request, answer in zip(requests, answers, strict=True):
            request.result = [
                Appended(p, entries.get(p) if len(dups) < len(request.by_partition[p]) else None, tuple(sorted(dups)))
                for p, dups in answer.items()
            ]
