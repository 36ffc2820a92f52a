"""Events read back from the partition log for a backtest over a range of arrival times."""

from __future__ import annotations

from typing import Any

from runtime import keys
from runtime.events.envelope import Event
from runtime.log.partition_log import decode_entry

MAX_EVENTS = 200_000  # a console backtest reads at most this many events


def logged_events(client: Any, partitions: int, from_ms: int, to_ms: int, limit: int = MAX_EVENTS) -> list[Event]:
    """The events of every partition's log that arrived between ``from_ms`` and ``to_ms``
    (entry ids are arrival milliseconds), at most ``limit`` of them."""
    events: list[Event] = []
    for partition in range(partitions):
        entries = client.xrange(keys.log_stream(partition), min=str(from_ms), max=str(to_ms))
        for entry_id, fields in entries:
            if not fields:
                continue
            eid = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
            events += decode_entry(partition, eid, fields).events
            if len(events) >= limit:
                return events[:limit]
    return events
