"""The durable partition log: one Redis stream per virtual partition.

A log entry carries a micro-batch (all of one request's events for that partition, as columns:
:mod:`runtime.events.columns`),
never one entry per event, and the config version current when it was appended: an actor
that reads an entry newer than its config reloads first, so a rule or subscription applies to
every event accepted after its PUT returned. Appending de-duplicates by (source, event id) and writes the entry in
one Lua script, so "marked as seen" and "in the log" can never disagree after a crash.

A partition has one owner at a time: the partition runner that last *took* it
(:meth:`PartitionLog.take`, at recovery and at a hand-over). Taking raises the partition's
ownership epoch (:func:`runtime.keys.epoch`), which the outbox checks on every publication, and gives the
new owner its own consumer group ``esp-rules:<owner>`` at the offset of the partition's
checkpoint, destroying the previous owner's. So a superseded owner (one that was not told,
or did not hear, that its partitions moved) can neither read on (NOGROUP) nor publish.

Owners read through their group with NOACK: the group's last-delivered id is the read
cursor, and the truth about what has been processed is the offset stored in each partition
checkpoint. Taking the partition again re-delivers everything after that offset — in log
order, which rebuilding state needs and which per-entry reclaiming (XAUTOCLAIM) would not give.

:class:`LogStorage` is what ingestion and partition actors use; :class:`PartitionLog` is the
Redis log, :class:`runtime.log.memory.MemoryPartitionLog` the in-memory one for unit tests.
Both store an entry as the same fields and read it through :func:`decode_entry`.
"""

from __future__ import annotations

import functools
import hashlib
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from runtime import keys
from runtime.events.columns import EventColumns, encode_rows
from runtime.events.envelope import Event
from runtime.log.streams import entry_id_key, read_group, text
from runtime.lua import queue_script, read_script

if TYPE_CHECKING:
    import redis

_APPEND = read_script("runtime.log", "partition_log_append.lua")
_TAKE = read_script("runtime.log", "partition_log_take.lua")


class Fenced(Exception):
    """Another runner has taken these partitions: this one may neither read nor publish them."""

    def __init__(self, partitions: list[int]) -> None:
        super().__init__(f"partitions {partitions} were taken by another owner")
        self.partitions = partitions


@dataclass(frozen=True, slots=True)
class Appended:
    """What one partition's part of a request became: its log entry and duplicate positions."""

    partition: int
    entry_id: str | None  # None when every event was a duplicate
    duplicates: tuple[int, ...]  # positions within the partition's events


@dataclass(frozen=True, slots=True)
class LogEntry:
    partition: int
    entry_id: str
    events: EventColumns  # duplicates already removed
    config_version: int  # the config version when the entry was appended


DAY_S = 86_400
DAY_MS = DAY_S * 1000

ID_DIGEST_BYTES = 12  # 96 bits of BLAKE2b per (source, event id): what a remembered id is stored as
BUCKET_LOAD = 48  # mean ids per bucket at which linear hashing adds a bucket (max listpack: 128)
# days of arrival one key of remembered ids holds under a horizon of LONG_HORIZON_DAYS or more
PERIOD_DAYS = 3
LONG_HORIZON_DAYS = 6
LOCATION_MS = (1 << 31) - 1  # ms from a key's first day a location holds as a 32-bit integer
LEGACY_LOCATION_PARTITIONS = 4096  # partitions and sequence numbers of a location stored before
# events per run of the append script on one Redis: one run for a request's partitions costs Redis
# less than a run each, and a few thousand events keep a run (which blocks Redis) to a few ms
APPEND_RUN_EVENTS = 2000


def decode_entry(partition: int, entry_id: str, fields: dict[bytes, bytes]) -> LogEntry:
    events = EventColumns.decode(fields[b"b"])
    dups = fields.get(b"d", b"")
    if dups:
        skip = {int(x) for x in dups.split(b",")}
        events = events.select([i not in skip for i in range(len(events))])
    return LogEntry(partition, entry_id, events, int(fields.get(b"v", 0)))


class LogAppender(Protocol):
    """The writing side of the partition log (what ingestion needs); see :meth:`PartitionLog.append`."""

    def append(
        self,
        by_partition: dict[int, list[Event]],
        *,
        now_ms: int,
        horizon_s: int | None = None,
        config_version: int | None = None,
    ) -> list[Appended]: ...


class LogStorage(LogAppender, Protocol):
    """The durable partition log; see :class:`PartitionLog` for each method's contract."""

    def take(self, offsets: dict[int, str], *, owner: str) -> dict[int, int]: ...

    def epochs(self, partitions: list[int]) -> list[int | None]: ...

    def read(self, partitions: list[int], *, owner: str, count: int, block_ms: int) -> list[LogEntry]: ...

    def read_range(self, partition: int, after: str, count: int) -> list[LogEntry]: ...

    def trim(self, offsets: dict[int, str]) -> None: ...

    def backlog(self, partitions: Iterable[int]) -> dict[int, int]: ...


def horizon_days(horizon_s: int) -> int:
    """The de-duplication horizon rounded up to days: an append checks the ids seen on as many
    days of arrival before today, and today's."""
    return -(-horizon_s // DAY_S)


IdKey = tuple[int, int]  # a key of remembered ids: (its first day of arrival, how many days it holds)


def period_days(horizon_days: int) -> int:
    """Days of arrival one key of remembered ids holds under a horizon of ``horizon_days``: one
    under a short horizon; ``PERIOD_DAYS`` under a long one, so that an append checks each new
    id against fewer keys (a 7-day horizon: 3 earlier keys instead of 7) for ids kept up to two
    days longer (docs/operations/sizing.md)."""
    return PERIOD_DAYS if horizon_days >= LONG_HORIZON_DAYS else 1


class IdKeys(NamedTuple):
    """The keys of remembered ids an append checks: ``checked[:own]`` are of the kind the horizon
    writes (one day, or ``PERIOD_DAYS``), newest first, ``checked[written]`` among them the one
    it writes; ``checked[own:]`` the keys of the other kind, newest first, which exist only for a
    while after a source's horizon changed kind or after an upgrade from one-day keys only: the
    append script looks them up one by one only when one of them exists."""

    checked: tuple[IdKey, ...]
    own: int
    written: int


def id_keys(day: int, horizon_days: int) -> IdKeys:
    """The keys of remembered ids an append on ``day`` checks (every key, of either kind, whose
    days reach into the horizon: so after a source's horizon changed either way, or ids were
    remembered before keys of several days existed, every id within the horizon is still found),
    and the one it writes (its days begin on a multiple of their count)."""
    span = period_days(horizon_days)
    own: list[IdKey] = []
    other: list[IdKey] = []
    for back in range(horizon_days + PERIOD_DAYS):
        first = day - back
        if back <= horizon_days:
            (own if span == 1 else other).append((first, 1))
        if first % PERIOD_DAYS == 0 and first + PERIOD_DAYS > day - horizon_days:
            (own if span == PERIOD_DAYS else other).append((first, PERIOD_DAYS))
    return IdKeys((*own, *other), len(own), own.index((day - day % span, span)))


def id_digest(source: str, event_id: str) -> bytes:
    """The fixed-width digest a remembered (source, event id) is stored as: BLAKE2b-96 of the
    length-prefixed source and the id. Two different ids of a source are taken for one
    another only if their 96-bit digests are equal (see docs/operations/sizing.md for the odds)."""
    return id_digests(source, [event_id])


@functools.lru_cache(maxsize=256)
def _source_hash(source: str) -> Any:
    """The hash state after a source's part of :func:`id_digest`: copied, never updated. Kept
    per source, since a request's partitions each hash their ids (a 100-event request has
    about 60 parts, and making the state cost more than copying it for the part's ids)."""
    src = source.encode("utf-8", "surrogatepass")
    return hashlib.blake2b(len(src).to_bytes(4, "big") + src, digest_size=ID_DIGEST_BYTES)


def id_digests(source: str, event_ids: Iterable[str]) -> bytes:
    """:func:`id_digest` of each of ``event_ids`` of ``source``, concatenated. The source's part
    is hashed once and the hash state copied per id: a third of the cost of hashing each
    (source, id) whole, which was the largest single cost of an ingest request in the replica."""
    prefix = _source_hash(source)
    digests = []
    for event_id in event_ids:
        state = prefix.copy()
        state.update(event_id.encode("utf-8", "surrogatepass"))
        digests.append(state.digest())
    return b"".join(digests)


def id_bucket(digest: bytes, buckets: int) -> int:
    """The bucket (0 .. buckets-1) of a digest under linear hashing, as the append script
    computes it: the first 4 bytes modulo the next power of two, or the lower one when that
    bucket does not exist yet."""
    h = int.from_bytes(digest[:4], "big")
    low = 1 << (buckets.bit_length() - 1)
    index = h % (low * 2)
    return index if index < buckets else h % low


def encode_location(partition: int, entry_id: str, day: int) -> str:
    """Where an event went, as the append script stores it in partition ``partition``'s key
    whose first day is ``day``: the log entry's millisecond, ``-(ms since that day began + 1)``
    (a 32-bit listpack integer: the key names the partition, and the entry is found again among
    that millisecond's, :func:`decode_location`), or ``<partition>/<entry id>`` when it does not
    fit."""
    rel = int(entry_id.partition("-")[0]) - day * DAY_MS
    if 0 <= rel < LOCATION_MS:
        return str(-(rel + 1))
    return f"{partition}/{entry_id}"


def decode_location(raw: bytes | str, day: int, partition: int) -> tuple[int, str, str]:
    """(partition, first, last): the log entries (ids, inclusive) one of which holds the event
    whose remembered id has value ``raw`` in ``partition``'s key whose first day is ``day``.
    Ids remembered before locations were milliseconds (a non-negative
    ``((ms * 4096) + seq) * 4096 + partition``) name their entry exactly."""
    value = text(raw)
    if "/" in value:
        partition, _, entry = value.partition("/")
        return int(partition), entry, entry
    number = int(value)
    if number < 0:
        ms = day * DAY_MS - number - 1
        return partition, f"{ms}-0", f"{ms}-{(1 << 64) - 1}"
    partition, number = number % LEGACY_LOCATION_PARTITIONS, number // LEGACY_LOCATION_PARTITIONS
    seq, rel = number % LEGACY_LOCATION_PARTITIONS, number // LEGACY_LOCATION_PARTITIONS
    entry = f"{day * DAY_MS + rel}-{seq}"
    return partition, entry, entry


encode_events = encode_rows  # a log entry's payload: columns, or rows for a small entry


@functools.lru_cache(maxsize=4096)
def _part_names(partition: int, source: str, checked: tuple[IdKey, ...]) -> tuple[str, tuple[str, ...]]:
    """A partition's log stream and its keys of ``source``'s remembered ids in ``checked``: the
    same names for every request of a day (a 100-event request has about 60 parts, each 4-5)."""
    return keys.log_stream(partition), tuple(keys.idempotency(partition, source, d, n) for d, n in checked)


class PartitionLog:
    """:class:`LogStorage` in Redis: one stream per partition; a request's parts are appended
    by runs of one Lua script (see ``append``)."""

    IDLE_POLL_S = 0.02  # on a Redis Cluster: the pause between reads of idle partitions

    def __init__(self, client: redis.Redis, *, horizon_s: int) -> None:
        self._redis = client
        self._horizon_days = horizon_days(horizon_s)
        from runtime.redis_client import is_cluster  # imported here: the in-memory log shares this module

        self._cluster = is_cluster(client)

    def append(
        self,
        by_partition: dict[int, list[Event]],
        *,
        now_ms: int,
        horizon_s: int | None = None,
        config_version: int | None = None,
    ) -> list[Appended]:
        """Append each partition's events as one entry, dropping already-seen (source, id).

        Seen ids are remembered per partition, source and arrival day (or three days, under a
        long horizon: :func:`period_days`) as an 96-bit digest of (source, id) mapped to its log
        entry's millisecond (:func:`encode_location`, which the event trace reads), in small hashes
        (buckets) that linear hashing adds one at a time as the key fills, so each stays in
        Redis's compact listpack encoding (docs/operations/sizing.md). Each partition's part
        checks the keys of the whole horizon (:func:`id_keys`) in a run of the append script: on
        one Redis a run takes the request's partitions, up to ``APPEND_RUN_EVENTS`` events; a
        Redis Cluster, where partitions live in different hash slots, runs it per partition. The
        runs of a request go in one pipeline, after one read of the config version the entries
        record (none when the caller read it for this request already: ``config_version``). So
        no per-event key or round trip. A request that fails half-way may have appended some
        partitions: its retry finds their events already seen. All events of one call must share
        a source; ids must be unique within the call."""
        if not by_partition:
            return []
        source = next(iter(by_partition.values()))[0].source
        days = self._horizon_days if horizon_s is None else horizon_days(horizon_s)
        checked, own, written = id_keys(now_ms // DAY_MS, days)
        first, span = checked[written]
        if config_version is not None:
            version = str(config_version).encode()
        else:
            version = self._redis.get(keys.CONFIG_VERSION) or b"0"
        # a key lives its days and the horizon after them, from its first id on
        shared: list[Any] = [
            version,
            (days + span) * DAY_S,
            BUCKET_LOAD,
            first * DAY_MS,
            len(checked),
            own,
            written + 1,
        ]
        runs: list[tuple[list[str], list[Any]]] = []  # (streams, their arguments)
        in_run = 0  # events in the last run
        for partition, events in by_partition.items():
            # a partition's keys share a hash slot, partitions do not: on a cluster, a run each
            if self._cluster or not runs or in_run + len(events) > APPEND_RUN_EVENTS:
                runs.append(([], []))
                in_run = 0
            streams, argv = runs[-1]
            stream, id_key_names = _part_names(partition, source, checked)
            streams.append(stream)
            argv += id_key_names
            argv += [partition, id_digests(source, [e.id for e in events]), encode_events(events)]
            in_run += len(events)
        pipe = self._redis.pipeline(transaction=False)
        for streams, argv in runs:
            queue_script(pipe, _APPEND, streams, shared + argv)
        replies = [part for run in pipe.execute() for part in run]
        return [
            Appended(p, text(entry_id) if entry_id else None, tuple(map(int, dups)) if dups else ())
            for p, (entry_id, dups) in zip(by_partition, replies, strict=True)
        ]

    # --- the reading side, used by partition actors -------------------------------------

    def take(self, offsets: dict[int, str], *, owner: str) -> dict[int, int]:
        """Become the owner of the partitions in ``offsets`` and read each on after its offset
        ('0' = from the start); taking a partition again rewinds it. Returns the partitions'
        new ownership epochs (see the module docstring)."""
        pipe = self._redis.pipeline(transaction=False)
        for p, offset in offsets.items():
            argv = [keys.rules_group(owner), keys.RULES_GROUP, offset]
            queue_script(pipe, _TAKE, [keys.log_stream(p), keys.epoch(p)], argv)
        return {p: int(e) for p, e in zip(offsets, pipe.execute() if offsets else [], strict=True)}

    def epochs(self, partitions: list[int]) -> list[int | None]:
        """The partitions' current ownership epochs (None: never taken), in one round trip."""
        pipe = self._redis.pipeline(transaction=False)
        for p in partitions:
            pipe.get(keys.epoch(p))
        return [None if e is None else int(e) for e in (pipe.execute() if partitions else [])]

    def read(self, partitions: list[int], *, owner: str, count: int, block_ms: int) -> list[LogEntry]:
        """The next entries of partitions ``owner`` has taken. Raises ``redis.ResponseError``
        (NOGROUP) once another runner has taken one of them.

        On a single Redis, one XREADGROUP over all the partitions, blocking up to ``block_ms``.
        A Redis Cluster refuses reads across hash slots, so there each partition's stream is
        read in one pipeline (one round trip per node), pausing ``IDLE_POLL_S`` between reads
        while nothing arrives, up to ``block_ms``."""
        by_stream = {keys.log_stream(p): p for p in partitions}
        if not self._cluster:
            reply = read_group(
                self._redis, keys.rules_group(owner), owner, list(by_stream), count=count, block_ms=block_ms, noack=True
            )
            return _entries(by_stream, reply)
        deadline = time.monotonic() + block_ms / 1000
        while True:
            pipe = self._redis.pipeline(transaction=False)
            for stream in by_stream:
                pipe.xreadgroup(keys.rules_group(owner), owner, {stream: ">"}, count=count, noack=True)
            entries = _entries(by_stream, [r for reply in pipe.execute() for r in reply or []])
            if entries or not block_ms or time.monotonic() >= deadline:
                return entries
            time.sleep(self.IDLE_POLL_S)

    def read_range(self, partition: int, after: str, count: int) -> list[LogEntry]:
        """Entries after ``after`` (exclusive), for replay and inspection."""
        start = "-" if after in ("0", "0-0") else f"({after}"
        items = self._redis.xrange(keys.log_stream(partition), min=start, count=count)
        return [decode_entry(partition, text(eid), fields) for eid, fields in items if fields]

    def trim(self, offsets: dict[int, str]) -> None:
        """Drop entries older than each given id (already checkpointed and past retention)."""
        pipe = self._redis.pipeline(transaction=False)
        for p, min_id in offsets.items():
            pipe.xtrim(keys.log_stream(p), minid=min_id, approximate=True)
        pipe.execute()

    def backlog(self, partitions: Iterable[int]) -> dict[int, int]:
        """Entries not yet read by the partition actors, per partition."""
        parts = list(partitions)
        pipe = self._redis.pipeline(transaction=False)
        for p in parts:
            pipe.xinfo_groups(keys.log_stream(p))
        lags: dict[int, int] = {}
        for p, groups in zip(parts, pipe.execute(raise_on_error=False), strict=True):
            if isinstance(groups, Exception):
                lags[p] = 0
                continue
            group = owner_group(groups)
            lags[p] = int(group.get("lag") or 0) if group else 0
        return lags


def _entries(partitions: dict[str, int], reply: Any) -> list[LogEntry]:
    """The log entries of an XREADGROUP reply; ``partitions``: stream name -> partition."""
    return [
        decode_entry(partitions[text(stream)], text(eid), fields)
        for stream, items in reply or []
        for eid, fields in items
        if fields
    ]


def owner_group(groups: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The owner's consumer group among a log stream's groups (``XINFO GROUPS``): the one that
    has read furthest, should a superseded owner's still be there."""
    owners = [g for g in groups if keys.is_rules_group(text(g["name"]))]
    return max(owners, key=lambda g: entry_id_key(text(g["last-delivered-id"])), default=None)
