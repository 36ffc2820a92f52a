"""The consent store: has a customer opted in, globally or for one purpose (marketing, sms...)?

One Redis hash ``esp:consent``: field = customer, value = that customer's flags, each with the
time it was given. Rules (the same in :func:`merge_consents` and in the Lua script that
applies them atomically, so concurrent writers converge whatever their order):

- per (customer, purpose) the record with the latest ``at_ms`` wins; on equal times an opt-out
  wins over an opt-in (the merge is commutative, and doubt means no);
- :meth:`ConsentStore.opted_in` for a purpose answers the purpose's flag when the customer has
  one, else the global flag; a customer with no record has not opted in.

Encoding: entries ``purpose:flag:at_ms`` joined by ``,``, the global flag with an empty purpose,
e.g. ``:1:1767225600000,sms:0:1767312000000``. Purposes are config names
(``[a-z0-9][a-z0-9._-]*``), so they never contain the separators.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from runtime import keys
from runtime.config.types import NAME_PATTERN
from runtime.errors import InputError
from runtime.events.envelope import MAX_TIME_MS, MIN_TIME_MS
from runtime.events.identity import (
    SCRIPT_CHUNK,
    InvalidRecord,
    Progress,
    Script,
    iter_parquet,
    string_column,
    time_column,
)
from runtime.events.limits import string_problem
from runtime.lua import read_script

if TYPE_CHECKING:
    import pyarrow as pa
    import redis

CONSENT_KEY = keys.CONSENT
"""The consent hash. (Belongs in :mod:`runtime.keys`.)"""

GLOBAL = ""
"""The purpose name under which the global flag is stored."""

_PURPOSE = re.compile(NAME_PATTERN)


@dataclass(frozen=True, slots=True)
class ConsentRecord:
    """Input to :meth:`ConsentStore.put`. ``purpose=None`` is the global flag; ``at_ms`` is
    when the consent was given or withdrawn (epoch ms; ``None`` = now)."""

    customer: str
    opted_in: bool
    purpose: str | None = None
    at_ms: int | None = None


class Flag(NamedTuple):
    opted_in: bool
    at_ms: int


# ---------------------------------------------------------------------------------------------
# Pure helpers


def encode_consents(flags: dict[str, Flag]) -> str:
    return ",".join(
        f"{purpose}:{'1' if flag.opted_in else '0'}:{flag.at_ms}" for purpose, flag in sorted(flags.items())
    )


def decode_consents(raw: str | bytes) -> dict[str, Flag]:
    if isinstance(raw, bytes):
        raw = raw.decode()
    out = {}
    for entry in raw.split(","):
        purpose, flag, at = entry.split(":")
        out[purpose] = Flag(flag == "1", int(at))
    return out


def wins(new: Flag, old: Flag | None) -> bool:
    """Whether ``new`` replaces ``old`` for the same (customer, purpose)."""
    if old is None or new.at_ms > old.at_ms:
        return True
    return new.at_ms == old.at_ms and not new.opted_in


def merge_consents(existing: dict[str, Flag], new: Sequence[tuple[str, Flag]]) -> dict[str, Flag]:
    merged = dict(existing)
    for purpose, flag in new:
        if wins(flag, merged.get(purpose)):
            merged[purpose] = flag
    return merged


def decide(raw: str | bytes | None, purpose: str | None) -> bool:
    """The answer of :meth:`ConsentStore.opted_in` for one stored value (hot path)."""
    if raw is None:
        return False
    if isinstance(raw, bytes):
        raw = raw.decode()
    wanted = GLOBAL if purpose is None else purpose
    global_flag = False
    for entry in raw.split(","):
        name, flag, _ = entry.split(":", 2)
        if name == wanted:
            return flag == "1"
        if name == GLOBAL:
            global_flag = flag == "1"
    return global_flag


def validate_consents(records: Sequence[ConsentRecord], *, first_index: int = 0) -> None:
    """Raise :class:`InvalidRecord` (reason ``invalid_consent``) for the first unusable record."""
    for offset, record in enumerate(records):
        problem = _consent_problem(record)
        if problem is not None:
            field, message = problem
            raise InvalidRecord(message, reason="invalid_consent", index=first_index + offset, field=field)


def _consent_problem(record: Any) -> tuple[str, str] | None:
    if not isinstance(record, ConsentRecord):
        return "record", f"expected a ConsentRecord, got {type(record).__name__}"
    if not isinstance(record.customer, str) or not record.customer:
        return "customer", f"must be a non-empty string, got {record.customer!r}"
    if (problem := string_problem(record.customer)) is not None:  # a lone surrogate cannot be encoded for Redis
        return "customer", problem[1]
    if not isinstance(record.opted_in, bool):
        return "opted_in", f"must be true or false, got {record.opted_in!r}"
    if record.purpose is not None and (not isinstance(record.purpose, str) or not _PURPOSE.match(record.purpose)):
        return "purpose", f"must match {NAME_PATTERN}, got {record.purpose!r}"
    at = record.at_ms
    if at is not None and (type(at) is not int or not MIN_TIME_MS <= at <= MAX_TIME_MS):
        return "at_ms", f"must be epoch milliseconds within years 1-9999 (or a time, in a file), got {at!r}"
    return None


_MERGE_LUA = read_script("runtime.events", "consent_merge.lua")
_MERGE = Script(_MERGE_LUA)


class ConsentStore:
    """Opt-in flags per customer, global and per purpose, read in batches."""

    def __init__(self, client: redis.Redis) -> None:
        self._redis = client

    def put(self, records: Sequence[ConsentRecord]) -> int:
        """Validate and store ``records`` (a bad one raises before anything is written), each
        merged atomically on the server. Returns the number of records stored."""
        return self._put(records, first_index=0)

    def _put(self, records: Sequence[ConsentRecord], *, first_index: int) -> int:
        validate_consents(records, first_index=first_index)
        now = int(time.time() * 1000)
        per_customer: dict[str, dict[str, Flag]] = {}
        for record in records:
            purpose = GLOBAL if record.purpose is None else record.purpose
            flag = Flag(record.opted_in, now if record.at_ms is None else record.at_ms)
            flags = per_customer.setdefault(record.customer, {})
            if wins(flag, flags.get(purpose)):
                flags[purpose] = flag
        items = [(customer, encode_consents(flags)) for customer, flags in per_customer.items()]
        calls = []
        for start in range(0, len(items), SCRIPT_CHUNK):
            args: list[str] = []
            for customer, encoded in items[start : start + SCRIPT_CHUNK]:
                args.extend((customer, encoded))
            calls.append(((CONSENT_KEY,), args))
        _MERGE.run_pipelined(self._redis, calls)
        return len(records)

    def opted_in(self, customers: Sequence[str], purpose: str | None = None) -> list[bool]:
        """Per customer: opted in for ``purpose`` (its own flag if it has one, else the global
        flag) or globally (``purpose=None``). Unknown customers have not. One HMGET."""
        if not customers:
            return []
        return [decide(raw, purpose) for raw in self._redis.hmget(CONSENT_KEY, [c or "" for c in customers])]

    def get(self, customers: Sequence[str]) -> list[dict[str, Any]]:
        """Each customer's stored flags, ``{"global": {...} | None, "purposes": {name: {...}}}``
        with ``{"opted_in": bool, "at_ms": int}`` per flag. One HMGET."""
        if not customers:
            return []
        out = []
        for raw in self._redis.hmget(CONSENT_KEY, list(customers)):
            flags = decode_consents(raw) if raw is not None else {}
            as_dict = {name: {"opted_in": f.opted_in, "at_ms": f.at_ms} for name, f in flags.items()}
            out.append({"global": as_dict.pop(GLOBAL, None), "purposes": as_dict})
        return out

    def delete(self, customers: Sequence[str]) -> int:
        """Forget customers' consent records (they are then not opted in); returns how many existed."""
        return int(self._redis.hdel(CONSENT_KEY, *customers)) if customers else 0

    def count(self) -> int:
        """Customers with a consent record."""
        return int(self._redis.hlen(CONSENT_KEY))


_WORDS = {"true": True, "yes": True, "y": True, "1": True, "false": False, "no": False, "n": False, "0": False}


def _bool_column(column: pa.Array) -> list[Any]:
    """Booleans, 0/1 or true/false/yes/no strings as bools; anything else is left as it is,
    for validation to report with its row."""
    import pyarrow as pa

    if pa.types.is_boolean(column.type):
        return column.to_pylist()
    if pa.types.is_integer(column.type):
        return [bool(v) if v in (0, 1) else v for v in column.to_pylist()]
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        return [_WORDS.get(text.strip().lower(), text) if text is not None else None for text in column.to_pylist()]
    raise InputError(f"column 'opted_in' must hold booleans, not {column.type}", reason="invalid_parquet")


def import_parquet(
    store: ConsentStore, path: str | Path, *, batch_size: int = 50_000, progress: Progress | None = None
) -> int:
    """Load consent records from a Parquet file with columns ``customer``, ``opted_in``
    (bool, 0/1 or true/false strings), optionally ``purpose`` (null = global) and ``at``
    (or ``at_ms``: epoch ms, timestamps, dates or RFC 3339; missing = the import's time).
    One Redis round trip per batch; not atomic across batches; re-importing is idempotent."""
    total, batches = iter_parquet(
        path, required=("customer", "opted_in"), optional=("purpose", "at", "at_ms"), batch_size=batch_size
    )
    done = 0
    for first, columns in batches:
        n = len(columns["customer"])
        none: list[Any] = [None] * n
        customers = string_column(columns["customer"], "customer")
        flags = _bool_column(columns["opted_in"])
        purposes = string_column(columns["purpose"], "purpose") if "purpose" in columns else none
        at_name = "at" if "at" in columns else "at_ms" if "at_ms" in columns else None
        times = time_column(columns[at_name], at_name) if at_name else none
        records = [
            ConsentRecord(c or "", f, p, t) for c, f, p, t in zip(customers, flags, purposes, times, strict=True)
        ]
        store._put(records, first_index=first)
        done += n
        if progress is not None:
            progress(done, total)
    return done
