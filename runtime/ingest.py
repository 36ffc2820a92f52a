"""Ingestion, without HTTP: authenticate a source, decode and validate a body in batch,
append the good events to the partition log, and say what happened to each.

The 202 answer is only given after ``append`` returned, i.e. after Redis has the entries
(invariant 1). Backpressure (invariant 5) is checked before appending: when any partition the
request touches has more unread entries than the bound, the request is refused with
:class:`Overloaded` and nothing of it is appended.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from runtime.config.models import hash_key
from runtime.config.store import ConfigStore
from runtime.envelope import Event, decode_events
from runtime.errors import AuthError, InputError, Overloaded
from runtime.log import PartitionLog
from runtime.partitioning import partition_of
from runtime.settings import EspSettings

SOURCES_REFRESH_S = 1.0
BACKLOG_REFRESH_S = 0.5


@dataclass(frozen=True, slots=True)
class IngestResult:
    source: str
    accepted: int
    duplicates: int
    rejected: list[dict[str, Any]]
    total: int

    def to_dict(self) -> dict[str, Any]:
        return {"accepted": self.accepted, "duplicates": self.duplicates, "rejected": self.rejected}


class Ingestor:
    def __init__(self, settings: EspSettings, client: redis.Redis, *, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self._clock = clock
        self.log = PartitionLog(client, horizon_s=settings.idempotency_horizon_s)
        self.config = ConfigStore(client)
        self._sources: dict[str, dict[str, Any]] = {}
        self._keys: dict[str, str] = {}
        self._sources_version = -1
        self._sources_checked = 0.0
        self._backlog: dict[int, int] = {}
        self._backlog_checked = 0.0

    # --- who is calling ------------------------------------------------------------------

    def authenticate(self, authorization: str | None, source_header: str | None) -> str:
        """The source a request comes from, or :class:`AuthError` (401 no/bad credentials,
        403 a known key whose source may not post)."""
        self._refresh_sources()
        if authorization:
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise AuthError("Authorization must be 'Bearer <source key>'")
            digest = hash_key(token.strip())
            name = self._keys.get(digest)
            if name is None:
                self._refresh_sources(force=True)  # a source created a moment ago
                name = self._keys.get(digest)
            if name is None:
                raise AuthError("the source key is not valid")
            return self._enabled(name)
        if source_header and not self.settings.auth:
            if source_header not in self._sources:
                self._refresh_sources(force=True)
            if source_header not in self._sources:
                raise AuthError(f"unknown source {source_header!r}", reason="unknown_source")
            return self._enabled(source_header)
        if source_header:
            raise AuthError("X-ESP-Source is only accepted when auth is off; send 'Authorization: Bearer <key>'")
        raise AuthError("missing credentials: send 'Authorization: Bearer <source key>'")

    def _enabled(self, name: str) -> str:
        if not self._sources[name].get("enabled", True):
            raise AuthError(f"source {name!r} is disabled", reason="forbidden")
        return name

    def _refresh_sources(self, *, force: bool = False) -> None:
        now = self._clock()
        if not force and now - self._sources_checked < SOURCES_REFRESH_S:
            return
        self._sources_checked = now
        version = self.config.version()
        if version == self._sources_version:
            return
        docs = self.config.list("source")
        self._sources = {d["name"]: d for d in docs}
        self._keys = {d["api_key_sha256"]: d["name"] for d in docs if d.get("api_key_sha256")}
        self._sources_version = version

    # --- the body ------------------------------------------------------------------------

    def ingest(self, body: bytes, content_type: str | None, source: str) -> IngestResult:
        now_ms = int(self._clock() * 1000)
        batch, total = decode_events(body, content_type, source=source, received_at=now_ms)
        if total > self.settings.max_events_per_request:
            raise InputError(
                f"{total} events in one request; at most {self.settings.max_events_per_request} are accepted",
                reason="too_many_events",
            )
        by_partition: dict[int, list[Event]] = defaultdict(list)
        partitions = self.settings.partitions
        seen: set[str] = set()
        repeated = 0
        for event in batch.events:
            if event.id in seen:  # the same id twice in one request: the first one counts
                repeated += 1
                continue
            seen.add(event.id)
            by_partition[partition_of(event.customer, partitions)].append(event)
        self._check_backlog(by_partition)
        appended = self.log.append(dict(by_partition), now_ms=now_ms)
        duplicates = repeated + sum(len(a.duplicates) for a in appended)
        rejected = [r.to_dict() for r in batch.rejected]
        return IngestResult(source, len(batch.events) - duplicates, duplicates, rejected, total)

    def _check_backlog(self, by_partition: dict[int, list[Event]]) -> None:
        now = self._clock()
        if now - self._backlog_checked >= BACKLOG_REFRESH_S:
            self._backlog = self.log.backlog(range(self.settings.partitions))
            self._backlog_checked = now
        bound = self.settings.max_backlog_entries
        behind = [p for p in by_partition if self._backlog.get(p, 0) > bound]
        if behind:
            raise Overloaded(
                f"partitions {behind[:5]} have more than {bound} unprocessed log entries; retry later",
                retry_after_s=1,
            )
