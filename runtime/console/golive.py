"""Events read back from the partition log for a backtest over a range of arrival times."""

from __future__ import annotations

from typing import Any

from runtime import keys
from runtime.events.envelope import Event
from runtime.log.partition_log import decode_entry
from runtime.log.streams import text

MAX_EVENTS = 200_000  # a console backtest reads at most this many events


def logged_events(
    client: Any, partitions: int, from_ms: int, to_ms: int, limit: int = MAX_EVENTS, page: int = 100
) -> list[Event]:
    """The events of every partition's log that arrived between ``from_ms`` and ``to_ms``
    (entry ids are arrival milliseconds), at most ``limit`` of them, read ``page`` log entries at
    a time so a long range never loads more than the limit."""
    events: list[Event] = []
    for partition in range(partitions):
        stream, start = keys.log_stream(partition), str(from_ms)
        while True:
            entries = client.xrange(stream, min=start, max=str(to_ms), count=page)
            for entry_id, fields in entries:
                eid = text(entry_id)
                if fields:
                    events += decode_entry(partition, eid, fields).events
                    if len(events) >= limit:
                        return events[:limit]
            if len(entries) < page:
                break
            start = "(" + eid  # exclusive: after the last entry read
    return events
