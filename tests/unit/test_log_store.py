"""The partition log's contract, checked on both implementations: Redis (on a real
redis-server) and in memory. Crash recovery with checkpoints is in
tests/integration/test_partition_runner.py."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from runtime.config.memory import MemoryConfigStore
from runtime.config.store import ConfigStorage, ConfigStore
from runtime.events.envelope import Event
from runtime.log.memory import MemoryPartitionLog
from runtime.log.partition_log import DAY_MS, LogStorage, PartitionLog

NOW = 1_767_225_600_000  # 2026-01-01T00:00:00Z


@dataclass
class Stores:
    log: LogStorage
    config: ConfigStorage


@pytest.fixture(params=["memory", "redis"])
def stores(request: pytest.FixtureRequest) -> Stores:
    if request.param == "memory":
        config = MemoryConfigStore()
        return Stores(MemoryPartitionLog(horizon_s=3600, config=config), config)
    client = request.getfixturevalue("redis_client")
    return Stores(PartitionLog(client, horizon_s=3600), ConfigStore(client))


def ev(i: int, source: str = "crm") -> Event:
    return Event(f"e{i}", "app.login", NOW, f"c{i}", f"c{i}", source, {"n": i}, NOW)


def ids(entries) -> list[list[str]]:
    return [[e.id for e in entry.events] for entry in entries]


def test_append_writes_one_entry_per_partition_and_drops_seen_ids(stores: Stores) -> None:
    log = stores.log
    assert log.append({}, now_ms=NOW) == []
    first = log.append({0: [ev(1), ev(2)], 1: [ev(3)]}, now_ms=NOW)
    assert [(a.partition, a.duplicates) for a in first] == [(0, ()), (1, ())]
    assert all(a.entry_id for a in first)
    again = log.append({0: [ev(4), ev(1), ev(5), ev(2)], 1: [ev(3)]}, now_ms=NOW + 1)
    assert [(a.partition, a.duplicates) for a in again] == [(0, (1, 3)), (1, (0,))]
    assert again[1].entry_id is None  # all duplicates: no entry
    assert ids(log.read_range(0, "0", 10)) == [["e1", "e2"], ["e4", "e5"]]
    assert ids(log.read_range(1, "0", 10)) == [["e3"]]
    assert log.read_range(0, "0", 10)[1].events[0] == ev(4)  # events read back whole
    assert log.append({0: [ev(1, source="other")]}, now_ms=NOW)[0].duplicates == ()  # ids are per source


def test_seen_ids_are_kept_for_the_horizon_rounded_up_to_days(stores: Stores) -> None:
    stores.log.append({0: [ev(1)]}, now_ms=NOW)
    assert stores.log.append({0: [ev(1)]}, now_ms=NOW + DAY_MS)[0].duplicates == (0,)  # 1 h horizon: 1 day back
    assert stores.log.append({0: [ev(1)]}, now_ms=NOW + 2 * DAY_MS)[0].duplicates == ()
    assert stores.log.append({0: [ev(1)]}, now_ms=NOW + 5 * DAY_MS, horizon_s=4 * 86_400)[0].duplicates == (0,)


def test_entries_carry_the_config_version_of_their_append(stores: Stores) -> None:
    stores.log.append({0: [ev(1)]}, now_ms=NOW)
    stores.config.put({"kind": "source", "name": "crm"})
    stores.config.put({"kind": "source", "name": "crm"})
    stores.log.append({0: [ev(2)]}, now_ms=NOW)
    assert [e.config_version for e in stores.log.read_range(0, "0", 10)] == [0, 2]


def test_reads_advance_a_cursor_per_partition_that_taking_again_moves(stores: Stores) -> None:
    log = stores.log
    assert log.take({0: "0", 1: "0"}, owner="a") == {0: 1, 1: 1}
    entries = [log.append({0: [ev(i)], 1: [ev(100 + i)]}, now_ms=NOW) for i in range(3)]
    assert log.backlog([0, 1, 7]) == {0: 3, 1: 3, 7: 0}
    got = log.read([0, 1], owner="a", count=2, block_ms=1)
    assert sorted((e.partition, e.events[0].id) for e in got) == [(0, "e0"), (0, "e1"), (1, "e100"), (1, "e101")]
    assert log.backlog([0, 1]) == {0: 1, 1: 1}
    assert ids(log.read([0], owner="a", count=10, block_ms=1)) == [["e2"]]
    assert log.read([0], owner="a", count=10, block_ms=1) == []
    assert log.take({0: entries[0][0].entry_id}, owner="b") == {0: 2}  # a new owner replays after the first entry
    assert log.backlog([0]) == {0: 2}
    assert ids(log.read([0], owner="b", count=10, block_ms=1)) == [["e1"], ["e2"]]
    log.take({0: "0"}, owner="b")
    assert ids(log.read([0], owner="b", count=10, block_ms=1)) == [["e0"], ["e1"], ["e2"]]


def test_read_range_starts_after_the_given_entry(stores: Stores) -> None:
    appended = [stores.log.append({0: [ev(i)]}, now_ms=NOW)[0].entry_id for i in range(4)]
    assert ids(stores.log.read_range(0, appended[1], 10)) == [["e2"], ["e3"]]
    assert ids(stores.log.read_range(0, "0-0", 2)) == [["e0"], ["e1"]]
    assert stores.log.read_range(0, appended[3], 10) == [] and stores.log.read_range(5, "0", 10) == []


def test_trim_keeps_every_entry_from_the_given_id_on(stores: Stores) -> None:
    appended = [stores.log.append({0: [ev(i)]}, now_ms=NOW)[0].entry_id for i in range(5)]
    stores.log.trim({0: appended[2]})
    kept = ids(stores.log.read_range(0, "0", 10))
    assert kept[-3:] == [["e2"], ["e3"], ["e4"]]  # Redis trims approximately: older ones may stay


def test_memory_trim_drops_what_is_older() -> None:
    log = MemoryPartitionLog(horizon_s=60)
    appended = [log.append({0: [ev(i)]}, now_ms=NOW)[0].entry_id for i in range(3)]
    log.trim({0: appended[1]})
    assert ids(log.read_range(0, "0", 10)) == [["e1"], ["e2"]]


def test_digests_of_a_batch_are_the_remembered_ids_format_byte_for_byte() -> None:
    """Ids remembered by earlier versions must still be found: the batch digests are BLAKE2b-96
    of the length-prefixed source and the id, computed here from the definition."""
    import hashlib

    from runtime.log.partition_log import id_digest, id_digests

    def reference(source: str, event_id: str) -> bytes:
        src = source.encode("utf-8", "surrogatepass")
        data = len(src).to_bytes(4, "big") + src + event_id.encode("utf-8", "surrogatepass")
        return hashlib.blake2b(data, digest_size=12).digest()

    ids = ["e1", "", "ß-日本", "\ud800lone", "x" * 300]
    for source in ("crm", "ünïcode-source", "a"):
        assert id_digests(source, ids) == b"".join(reference(source, i) for i in ids)
        assert [id_digest(source, i) for i in ids] == [reference(source, i) for i in ids]
    assert id_digests("crm", []) == b""


@pytest.mark.parametrize("newest_deleted", [False, True], ids=["stream-ahead-of-the-clock", "newest-entry-deleted"])
@pytest.mark.parametrize("size", [1, 12], ids=["small-part", "large-part"])
def test_a_part_is_remembered_at_the_entry_it_got_when_the_stream_is_ahead_of_the_clock(
    redis_client, size: int, newest_deleted: bool
) -> None:
    """The append records where each new id went before the entry exists (large parts: the write
    is the check). A stream whose ids run ahead of Redis's clock, or whose newest entry was
    deleted (an unreadable entry set aside), must still give every event exactly one entry, and
    the trace must find that entry."""
    import time

    from runtime import keys
    from runtime.events.trace import trace_event
    from runtime.log.partition_log import encode_events
    from runtime.log.streams import entry_id_key

    log = PartitionLog(redis_client, horizon_s=3600)
    now = int(time.time() * 1000)
    ahead = f"{now + 3_600_000}-5"
    redis_client.xadd(keys.log_stream(3), {"b": encode_events([ev(500)]), "d": "", "v": "0"}, id=ahead)
    if newest_deleted:
        redis_client.xdel(keys.log_stream(3), ahead)
    events = [ev(i) for i in range(size)]
    [appended] = log.append({3: events}, now_ms=now)
    assert appended.duplicates == () and appended.entry_id is not None
    assert entry_id_key(appended.entry_id) > entry_id_key(ahead)
    logged = [e for e in log.read_range(3, "0", 10) if e.events and e.events[0].id == "e0"]
    assert [e.entry_id for e in logged] == [appended.entry_id] and ids(logged) == [[e.id for e in events]]
    for event in (events[0], events[-1]):
        steps = trace_event(redis_client, "crm", event.id, now_ms=now, days=1, partitions=64)["steps"]
        assert steps[0] == {"step": "logged", "partition": 3, "log_entry": appended.entry_id}
    [again] = log.append({3: [*events, ev(99)]}, now_ms=now)
    assert again.duplicates == tuple(range(size)) and again.entry_id is not None


def test_a_large_part_finds_ids_seen_yesterday_and_today_and_logs_only_the_new(stores: Stores) -> None:
    """Parts of several ids check earlier days, then make today's write the check: a retry that
    mixes ids first seen yesterday, ids seen today and new ids keeps only the new ones."""
    log = stores.log
    log.append({0: [ev(1), ev(2), ev(3), ev(4)]}, now_ms=NOW)  # yesterday
    today = NOW + DAY_MS
    first = log.append({0: [ev(5), ev(6), ev(7), ev(8)]}, now_ms=today)
    assert first[0].duplicates == ()
    mixed = [ev(9), ev(2), ev(6), ev(10), ev(4), ev(8), ev(11)]
    [again] = log.append({0: mixed}, now_ms=today)
    assert again.duplicates == (1, 2, 4, 5)
    assert ids(log.read_range(0, "0", 10))[-1] == ["e9", "e10", "e11"]
    [last] = log.append({0: mixed}, now_ms=today)
    assert last.entry_id is None and last.duplicates == tuple(range(len(mixed)))
