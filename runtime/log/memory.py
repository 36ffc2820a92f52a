"""The partition log in a process's memory, for unit tests: :class:`LogStorage` with the Redis
log's behaviour (an event id seen within the horizon is a duplicate, remembered as the same
96-bit digest of (source, id), one entry per partition
and request carrying the config version, a read cursor per partition that ``take`` sets,
trimming by entry id, backlog as entries not yet read). Entries are kept as the fields Redis
keeps and decoded by the same :func:`decode_entry`. Not thread-safe; ``read`` never blocks."""

from __future__ import annotations

import time
from collections.abc import Iterable

from runtime.config.store import ConfigStorage
from runtime.events.envelope import Event
from runtime.log.partition_log import (
    DAY_MS,
    Appended,
    LogEntry,
    decode_entry,
    encode_events,
    encode_location,
    horizon_days,
    id_digest,
    id_keys,
)
from runtime.log.streams import entry_id_key

Fields = dict[bytes, bytes]  # a stream entry's fields: b"b" events, b"d" duplicate positions, b"v" config version


class MemoryPartitionLog:
    """:class:`LogStorage` in lists; the config version appended with each entry is
    ``config.version()`` (0 without a config store), as Redis reads the store's counter."""

    def __init__(self, *, horizon_s: int, config: ConfigStorage | None = None) -> None:
        self._horizon_days = horizon_days(horizon_s)
        self._config = config
        self._streams: dict[int, list[tuple[str, Fields]]] = {}  # partition -> entries, oldest first
        self._cursors: dict[int, str] = {}  # partition -> last entry id read (the owner's consumer group)
        self._epochs: dict[int, int] = {}  # partition -> ownership epoch
        # (partition, source, first day, days) -> digest -> location: the Redis log's keys of remembered ids
        self._seen: dict[tuple[int, str, int, int], dict[bytes, str]] = {}
        self._last_id = (0, 0)

    def append(
        self,
        by_partition: dict[int, list[Event]],
        *,
        now_ms: int,
        horizon_s: int | None = None,
        config_version: int | None = None,
    ) -> list[Appended]:
        if not by_partition:
            return []
        source = next(iter(by_partition.values()))[0].source
        days = self._horizon_days if horizon_s is None else horizon_days(horizon_s)
        checked, _, written = id_keys(now_ms // DAY_MS, days)
        first = checked[written][0]
        if config_version is None:
            config_version = self._config.version() if self._config else 0
        version = str(config_version).encode()
        out = []
        for partition, events in by_partition.items():
            remembered = [self._seen.get((partition, source, *key), {}) for key in checked]
            digests = [id_digest(source, e.id) for e in events]
            dups = tuple(i for i, d in enumerate(digests) if any(d in ids for ids in remembered))
            if len(dups) == len(events):
                out.append(Appended(partition, None, dups))
                continue
            entry_id = self._next_id()
            fields = {b"b": encode_events(events), b"d": ",".join(map(str, dups)).encode(), b"v": version}
            self._streams.setdefault(partition, []).append((entry_id, fields))
            where = encode_location(partition, entry_id, first)
            self._seen.setdefault((partition, source, *checked[written]), {}).update(
                {d: where for i, d in enumerate(digests) if i not in dups}
            )
            out.append(Appended(partition, entry_id, dups))
        return out

    def _next_id(self) -> str:
        """A stream id as Redis makes them: ``<ms>-<seq>``, always greater than the last."""
        ms = int(time.time() * 1000)
        self._last_id = (ms, 0) if ms > self._last_id[0] else (self._last_id[0], self._last_id[1] + 1)
        return f"{self._last_id[0]}-{self._last_id[1]}"

    def take(self, offsets: dict[int, str], *, owner: str) -> dict[int, int]:
        for p, offset in offsets.items():
            self._streams.setdefault(p, [])
            self._cursors[p] = offset
            self._epochs[p] = self._epochs.get(p, 0) + 1
        return {p: self._epochs[p] for p in offsets}

    def epochs(self, partitions: list[int]) -> list[int | None]:
        return [self._epochs.get(p) for p in partitions]

    def read(self, partitions: list[int], *, owner: str, count: int, block_ms: int) -> list[LogEntry]:
        entries: list[LogEntry] = []
        for p in partitions:
            if p not in self._cursors:
                raise LookupError(f"partition {p} has not been taken: call take first")
            batch = self._after(p, self._cursors[p])[:count]
            if batch:
                self._cursors[p] = batch[-1][0]
            entries += [decode_entry(p, entry_id, fields) for entry_id, fields in batch]
        return entries

    def read_range(self, partition: int, after: str, count: int) -> list[LogEntry]:
        return [decode_entry(partition, eid, fields) for eid, fields in self._after(partition, after)[:count]]

    def trim(self, offsets: dict[int, str]) -> None:
        for p, min_id in offsets.items():
            self._streams[p] = [e for e in self._streams.get(p, []) if entry_id_key(e[0]) >= entry_id_key(min_id)]

    def backlog(self, partitions: Iterable[int]) -> dict[int, int]:
        return {p: len(self._after(p, self._cursors[p])) if p in self._cursors else 0 for p in partitions}

    def _after(self, partition: int, entry_id: str) -> list[tuple[str, Fields]]:
        after = entry_id_key(entry_id)
        return [e for e in self._streams.get(partition, []) if entry_id_key(e[0]) > after]
