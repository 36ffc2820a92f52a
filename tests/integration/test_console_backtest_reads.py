"""The console's backtest reads the log range it is asked for, a page of entries at a time, and
never more events than its limit (on a real redis-server)."""

from __future__ import annotations

import time

from runtime.console.golive import logged_events
from runtime.events.envelope import Event
from runtime.log.partition_log import PartitionLog


def batch(n: int, partition: int) -> list[Event]:
    return [Event(f"e{partition}-{n}-{i}", "t", 1_000 + n, "c", f"c{partition}", "s", {"i": i}, 0) for i in range(3)]


def ids(events: list[Event]) -> list[str]:
    return [e.id for e in events]


def test_a_range_is_read_in_pages_and_cut_at_the_limit(redis_client):
    log = PartitionLog(redis_client, horizon_s=3600)
    appended: dict[int, list[tuple[int, list[Event]]]] = {0: [], 1: []}  # arrival ms and events, per entry
    for n in range(7):
        for partition in (0, 1):
            [entry] = log.append({partition: batch(n, partition)}, now_ms=0)
            appended[partition].append((int(entry.entry_id.split("-")[0]), batch(n, partition)))
        time.sleep(0.003)  # entry ids are Redis's clock: one millisecond per round at least

    everything = [e for p in (0, 1) for _, events in appended[p] for e in events]
    assert ids(logged_events(redis_client, 2, 0, 2**62, page=2)) == ids(everything)  # 7 entries, pages of 2
    assert ids(logged_events(redis_client, 2, 0, 2**62, limit=10, page=2)) == ids(everything[:10])

    first, last = appended[0][2][0], appended[0][5][0]  # entries 2..5 of partition 0 arrived in [first, last]
    inside = [e for arrived, events in appended[0] if first <= arrived <= last for e in events]
    assert len(inside) >= 12
    assert ids(logged_events(redis_client, 1, first, last, page=2)) == ids(inside)
    assert logged_events(redis_client, 2, 0, 1) == []
