"""The identity store: phone numbers and IMEIs → customer ids, by time.

Each identifier kind is one Redis hash (``esp:identity:phone``, ``esp:identity:imei``) whose
field is the identifier and whose value is that identifier's *timeline*: a short list of links
``(customer, valid_from_ms, valid_to_ms)``, ``None`` meaning unbounded. A recycled number keeps
a link per holder, so an event resolves to whoever held the number at the event's time.

Rules of the timeline (the same in :func:`merge_links` and in the Lua script that applies
them atomically on the server, so concurrent writers never lose a link):

- a link is identified by its ``valid_from``: putting a link with a ``valid_from`` the
  identifier already has replaces that link (its customer and ``valid_to``), so re-importing
  the same file is idempotent and a link is closed by putting it again with a ``valid_to``;
- at time *t* the links with ``valid_from <= t < valid_to`` are valid, and among them the one
  with the latest ``valid_from`` wins (so a new holder's link overrides an open-ended old one
  from its start on, without the old one having to be closed first);
- an identifier keeps at most :data:`MAX_LINKS` links; beyond that the oldest (smallest
  ``valid_from``) are dropped.

Encoding (compact, and cheap to decode in the hot path): a single unbounded link is stored as
the bare customer id; otherwise links are joined by ``\\x1e`` and each is
``customer \\x1f valid_from \\x1f valid_to`` with decimal epoch milliseconds, empty when
unbounded. Customer ids therefore may not contain ``\\x1e`` or ``\\x1f``.

Every access is batched: ``resolve`` is one HMGET round trip (chunked HMGETs in one pipeline
for very large batches), ``put`` one pipeline of EVALSHA calls. This module imports neither
redis nor pyarrow at import time: the pure helpers are usable anywhere.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from runtime import keys
from runtime.errors import InputError
from runtime.events.envelope import MAX_TIME_MS, MIN_TIME_MS, parse_time_ms
from runtime.events.limits import string_problem
from runtime.lua import queue_script, read_script

if TYPE_CHECKING:
    import pyarrow as pa
    import redis

KINDS = ("phone", "imei")
"""Identifier kinds the store holds. ``customer`` is accepted by :meth:`IdentityStore.resolve`
as the identity mapping."""

MAX_LINKS = 32
"""Links kept per identifier (the oldest are dropped beyond this)."""

RS = "\x1e"  # between links
US = "\x1f"  # between a link's fields
_US_BYTES = US.encode()
_RS_BYTES = RS.encode()

SCRIPT_CHUNK = 1_000
"""Identifiers (or customers) per EVALSHA call: one call blocks Redis only briefly, and all the
calls of a batch still travel in one pipeline (one round trip)."""

HMGET_CHUNK = 20_000
"""Fields per HMGET; larger batches send several HMGETs in one pipeline (one round trip)."""


def identity_key(kind: str) -> str:
    """The hash of one identifier kind. (Belongs in :mod:`runtime.keys`.)"""
    return keys.identity(kind)


# ---------------------------------------------------------------------------------------------
# Errors


class InvalidRecord(InputError):
    """One record of a batch is unusable; ``index`` is its position in the batch (or the row in
    the imported file) and ``field`` the offending field."""

    def __init__(self, message: str, *, reason: str, index: int, field: str) -> None:
        super().__init__(f"record {index}: {field}: {message}", reason=reason)
        self.index = index
        self.field = field

    def to_dict(self) -> dict[str, object]:
        return {**super().to_dict(), "index": self.index, "field": self.field}


# ---------------------------------------------------------------------------------------------
# Pure helpers


class Link(NamedTuple):
    """One entry of an identifier's timeline; ``None`` bounds are unbounded."""

    customer: str
    valid_from: int | None = None
    valid_to: int | None = None


@dataclass(frozen=True, slots=True)
class IdentityLink:
    """Input to :meth:`IdentityStore.put`: the customer's phone and/or IMEI, valid in
    ``[valid_from_ms, valid_to_ms)`` (epoch milliseconds; ``None`` = unbounded)."""

    customer: str
    phone: str | None = None
    imei: str | None = None
    valid_from_ms: int | None = None
    valid_to_ms: int | None = None


def encode_links(links: Sequence[Link]) -> str:
    """The stored form of a timeline (see the module docstring)."""
    if len(links) == 1 and links[0].valid_from is None and links[0].valid_to is None:
        return links[0].customer
    return RS.join(f"{c}{US}{'' if f is None else f}{US}{'' if t is None else t}" for c, f, t in links)


def decode_links(raw: str | bytes) -> list[Link]:
    """Inverse of :func:`encode_links`."""
    if isinstance(raw, bytes):
        raw = raw.decode()
    if US not in raw:
        return [Link(raw)]
    out = []
    for record in raw.split(RS):
        customer, start, end = record.split(US)
        out.append(Link(customer, int(start) if start else None, int(end) if end else None))
    return out


def choose_link(links: Iterable[Link], at_ms: int) -> str | None:
    """The customer of the link valid at ``at_ms`` (``valid_from <= at_ms < valid_to``); on
    overlap the latest ``valid_from`` wins (unbounded = earliest), on a tie the later link in
    the list. ``None`` when no link is valid then."""
    best: str | None = None
    best_from: float = 0.0
    for customer, start, end in links:
        if start is not None and at_ms < start:
            continue
        if end is not None and at_ms >= end:
            continue
        key = float("-inf") if start is None else start
        if best is None or key >= best_from:
            best, best_from = customer, key
    return best


def choose_encoded(raw: bytes, at_ms: int) -> str | None:
    """``choose_link(decode_links(raw), at_ms)`` without building the links: the resolve hot
    path for identifiers with a timeline."""
    if _US_BYTES not in raw:
        return raw.decode()
    best: bytes | None = None
    best_from: int | None = None
    for record in raw.split(_RS_BYTES):
        customer, start_text, end_text = record.split(_US_BYTES)
        start = int(start_text) if start_text else None
        if start is not None and at_ms < start:
            continue
        if end_text and at_ms >= int(end_text):
            continue
        if (
            best is None
            or (start is None and best_from is None)
            or (start is not None and (best_from is None or start >= best_from))
        ):
            best, best_from = customer, start
    return None if best is None else best.decode()


def merge_links(existing: Sequence[Link], new: Sequence[Link], *, max_links: int = MAX_LINKS) -> list[Link]:
    """``existing`` with ``new`` applied in order: a link replaces the one with the same
    ``valid_from``; the result is sorted by ``valid_from`` (unbounded first) and keeps the
    ``max_links`` latest. This is what the server-side script does."""
    by_start: dict[int | None, Link] = {link.valid_from: link for link in existing}
    for link in new:
        by_start[link.valid_from] = link
    merged = sorted(by_start.values(), key=lambda link: -(2**63) if link.valid_from is None else link.valid_from)
    return merged[-max_links:] if len(merged) > max_links else merged


def validate_links(links: Sequence[IdentityLink], *, first_index: int = 0) -> None:
    """Raise :class:`InvalidRecord` (reason ``invalid_identity``) for the first unusable link;
    its index is ``first_index`` + the link's position."""
    for offset, link in enumerate(links):
        problem = _link_problem(link)
        if problem is not None:
            field, message = problem
            raise InvalidRecord(message, reason="invalid_identity", index=first_index + offset, field=field)


def _link_problem(link: Any) -> tuple[str, str] | None:
    if not isinstance(link, IdentityLink):
        return "link", f"expected an IdentityLink, got {type(link).__name__}"
    if not isinstance(link.customer, str) or not link.customer:
        return "customer", f"must be a non-empty string, got {link.customer!r}"
    if RS in link.customer or US in link.customer:
        return "customer", "must not contain the control characters \\x1e or \\x1f"
    if link.phone is None and link.imei is None:
        return "phone", "a link needs a phone or an imei (or both)"
    for field in KINDS:
        value = getattr(link, field)
        if value is not None and (not isinstance(value, str) or not value):
            return field, f"must be a non-empty string, got {value!r}"
    for field in ("customer", *KINDS):  # a lone surrogate cannot even be encoded for Redis
        problem = string_problem(getattr(link, field) or "")
        if problem is not None:
            return field, problem[1]
    for field in ("valid_from_ms", "valid_to_ms"):
        value = getattr(link, field)
        # type(...) is int: a bool is not a time
        if value is not None and (type(value) is not int or not MIN_TIME_MS <= value <= MAX_TIME_MS):
            return field, f"must be epoch milliseconds within years 1-9999 (or a time, in a file), got {value!r}"
    if link.valid_from_ms is not None and link.valid_to_ms is not None and link.valid_from_ms >= link.valid_to_ms:
        return "valid_to_ms", f"must be after valid_from_ms ({link.valid_to_ms} <= {link.valid_from_ms})"
    return None


# ---------------------------------------------------------------------------------------------
# Server-side merge (atomic per call, so concurrent writers never lose a link)

_MERGE_LUA = read_script("runtime.events", "identity_merge.lua")


class Script:
    """A Lua script run by EVALSHA inside caller pipelines: one round trip per batch, loading
    the script (and re-running the batch) only when the server does not know it yet. Every
    script used this way must be idempotent, because a batch may run twice."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    def run_pipelined(self, client: redis.Redis, calls: Sequence[tuple[Sequence[str], Sequence[Any]]]) -> list[Any]:
        from redis.exceptions import NoScriptError

        from runtime.redis_client import is_cluster  # imported here: this module stays free of redis

        if not calls:
            return []
        cluster = is_cluster(client)  # whose pipelines refuse EVALSHA: there the source travels
        for _ in range(2):
            pipe = client.pipeline(transaction=False)
            for call_keys, call_args in calls:
                if cluster:
                    queue_script(pipe, self.source, list(call_keys), list(call_args))
                else:
                    pipe.evalsha(self.sha, len(call_keys), *call_keys, *call_args)
            results = pipe.execute(raise_on_error=False)
            if any(isinstance(result, NoScriptError) for result in results):
                client.script_load(self.source)
                continue
            for result in results:
                if isinstance(result, Exception):
                    raise result
            return results
        raise RuntimeError("Redis forgot a script it had just loaded")  # pragma: no cover


_MERGE = Script(_MERGE_LUA)


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# ---------------------------------------------------------------------------------------------
# The store


def _check_kind(kind: str, *, allow_customer: bool = False) -> None:
    if kind in KINDS or (allow_customer and kind == "customer"):
        return
    expected = [*KINDS, "customer"] if allow_customer else list(KINDS)
    raise InputError(f"unknown identifier kind {kind!r}; expected one of {expected}", reason="invalid_identity")


def _field(identifier: Any) -> str:
    """The hash field to look up: non-strings are stringified, ``None`` matches nothing."""
    if type(identifier) is str:
        return identifier
    return "" if identifier is None else str(identifier)


class IdentityStore:
    """Links phone numbers and IMEIs to customers, resolving them by time in batches."""

    def __init__(self, client: redis.Redis) -> None:
        self._redis = client

    def put(self, links: Sequence[IdentityLink]) -> int:
        """Validate and store ``links`` (all or none: a bad link raises before anything is
        written), merging each into its identifier's timeline atomically on the server.
        Returns the number of links stored."""
        return self._put(links, first_index=0)

    def _put(self, links: Sequence[IdentityLink], *, first_index: int) -> int:
        validate_links(links, first_index=first_index)
        calls: list[tuple[Sequence[str], Sequence[Any]]] = []
        for kind in KINDS:
            per_identifier: dict[str, list[Link]] = {}
            for link in links:
                identifier = getattr(link, kind)
                if identifier is not None:
                    entry = Link(link.customer, link.valid_from_ms, link.valid_to_ms)
                    per_identifier.setdefault(identifier, []).append(entry)
            items = [(ident, encode_links(merge_links((), new))) for ident, new in per_identifier.items()]
            for chunk in _chunks(items, SCRIPT_CHUNK):
                args: list[Any] = [MAX_LINKS]
                for identifier, encoded in chunk:
                    args.extend((identifier, encoded))
                calls.append(((identity_key(kind),), args))
        _MERGE.run_pipelined(self._redis, calls)
        return len(links)

    def resolve(
        self, kind: str, identifiers: Sequence[Any], at_ms: Sequence[int] | int | None = None
    ) -> list[str | None]:
        """The customer each identifier belonged to at ``at_ms`` (one time for all, or one per
        identifier; ``None`` = now), ``None`` where unknown. One HMGET round trip; kind
        ``customer`` returns the identifiers unchanged without touching Redis."""
        _check_kind(kind, allow_customer=True)
        if kind == "customer":
            return list(identifiers)
        if not identifiers:
            return []
        if at_ms is not None and not isinstance(at_ms, int) and len(at_ms) != len(identifiers):
            raise InputError(
                f"resolve got {len(identifiers)} identifiers but {len(at_ms)} times", reason="invalid_identity"
            )
        values = self._hmget(identity_key(kind), [_field(i) for i in identifiers])
        if isinstance(next((v for v in values if v is not None), None), str):  # a client with decode_responses
            values = [None if value is None else value.encode() for value in values]
        sep = _US_BYTES
        if at_ms is None or isinstance(at_ms, int):
            at = int(time.time() * 1000) if at_ms is None else at_ms
            return [
                None if value is None else value.decode() if sep not in value else choose_encoded(value, at)
                for value in values
            ]
        return [
            None if value is None else value.decode() if sep not in value else choose_encoded(value, at)
            for value, at in zip(values, at_ms, strict=True)
        ]

    def links(self, kind: str, identifiers: Sequence[str]) -> list[list[Link]]:
        """The stored timeline of each identifier (empty when unknown), in one round trip."""
        _check_kind(kind)
        values = self._hmget(identity_key(kind), [_field(i) for i in identifiers])
        return [[] if value is None else decode_links(value) for value in values]

    def delete(self, kind: str, identifiers: Sequence[str]) -> int:
        """Forget identifiers (all their links); returns how many existed."""
        _check_kind(kind)
        if not identifiers:
            return 0
        return int(self._redis.hdel(identity_key(kind), *identifiers))

    def count(self, kind: str | None = None) -> int:
        """Identifiers stored, of one kind or of all kinds (one round trip)."""
        kinds = KINDS if kind is None else (kind,)
        for each in kinds:
            _check_kind(each)
        pipe = self._redis.pipeline(transaction=False)
        for each in kinds:
            pipe.hlen(identity_key(each))
        return sum(int(n) for n in pipe.execute())

    def _hmget(self, key: str, fields: list[str]) -> list[Any]:
        if len(fields) <= HMGET_CHUNK:
            return self._redis.hmget(key, fields)
        pipe = self._redis.pipeline(transaction=False)
        for chunk in _chunks(fields, HMGET_CHUNK):
            pipe.hmget(key, chunk)
        return [value for part in pipe.execute() for value in part]


# ---------------------------------------------------------------------------------------------
# Parquet import

Progress = Callable[[int, int], None]
"""Called after each imported batch with (rows done, rows in the file)."""


def string_column(column: pa.Array, name: str) -> list[str | None]:
    """A Parquet column of identifiers as Python strings (integers are accepted: phone numbers
    are often stored as int64); empty strings become ``None``."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_integer(column.type):
        column = pc.cast(column, pa.string())
    elif pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        raise InputError(f"column {name!r} must hold strings or integers, not {column.type}", reason="invalid_parquet")
    return [value or None for value in column.to_pylist()]


def time_column(column: pa.Array, name: str) -> list[Any]:
    """A Parquet column of times as epoch milliseconds: integers (already epoch ms), Arrow
    timestamps or dates (any unit; naive means UTC), or RFC 3339 strings. A string that is not
    a time is left as it is, for validation to report with its row."""
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = column.type
    if pa.types.is_integer(kind):
        return column.to_pylist()
    if pa.types.is_timestamp(kind):
        return pc.cast(pc.cast(column, pa.timestamp("ms", tz=kind.tz), safe=False), pa.int64()).to_pylist()
    if pa.types.is_date(kind):
        return pc.cast(pc.cast(column, pa.timestamp("ms")), pa.int64()).to_pylist()
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        out: list[Any] = []
        for text in column.to_pylist():
            parsed = parse_time_ms(text) if text else None
            out.append(text if parsed is None and text else parsed)
        return out
    raise InputError(
        f"column {name!r} must hold epoch milliseconds, timestamps, dates or RFC 3339 strings, not {kind}",
        reason="invalid_parquet",
    )


def iter_parquet(
    path: str | Path, *, required: Sequence[str], optional: Sequence[str], batch_size: int
) -> tuple[int, Iterable[tuple[int, dict[str, pa.Array]]]]:
    """The file's row count and its record batches as ``(first row index, {column: array})``,
    reading only the named columns; a missing required column or an unreadable file raises
    :class:`InputError` (reason ``invalid_parquet``)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(str(path))
    except (OSError, pa.ArrowException) as exc:
        raise InputError(f"cannot read Parquet file {str(path)!r}: {exc}", reason="invalid_parquet") from exc
    names = set(parquet.schema_arrow.names)
    missing = [name for name in required if name not in names]
    if missing:
        raise InputError(f"{path}: missing column(s) {missing}; the file has {sorted(names)}", reason="invalid_parquet")
    columns = [*required, *(name for name in optional if name in names)]
    total = parquet.metadata.num_rows

    def batches() -> Iterable[tuple[int, dict[str, pa.Array]]]:
        done = 0
        try:
            for batch in parquet.iter_batches(batch_size=batch_size, columns=columns):
                yield done, {name: batch.column(name) for name in columns}
                done += batch.num_rows
        except pa.ArrowException as exc:
            raise InputError(f"cannot read Parquet file {str(path)!r}: {exc}", reason="invalid_parquet") from exc

    return total, batches()


def import_parquet(
    store: IdentityStore, path: str | Path, *, batch_size: int = 50_000, progress: Progress | None = None
) -> int:
    """Load identity links from a Parquet file with columns ``customer`` and ``phone`` and/or
    ``imei``, optionally ``valid_from`` / ``valid_to`` (see :func:`time_column`), one batch
    (one Redis round trip) at a time. Returns the rows imported.

    Not atomic across batches: when a row is invalid (the error names its row index), the
    batches before it are stored. Re-importing a file is idempotent."""
    total, batches = iter_parquet(
        path, required=("customer",), optional=("phone", "imei", "valid_from", "valid_to"), batch_size=batch_size
    )
    done = 0
    for first, columns in batches:
        if done == 0 and "phone" not in columns and "imei" not in columns:
            raise InputError(f"{path}: needs a 'phone' or an 'imei' column", reason="invalid_parquet")
        n = len(columns["customer"])
        customers = string_column(columns["customer"], "customer")
        none: list[Any] = [None] * n
        phones = string_column(columns["phone"], "phone") if "phone" in columns else none
        imeis = string_column(columns["imei"], "imei") if "imei" in columns else none
        starts = time_column(columns["valid_from"], "valid_from") if "valid_from" in columns else none
        ends = time_column(columns["valid_to"], "valid_to") if "valid_to" in columns else none
        links = [
            IdentityLink(c or "", p, i, f, t)
            for c, p, i, f, t in zip(customers, phones, imeis, starts, ends, strict=True)
        ]
        store._put(links, first_index=first)
        done += n
        if progress is not None:
            progress(done, total)
    return done
