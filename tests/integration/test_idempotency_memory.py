"""Remembered event ids (issue 15, item 5): what is a duplicate, that linear hashing's bucket
splits lose none, the trace finding an event through the same digest, ids remembered by the
format before the buckets, and the measured memory per id on a real redis-server."""

from __future__ import annotations

import time
import uuid

import pytest

from runtime import keys
from runtime.dev.memory_sizing import measure_event_ids
from runtime.events.envelope import Event
from runtime.events.trace import trace_event
from runtime.log.memory import MemoryPartitionLog
from runtime.log.partition_log import (
    BUCKET_LOAD,
    DAY_MS,
    ID_DIGEST_BYTES,
    PERIOD_DAYS,
    LogStorage,
    PartitionLog,
    decode_location,
    encode_events,
    encode_location,
    id_bucket,
    id_digest,
)

MAX_BYTES_PER_ID = 28  # 24.6-25.5 measured; DESIGN's budget is 32


def ev(event_id: str, source: str = "crm", now_ms: int = 0) -> Event:
    return Event(event_id, "app.login", now_ms, "c1", "c1", source, {}, now_ms)


@pytest.fixture(params=["memory", "redis"])
def log(request: pytest.FixtureRequest) -> LogStorage:
    if request.param == "memory":
        return MemoryPartitionLog(horizon_s=86_400)
    return PartitionLog(request.getfixturevalue("redis_client"), horizon_s=86_400)


def test_the_same_source_and_id_on_the_same_day_is_a_duplicate_and_another_source_is_not(log) -> None:
    now = int(time.time() * 1000)
    assert log.append({0: [ev("e1")]}, now_ms=now)[0].duplicates == ()
    assert log.append({0: [ev("e2"), ev("e1")]}, now_ms=now + 1000)[0].duplicates == (1,)
    # ids are remembered in the partition of their customer, where the same event always goes
    assert log.append({3: [ev("e1")]}, now_ms=now + 1000)[0].duplicates == ()
    assert log.append({0: [ev("e1", source="billing")]}, now_ms=now)[0].duplicates == ()
    assert log.append({0: [ev("e1", source="billing")]}, now_ms=now)[0].duplicates == (0,)
    assert log.append({0: [ev("E1")]}, now_ms=now)[0].duplicates == ()  # ids are exact strings
    assert log.append({0: [ev("e1")]}, now_ms=now + DAY_MS)[0].duplicates == (0,)  # the horizon's next day
    assert log.append({0: [ev("e1")]}, now_ms=now + 3 * DAY_MS)[0].duplicates == ()  # past it


WEEK_S = 7 * 86_400


@pytest.mark.parametrize("first_day", [20_790, 20_791, 20_792])  # each place in a key of three days
def test_under_a_long_horizon_an_id_is_a_duplicate_for_the_horizon_and_forgotten_after_its_key(
    log: LogStorage, first_day: int
) -> None:
    """Under a 7-day horizon ids are remembered in keys of three days: an id is a duplicate on
    every day up to the horizon after it arrived, and on the days after that only while its
    key's days still reach into the horizon (oracle: the key's last day + the horizon)."""
    hour = 3_600_000
    last_found = first_day - first_day % PERIOD_DAYS + PERIOD_DAYS - 1 + 7
    assert log.append({0: [ev("e1")]}, now_ms=first_day * DAY_MS + hour, horizon_s=WEEK_S)[0].duplicates == ()
    for day in range(first_day + 1, first_day + 12):
        appended = log.append({0: [ev("e1")]}, now_ms=day * DAY_MS + hour, horizon_s=WEEK_S)[0]
        assert appended.duplicates == ((0,) if day <= last_found else ()), day
        assert day > first_day + 7 or appended.duplicates == (0,)  # never forgotten within the horizon
        if appended.duplicates == ():
            break


def test_a_source_whose_horizon_changes_still_finds_the_ids_it_remembered_before(log: LogStorage) -> None:
    """Keys of one day (a short horizon, and every key written before keys of three days
    existed) and keys of three days are checked alike, whichever the horizon writes now."""
    hour, day = 3_600_000, 20_792
    log.append({0: [ev("short")]}, now_ms=day * DAY_MS + hour, horizon_s=86_400)  # a key of one day
    log.append({0: [ev("long")]}, now_ms=day * DAY_MS + hour, horizon_s=WEEK_S)  # a key of three days
    later = (day + 2) * DAY_MS + hour
    assert log.append({0: [ev("short"), ev("long")]}, now_ms=later, horizon_s=WEEK_S)[0].duplicates == (0, 1)
    assert log.append({0: [ev("short"), ev("long")]}, now_ms=later, horizon_s=2 * 86_400)[0].duplicates == (0, 1)


def test_a_request_over_many_partitions_and_script_runs_reports_each_partitions_duplicates(log) -> None:
    """One Redis takes a request's partitions in runs of the append script (a few thousand events
    each): each partition's entry and duplicates must come back in the request's order, whatever
    run took it. Every third id is sent again among new ones."""
    from runtime.log.partition_log import APPEND_RUN_EVENTS

    now = int(time.time() * 1000)
    sizes = {p: 1 + (p * 37) % 150 for p in range(64)}  # 64 partitions, several runs of events
    assert sum(sizes.values()) > 2 * APPEND_RUN_EVENTS
    first = {p: [ev(f"p{p}-{k}", now_ms=now) for k in range(n)] for p, n in sizes.items()}
    appended = log.append(first, now_ms=now)
    assert [(a.partition, a.duplicates) for a in appended] == [(p, ()) for p in sizes]
    again = {
        p: [ev(f"p{p}-{k}" if k % 3 == 0 else f"p{p}-new-{k}", now_ms=now) for k in range(n)] for p, n in sizes.items()
    }
    appended = log.append(again, now_ms=now + 1)
    assert [(a.partition, a.duplicates) for a in appended] == [(p, tuple(range(0, n, 3))) for p, n in sizes.items()]
    for p, n in sizes.items():
        logged = [e.id for x in log.read_range(p, "0", 10) for e in x.events]
        assert logged == [f"p{p}-{k}" for k in range(n)] + [f"p{p}-new-{k}" for k in range(n) if k % 3]


def test_no_id_is_lost_when_buckets_split_and_the_trace_finds_each(redis_client) -> None:
    log = PartitionLog(redis_client, horizon_s=86_400)
    now = int(time.time() * 1000)
    day = now // DAY_MS
    ids = [str(uuid.uuid4()) for _ in range(BUCKET_LOAD * 40)]
    for start in range(0, len(ids), 300):
        batch = {1: [ev(i, now_ms=now) for i in ids[start : start + 300]]}
        assert all(a.duplicates == () for a in log.append(batch, now_ms=now))
    log.append({3: [ev("elsewhere", now_ms=now)]}, now_ms=now)
    state = redis_client.hgetall(keys.idempotency(1, "crm", day))
    assert int(state[b"c"]) == len(ids) and int(state[b"n"]) >= 40  # split into many buckets
    again = log.append({1: [ev(i, now_ms=now) for i in ids]}, now_ms=now + 1)
    assert again[0].duplicates == tuple(range(len(ids))) and again[0].entry_id is None
    for bucket in range(int(state[b"n"])):
        assert redis_client.object("encoding", keys.idempotency_bucket(1, "crm", day, bucket)) == b"listpack"
        assert redis_client.ttl(keys.idempotency_bucket(1, "crm", day, bucket)) > DAY_MS // 1000
    where = {e.id: (p, x.entry_id) for p in range(4) for x in log.read_range(p, "0", 1000) for e in x.events}
    for event_id in [*ids[:: len(ids) // 25], "elsewhere"]:
        steps = trace_event(redis_client, "crm", event_id, now_ms=now, days=1, partitions=4)["steps"]
        (logged,) = [s for s in steps if s["step"] == "logged"]
        assert (logged["partition"], logged["log_entry"]) == where[event_id]
    assert trace_event(redis_client, "crm", "never-sent", now_ms=now, days=1, partitions=4)["status"] == "unknown"


def test_the_trace_finds_an_event_remembered_in_a_key_of_three_days_which_lives_its_days_and_the_horizon(
    redis_client,
) -> None:
    log = PartitionLog(redis_client, horizon_s=WEEK_S)
    now = int(time.time() * 1000)
    day = now // DAY_MS
    (appended,) = log.append({2: [ev("in-a-period", now_ms=now)]}, now_ms=now)
    first = day - day % PERIOD_DAYS
    meta = keys.idempotency(2, "crm", first, PERIOD_DAYS)
    assert int(redis_client.hget(meta, "c")) == 1 and not redis_client.exists(keys.idempotency(2, "crm", day))
    for key in (meta, keys.idempotency_bucket(2, "crm", first, 0, PERIOD_DAYS)):
        assert redis_client.ttl(key) > (7 + PERIOD_DAYS - 1) * 86_400  # its days, then the horizon
    steps = trace_event(redis_client, "crm", "in-a-period", now_ms=now + 2 * DAY_MS, days=7, partitions=4)["steps"]
    assert {"step": "logged", "partition": 2, "log_entry": appended.entry_id} in steps


def test_locations_and_buckets_round_trip() -> None:
    day = 20_000
    for partition, entry in [(0, f"{day * DAY_MS}-0"), (4095, f"{day * DAY_MS + 3 * DAY_MS - 1}-4095")]:
        stored = encode_location(partition, entry, day)
        assert "/" not in stored and -(1 << 31) <= int(stored) < 0  # a 32-bit listpack integer
        ms = entry.split("-")[0]
        assert decode_location(stored, day, partition) == (partition, f"{ms}-0", f"{ms}-{(1 << 64) - 1}")
    for partition, entry in [(7, "5-0"), (9, f"{(day + 25) * DAY_MS}-1")]:  # before the day, or past 24 days
        assert decode_location(encode_location(partition, entry, day), day, 0) == (partition, entry, entry)
    # ids remembered before locations were milliseconds: ((ms * 4096) + seq) * 4096 + partition
    legacy = str((5 * 4096 + 3) * 4096 + 63).encode()
    assert decode_location(legacy, day, 0) == (63, f"{day * DAY_MS + 5}-3", f"{day * DAY_MS + 5}-3")
    digest = id_digest("crm", "e1")
    assert len(digest) == ID_DIGEST_BYTES == 12
    assert digest != id_digest("crm2", "e1") and digest != id_digest("cr", "me1")
    assert [id_bucket(digest, n) < n for n in range(1, 300)] == [True] * 299


def test_a_remembered_id_costs_at_most_28_bytes(redis_client) -> None:
    """The sizing claim of docs/operations/sizing.md, measured: 50,000 UUID4 ids through the
    append path, INFO memory's used_memory delta per id (log streams deleted)."""
    per_id = measure_event_ids(redis_client, 50_000)
    assert per_id <= MAX_BYTES_PER_ID, f"{per_id:.1f} bytes per remembered event id"


def test_the_trace_finds_the_entry_among_those_of_one_millisecond_and_ids_remembered_before(redis_client) -> None:
    """A remembered id keeps its entry's millisecond alone: the trace finds the entry among that
    millisecond's, and still reads the exact entry of an id remembered in the format before."""
    log = PartitionLog(redis_client, horizon_s=86_400)
    now = int(time.time() * 1000)
    day = now // DAY_MS
    # an entry 10 s ahead: the appends after it take its millisecond, a sequence number each
    ahead = now + 10_000
    fields = {b"b": encode_events([ev("ahead", now_ms=now)]), b"d": b"", b"v": b"0"}
    redis_client.xadd(keys.log_stream(2), fields, id=f"{ahead}-0")
    parts = [[ev(f"same-ms-{k}-{i}", now_ms=now) for i in range(n)] for k, n in enumerate([1, 5, 2, 6])]
    entries = [log.append({2: part}, now_ms=now)[0].entry_id for part in parts]  # checked before or by the write
    assert entries == [f"{ahead}-{seq}" for seq in range(1, 5)]
    for part, entry in zip(parts, entries, strict=True):
        for e in (part[0], part[-1]):
            steps = trace_event(redis_client, "crm", e.id, now_ms=now, days=1, partitions=4)["steps"]
            assert {"step": "logged", "partition": 2, "log_entry": entry} in steps
    redis_client.xdel(keys.log_stream(2), entries[1])  # trimmed: the millisecond is what is left
    steps = trace_event(redis_client, "crm", "same-ms-1-0", now_ms=now, days=1, partitions=4)["steps"]
    assert {"step": "logged", "partition": 2, "log_entry": f"{ahead}-0"} in steps

    (appended,) = log.append({1: [ev("remembered-before", now_ms=now)]}, now_ms=now)
    digest = id_digest("crm", "remembered-before")
    buckets = int(redis_client.hget(keys.idempotency(1, "crm", day), "n"))
    ms, seq = map(int, appended.entry_id.split("-"))
    legacy = ((ms - day * DAY_MS) * 4096 + seq) * 4096 + 1
    redis_client.hset(keys.idempotency_bucket(1, "crm", day, id_bucket(digest, buckets)), digest, legacy)
    steps = trace_event(redis_client, "crm", "remembered-before", now_ms=now, days=1, partitions=4)["steps"]
    assert {"step": "logged", "partition": 1, "log_entry": appended.entry_id} in steps
