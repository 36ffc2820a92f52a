"""Ingestion, without HTTP: authenticate a source, turn a body into standardised events, and
append the good ones to the partition log.

The steps, each batched over the whole request::

    parse (format) -> map (source mapping) -> validate envelope -> filter -> catalogue
      -> identity (subject -> customer) -> opt-in -> de-duplicate + append -> quarantine

Anything that fails a step is quarantined with its reason and raw payload (and reported under
``rejected``); events dropped on purpose (filter, opt-out, an unknown identity the source says to
drop) are counted. The answer is given only after the log entries and the quarantine entries are
in Redis (invariant 1). Backpressure (invariant 5) is checked before appending.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis

from runtime import keys
from runtime.config.store import ConfigStore
from runtime.config.types import document_body, hash_key
from runtime.errors import AuthError, InputError, Overloaded, UnsupportedContentType
from runtime.events.catalogue import Catalogue
from runtime.events.consent import ConsentStore
from runtime.events.envelope import Event, decode_events, validate_batch
from runtime.events.identity import IdentityStore
from runtime.expr import Expr, compile_expr
from runtime.log.group_commit import Arrival, GroupCommit
from runtime.log.partition_log import DAY_MS, PartitionLog
from runtime.log.partitioning import partition_of
from runtime.settings import EspSettings
from runtime.sources.decode import ARROW_TYPES, JSON_TYPES, NDJSON_TYPES, decode_body, media_type, raw_of
from runtime.sources.mapping import compile_mapping
from runtime.sources.models import Source
from runtime.sources.quarantine import Quarantined, QuarantineStore
from runtime.sources.records import parse_records

BACKLOG_REFRESH_S = 0.5
TEXT_TYPES = {"text/csv", "text/plain"}
REPLAY_CONTENT_TYPES = {
    "json": "application/x-ndjson",
    "arrow": "application/x-ndjson",
    "csv": "text/csv",
    "kv": "text/plain",
}


@dataclass(slots=True)
class IngestResult:
    source: str
    total: int
    accepted: int = 0
    duplicates: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)
    filtered: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    dropped_ids: dict[str, str] = field(default_factory=dict)  # event id -> reason, for the trace

    def drop(self, event_id: str, reason: str) -> None:
        self.dropped[reason] += 1
        self.dropped_ids[event_id] = reason

    def to_dict(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
            "filtered": self.filtered,
            "dropped": dict(self.dropped),
        }


@dataclass(slots=True)
class Parsed:
    """A body after parsing and mapping: good events with their record index, failures so far,
    and how to get any record's raw payload back for the quarantine."""

    events: list[Event]
    indices: list[int]
    failures: list[Quarantined]
    total: int
    raw_for: Callable[[int], bytes]
    format: str
    context: bytes = b""

    def quarantined(self, source: str, index: int, event_id: str | None, reason: str, message: str) -> Quarantined:
        return Quarantined(source, index, event_id, reason, message, self.raw_for(index), self.format, self.context)


class CompiledSource:
    """A source document compiled once: its mapping, filter and limits."""

    def __init__(self, doc: Source) -> None:
        self.doc = doc
        self.name = doc.name
        self.mapping = compile_mapping(doc.mapping, source_name=doc.name) if doc.mapping else None
        self.filter: Expr | None = compile_expr(doc.filter) if doc.filter else None
        self.horizon_s = doc.dedupe.horizon // 1000
        self._tokens = float(doc.rate_limit_per_s or 0)
        self._refilled = time.monotonic()

    def body_format(self, content_type: str | None) -> str:
        kind = media_type(content_type)
        if kind in JSON_TYPES or kind in NDJSON_TYPES:
            return "json"
        if kind in ARROW_TYPES:
            return "arrow"
        if kind in TEXT_TYPES and self.doc.format in ("csv", "kv"):
            return self.doc.format
        accepted = sorted(
            JSON_TYPES | NDJSON_TYPES | ARROW_TYPES | (TEXT_TYPES if self.doc.format != "json" else set())
        )
        raise UnsupportedContentType(f"source {self.name!r} does not accept {kind!r}; use one of {accepted}")

    def take(self, count: int) -> None:
        """Per-replica token bucket of ``rate_limit_per_s``; refuses the whole request when short."""
        rate = self.doc.rate_limit_per_s
        if not rate:
            return
        now = time.monotonic()
        self._tokens = min(float(rate), self._tokens + (now - self._refilled) * rate)
        self._refilled = now
        if count > self._tokens:
            wait = max(1, int((count - self._tokens) / rate + 0.999))
            raise Overloaded(f"source {self.name!r} is over its rate limit of {rate} events/s", retry_after_s=wait)
        self._tokens -= count


class Ingestor:
    def __init__(self, settings: EspSettings, client: redis.Redis, *, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self._clock = clock
        self._redis = client
        self.log = PartitionLog(client, horizon_s=settings.idempotency_horizon_s)
        self.appender = GroupCommit(self.log, linger_s=settings.append_linger_ms / 1000)  # concurrent requests together
        self.config = ConfigStore(client)
        self.identities = IdentityStore(client)
        self.consents = ConsentStore(client)
        self.quarantine = QuarantineStore(client)
        self._sources: dict[str, CompiledSource] = {}
        self._keys: dict[str, str] = {}
        self._catalogue = Catalogue([])
        self._version = -1
        self._backlog: dict[int, int] = {}
        self._backlog_checked = 0.0

    # --- who is calling ------------------------------------------------------------------

    def authenticate(self, authorization: str | None, source_header: str | None) -> str:
        """The source a request comes from, or :class:`AuthError` (401 no/bad credentials,
        403 a known key whose source may not post)."""
        return self.authenticate_at(authorization, source_header)[0]

    def authenticate_at(self, authorization: str | None, source_header: str | None) -> tuple[str, int]:
        """:meth:`authenticate`, and the config version read for it: passed on to
        :meth:`ingest` for the same request, it spares that request two more reads of the
        version (one to refresh, one to stamp the log entries). The request started before
        that read, so documents at least that new are the ones invariant 7 asks for."""
        version = self._refresh()
        return self._source_of(authorization, source_header), version

    def _source_of(self, authorization: str | None, source_header: str | None) -> str:
        if authorization:
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise AuthError("Authorization must be 'Bearer <source key>'")
            digest = hash_key(token.strip())
            if digest not in self._keys:
                raise AuthError("the source key is not valid")
            return self._enabled(self._keys[digest])
        if source_header and not self.settings.auth:
            if source_header not in self._sources:
                raise AuthError(f"unknown source {source_header!r}", reason="unknown_source")
            return self._enabled(source_header)
        if source_header:
            raise AuthError("X-ESP-Source is only accepted when auth is off; send 'Authorization: Bearer <key>'")
        raise AuthError("missing credentials: send 'Authorization: Bearer <source key>'")

    def _enabled(self, name: str) -> str:
        if not self._sources[name].doc.enabled:
            raise AuthError(f"source {name!r} is disabled", reason="forbidden")
        return name

    def _refresh(self) -> int:
        """Reload sources and event types when the global config version moved; returns the
        version read. One GET per call and no timer, so a request that starts after a ``PUT``
        returned is handled with the new document (invariant 7), as rules are."""
        current = self.config.version()
        if current == self._version:
            return current
        version, docs = self.config.snapshot()
        sources = {}
        for raw in docs["source"]:
            doc = Source.model_validate(document_body(raw))
            old = self._sources.get(doc.name)
            sources[doc.name] = old if old is not None and old.doc == doc else CompiledSource(doc)
        self._sources = sources
        self._keys = {s.doc.api_key_sha256: n for n, s in sources.items() if s.doc.api_key_sha256}
        self._catalogue = Catalogue(docs["event-type"])
        self._version = version
        return version

    def horizon_days(self, source_name: str) -> int:
        """Days of idempotency buckets kept for a source (the trace looks this far back)."""
        self._refresh()
        source = self._sources.get(source_name)
        return -(-source.horizon_s // 86_400) if source else 1

    # --- the body ------------------------------------------------------------------------

    def ingest(
        self,
        body: bytes,
        content_type: str | None,
        source_name: str,
        *,
        config_version: int | None = None,
        arrival: Arrival | None = None,
    ) -> IngestResult:
        """``config_version``: what :meth:`authenticate_at` read for this request (then the
        documents are not read again); else the version is read here. ``arrival``: the request
        announced to the log when it reached the API (``appender.arrive()``), else here, so that
        an append about to start waits a little for it (``runtime/log/group_commit.py``)."""
        if arrival is None:
            arrival = self.appender.arrive()
        try:
            return self._ingest(body, content_type, source_name, config_version, arrival)
        finally:
            self.appender.leave(arrival)

    def _ingest(
        self, body: bytes, content_type: str | None, source_name: str, config_version: int | None, arrival: Arrival
    ) -> IngestResult:
        if config_version is None:
            config_version = self._refresh()
        source = self._sources[source_name]
        now_ms = int(self._clock() * 1000)
        fmt = source.body_format(content_type)
        if fmt == "json" and source.mapping is None:
            parsed = self._envelopes(body, content_type, source, now_ms)
        else:
            parsed = self._mapped(body, fmt, source, now_ms)
        self.appender.sized(arrival, parsed.total)
        if parsed.total > self.settings.max_events_per_request:
            raise InputError(
                f"{parsed.total} events in one request; at most {self.settings.max_events_per_request} are accepted",
                reason="too_many_events",
            )
        source.take(parsed.total)
        result = IngestResult(source.name, parsed.total)
        events = self._standardise(source, parsed, result)
        self._append(source, events, result, now_ms, config_version, arrival)
        failures = sorted(parsed.failures, key=lambda q: q.index)
        self.quarantine.add(failures, at_ms=now_ms)
        self._remember_dropped(source, result.dropped_ids, now_ms)
        result.rejected = [{"index": q.index, "id": q.id, "reason": q.reason, "message": q.message} for q in failures]
        return result

    def _envelopes(self, body: bytes, content_type: str | None, source: CompiledSource, now_ms: int) -> Parsed:
        """Bodies that already hold envelopes: the typed fast path; raw payloads only on failure."""
        batch, total = decode_events(body, content_type, source=source.name, received_at=now_ms)
        items: list[Any] = []

        def raw_for(index: int) -> bytes:
            if not items:
                items.extend(decode_body(body, content_type))
            return raw_of(items[index])

        parsed = Parsed(batch.events, batch.indices, [], total, raw_for, "json")
        parsed.failures = [parsed.quarantined(source.name, r.index, r.id, r.reason, r.message) for r in batch.rejected]
        return parsed

    def _mapped(self, body: bytes, fmt: str, source: CompiledSource, now_ms: int) -> Parsed:
        records = parse_records(body, fmt, source.doc)
        context = _csv_header(body) if fmt == "csv" and source.doc.csv.header else b""
        mapping = source.mapping or compile_mapping(None, source_name=source.name)
        pairs, mapping_failures = mapping.apply(records)
        batch = validate_batch([envelope for _, envelope in pairs], source=source.name, received_at=now_ms)
        indices = [pairs[i][0] for i in batch.indices]
        parsed = Parsed(batch.events, indices, [], len(records), lambda i: records[i].raw, fmt, context)
        parsed.failures = [
            parsed.quarantined(source.name, f.index, f.id, f.reason, f.message) for f in mapping_failures
        ]
        parsed.failures += [
            parsed.quarantined(source.name, pairs[r.index][0], r.id, r.reason, r.message) for r in batch.rejected
        ]
        return parsed

    def _standardise(self, source: CompiledSource, parsed: Parsed, result: IngestResult) -> list[Event]:
        """Filter, catalogue, identity and opt-in, each over the whole batch. Failures keep the
        original record, so a replay after a config fix goes through the whole pipeline again."""
        doc = source.doc
        kept: list[tuple[Event, int]] = []
        for event, index in zip(parsed.events, parsed.indices, strict=True):
            if source.filter is not None and not source.filter.predicate(event.as_context()):
                result.filtered += 1
                result.dropped_ids[event.id] = "filtered"
                continue
            problem = self._catalogue.check(event.type, event.data, unknown=doc.unknown_types)
            if problem is not None:
                parsed.failures.append(parsed.quarantined(source.name, index, event.id, *problem))
                continue
            kept.append((event, index))
        if doc.identity != "customer" and kept:
            subjects = [e.subject for e, _ in kept]
            customers = self.identities.resolve(doc.identity, subjects, [e.time for e, _ in kept])
            resolved = []
            for (event, index), customer in zip(kept, customers, strict=True):
                if customer is None and doc.unknown_identity == "drop":
                    result.drop(event.id, "unknown_identity")
                    continue
                if customer is None and doc.unknown_identity == "quarantine":
                    message = f"no customer is linked to {doc.identity} {event.subject!r} at that time"
                    parsed.failures.append(
                        parsed.quarantined(source.name, index, event.id, "unknown_identity", message)
                    )
                    continue
                event.customer = customer if customer is not None else f"anonymous:{event.subject}"
                resolved.append((event, index))
            kept = resolved
        if doc.require_opt_in and kept:
            consent = self.consents.opted_in([e.customer for e, _ in kept], doc.opt_in_purpose)
            for (event, _), ok in zip(kept, consent, strict=True):
                if not ok:
                    result.drop(event.id, "opt_out")
            kept = [pair for pair, ok in zip(kept, consent, strict=True) if ok]
        return [event for event, _ in kept]

    def _append(
        self,
        source: CompiledSource,
        events: list[Event],
        result: IngestResult,
        now_ms: int,
        config_version: int,
        arrival: Arrival,
    ) -> None:
        by_partition: dict[int, list[Event]] = defaultdict(list)
        partitions = self.settings.partitions
        seen: set[str] = set()
        repeated = 0
        for event in events:
            if event.id in seen:  # the same id twice in one request: the first one counts
                repeated += 1
                continue
            seen.add(event.id)
            by_partition[partition_of(event.customer, partitions)].append(event)
        self._check_backlog(by_partition)
        appended = self.appender.append(
            dict(by_partition),
            now_ms=now_ms,
            horizon_s=source.horizon_s,
            config_version=config_version,
            arrival=arrival,
        )
        result.duplicates = repeated + sum(len(a.duplicates) for a in appended)
        result.accepted = len(events) - result.duplicates

    def _remember_dropped(self, source: CompiledSource, dropped: dict[str, str], now_ms: int) -> None:
        """One HSET per request, so the trace can say why an event went no further."""
        if not dropped:
            return
        key = keys.dropped(source.name, now_ms // DAY_MS)
        pipe = self._redis.pipeline(transaction=False)
        pipe.hset(key, mapping=dropped)
        pipe.expire(key, source.horizon_s + 86_400)
        pipe.execute()

    def replay(self, *, source: str | None = None, reason: str | None = None, limit: int = 10_000) -> dict[str, Any]:
        """Re-ingest quarantined records through the current config of their source. Records keep
        their ids, so a record that was accepted meanwhile counts as a duplicate, never twice.
        Replayed entries leave the quarantine; those that fail again are quarantined anew."""
        entries = self.quarantine.list(source=source, reason=reason, limit=limit)
        groups: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
        for entry in reversed(entries):  # oldest first, as they arrived
            fmt = "json" if entry["format"] == "arrow" else entry["format"]
            groups[(entry["source"], fmt, entry["context"])].append(entry)
        totals: Counter[str] = Counter()
        self._refresh()
        for (name, fmt, context), group in groups.items():
            if name not in self._sources:
                totals["skipped_unknown_source"] += len(group)
                continue
            lines = [e["raw"].encode() for e in group]
            if fmt == "csv" and context:
                lines.insert(0, context.encode())
            result = self.ingest(b"\n".join(lines), REPLAY_CONTENT_TYPES[fmt], name)
            self.quarantine.remove([e["qid"] for e in group])
            totals["replayed"] += len(group)
            totals["accepted"] += result.accepted
            totals["duplicates"] += result.duplicates
            totals["rejected"] += len(result.rejected)
            totals["filtered"] += result.filtered
            totals["dropped"] += sum(result.dropped.values())
        return dict(totals)

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


def _csv_header(body: bytes) -> bytes:
    for line in body.splitlines():
        if line.strip():
            return line
    return b""
