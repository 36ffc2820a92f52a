"""A source's mapping, compiled once: records -> envelopes ``{id, type, time, subject, data}``.

:func:`compile_mapping` turns a :class:`~runtime.config.sources.Mapping` into one closure per
output value (every spec is read, checked and specialised here, never per record);
:meth:`CompiledMapping.apply` runs them over a batch. A record that cannot be mapped becomes a
:class:`Failure` with its index, a machine-readable reason and a message naming the source, the
output field, what was expected and what arrived; the other records go on.

Semantics (DESIGN.md §3-4, ``runtime/config/sources.py``):

- Source paths are read from the parsed record: the whole path as a key first (CSV and kv
  records are flat, and their keys may contain dots), then a dotted walk into nested objects.
  A missing key and a null value are the same thing.
- ``id``: a path (numbers become strings) or a digest (sha1 hex, 24 characters) of the JSON
  list of several paths' values, missing ones as null, so feeds without ids de-duplicate on
  content (values as parsed: the CSV text "1" and the JSON number 1 digest differently).
  ``type``: a constant, or a path, through ``map`` when given. ``subject``: a path.
- ``time``: :class:`~runtime.config.sources.TimeSpec`, output epoch milliseconds.
- ``data``: fields in declaration order (an ``expr`` sees the event mapped so far). A value
  (from a path or an expression) that is missing, null or an empty string takes ``default``,
  else fails when ``required``, else is left out; other values go through ``map``, then
  ``type``. A ``const`` is mapped and coerced at compile time, a ``default`` coerced (it is
  the output value, so not mapped): a bad one is a config error.
- ``keep_unmapped``: top-level source keys no path above names are copied into ``data``
  (mapped fields win).
- No mapping: the records are envelopes already and are passed on as they are (the
  envelope *is* the record's dict).

Reasons: ``missing_field``, ``unmapped_value``, ``invalid_time``, ``invalid_value``,
``mapping_error`` (an expression failed); records that did not parse keep their own reason.
"""

from __future__ import annotations

import copy
import hashlib
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from datetime import time as dtime
from typing import Any
from zoneinfo import ZoneInfo

import msgspec

from runtime.adapters.records import Record, gc_paused
from runtime.config.sources import FieldSpec, Mapping
from runtime.envelope import MAX_TIME_MS, MAX_TYPE_LENGTH, MIN_TIME_MS
from runtime.errors import ConfigError, ExpressionError
from runtime.expr import EvalError, compile_expr

__all__ = ["CompiledMapping", "Failure", "compile_mapping"]

INT_MIN = -(2**63)
INT_MAX = 2**63 - 1
ID_DIGEST_LENGTH = 24

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_NAIVE_EPOCH = datetime(1970, 1, 1)
_ONE_MS = timedelta(milliseconds=1)
_BAD: Any = object()  # "cannot convert" from the converters below (None is a legal value)
_NUMBER = re.compile(r"\s*[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\s*", re.ASCII)
_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})
_TIME_FORMATS = ("auto", "epoch_s", "epoch_ms", "iso")


@dataclass(frozen=True, slots=True)
class Failure:
    """A record that did not become an envelope: its index in the body, why, and its raw bytes.
    ``id`` is the event id when it was mapped before the failure."""

    index: int
    reason: str
    message: str
    raw: bytes
    id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "id": self.id, "reason": self.reason, "message": self.message}


class _Fail(Exception):
    """Raised by the per-field closures; ``apply`` turns it into a :class:`Failure`."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(reason, message)
        self.reason = reason
        self.message = message


Fields = dict[str, Any]
Getter = Callable[[Fields], Any]
Step = Callable[[Fields, dict[str, Any], dict[str, Any]], None]


class CompiledMapping:
    """A compiled mapping; immutable and thread-safe. ``apply`` maps a batch of records."""

    __slots__ = ("_id_of", "_run", "mapping", "source_name")

    def __init__(
        self,
        source_name: str,
        mapping: Mapping | None,
        run: Callable[[Fields], dict[str, Any]] | None,
        id_of: Getter | None,
    ) -> None:
        self.source_name = source_name
        self.mapping = mapping
        self._run = run
        self._id_of = id_of

    def apply(self, records: list[Record]) -> tuple[list[tuple[int, dict[str, Any]]], list[Failure]]:
        """(record index, envelope) for each record that maps, and a :class:`Failure` for each
        that does not; every record is in exactly one of the two lists, in record order."""
        with gc_paused():
            return self._apply(records)

    def _apply(self, records: list[Record]) -> tuple[list[tuple[int, dict[str, Any]]], list[Failure]]:
        good: list[tuple[int, dict[str, Any]]] = []
        bad: list[Failure] = []
        run = self._run
        if run is None:  # the records are envelopes already
            for index, record in enumerate(records):
                fields = record.fields
                if fields is None:
                    reason, message = record.error or ("unparseable", "record could not be parsed")
                    bad.append(Failure(index, reason, message, record.raw))
                else:
                    good.append((index, fields))
            return good, bad
        append = good.append
        for index, record in enumerate(records):
            fields = record.fields
            if fields is None:
                reason, message = record.error or ("unparseable", "record could not be parsed")
                bad.append(Failure(index, reason, message, record.raw))
                continue
            try:
                append((index, run(fields)))
            except _Fail as fail:
                bad.append(Failure(index, fail.reason, fail.message, record.raw, self._failed_id(fields)))
            except Exception as exc:  # a value no converter foresaw: still only this record
                message = f"source {self.source_name!r}: record cannot be mapped: {type(exc).__name__}: {exc}"
                bad.append(Failure(index, "mapping_error", message[:500], record.raw, self._failed_id(fields)))
        return good, bad

    def _failed_id(self, fields: Fields) -> str | None:
        if self._id_of is None:
            return None
        try:
            return self._id_of(fields)
        except Exception:
            return None

    def __repr__(self) -> str:
        return f"CompiledMapping(source={self.source_name!r}, passthrough={self._run is None})"


def compile_mapping(mapping: Mapping | None, *, source_name: str) -> CompiledMapping:
    """Compile ``mapping`` once for source ``source_name``; None means records are envelopes.

    Raises :class:`~runtime.errors.ConfigError` naming the source and the field path (e.g.
    ``mapping.data.duration_s.expr``) for a bad expression, time format, constant or default.
    """
    if mapping is None:
        return CompiledMapping(source_name, None, None, None)
    if isinstance(mapping, dict):
        try:
            mapping = Mapping.model_validate(mapping)
        except Exception as exc:
            raise ConfigError(f"source {source_name!r} field 'mapping': {exc}") from None
    c = _Compiler(source_name)
    id_of = c.id_fn(mapping)
    type_of = c.type_fn(mapping)
    time_of = c.time_fn(mapping)
    subject_of = c.text_fn(mapping.subject, "subject")
    steps = [c.data_step(name, spec) for name, spec in mapping.data_specs().items()]
    keep = mapping.keep_unmapped
    used = frozenset(c.used)
    type_const = mapping.type_spec().const

    dynamic_type = type_of if type_const is None else None

    def run(fields: Fields) -> dict[str, Any]:
        data: dict[str, Any] = {}
        envelope = {
            "id": id_of(fields),
            "type": type_const if dynamic_type is None else dynamic_type(fields),
            "time": time_of(fields),
            "subject": subject_of(fields),
            "data": data,
        }
        for step in steps:
            step(fields, data, envelope)
        if keep:
            for key, value in fields.items():
                if key not in used and key not in data:
                    data[key] = value
        return envelope

    return CompiledMapping(source_name, mapping, run, id_of)


# --- value conversions (return _BAD when the value cannot be converted) --------------------


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _text(value: Any) -> Any:
    """An id, subject or type as a string: strings as they are, numbers written out."""
    cls = value.__class__
    if cls is str:
        return value
    if cls is int:
        return str(value)
    if cls is float:
        if value.is_integer():
            return str(int(value))
        return repr(value) if math.isfinite(value) else _BAD
    if cls is bool:
        return "true" if value else "false"
    return _BAD


def _key(value: Any) -> str:
    """A value as a ``map`` key: strings as they are, numbers and booleans written out."""
    cls = value.__class__
    if cls is str:
        return value
    if cls is bool:
        return "true" if value else "false"
    if cls is float and value.is_integer():
        return str(int(value))
    return str(value)


def _number(text: str) -> int | float | None:
    """A decimal number written as text ("42", "-1.5", "1e3"), else None (no nan/inf/1_000)."""
    if len(text) > 64 or not _NUMBER.fullmatch(text):
        return None
    stripped = text.strip()
    if stripped.lstrip("+-").isdigit():
        return int(stripped)
    value = float(stripped)
    return value if math.isfinite(value) else None


def _to_string(value: Any) -> Any:
    cls = value.__class__
    if cls is str:
        return value
    if cls is bool:
        return "true" if value else "false"
    if cls is int:
        return str(value)
    if cls is float:
        return repr(value) if math.isfinite(value) else _BAD
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    return _BAD


def _to_int(value: Any) -> Any:
    cls = value.__class__
    if cls is int:
        return value if INT_MIN <= value <= INT_MAX else _BAD
    if cls is str:
        if value.isdigit() and value.isascii() and len(value) < 19:
            return int(value)
        number = _number(value)
        if number is None:
            return _BAD
        value, cls = number, number.__class__
        if cls is int:
            return value if INT_MIN <= value <= INT_MAX else _BAD
    if cls is float and value.is_integer() and INT_MIN <= value <= INT_MAX:
        return int(value)
    return _BAD


def _to_float(value: Any) -> Any:
    cls = value.__class__
    if cls is float:
        return value if math.isfinite(value) else _BAD
    if cls is int:
        try:
            return float(value)
        except OverflowError:
            return _BAD
    if cls is str:
        number = _number(value)
        if number is None:
            return _BAD
        try:
            number = float(number)
        except OverflowError:
            return _BAD
        return number if math.isfinite(number) else _BAD
    return _BAD


def _to_bool(value: Any) -> Any:
    cls = value.__class__
    if cls is bool:
        return value
    if cls is str:
        word = value.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
        return _BAD
    if cls is int and value in (0, 1):
        return value == 1
    return _BAD


_COERCE: dict[str, Callable[[Any], Any]] = {
    "string": _to_string,
    "int": _to_int,
    "float": _to_float,
    "bool": _to_bool,
}


# --- time --------------------------------------------------------------------------------


def _in_range(ms: int) -> Any:
    return ms if MIN_TIME_MS <= ms <= MAX_TIME_MS else _BAD


def _datetime_ms(value: datetime | date, zone: Any) -> int:
    """Epoch ms of a datetime; a naive one (or a date, at midnight) is wall time in ``zone``."""
    if value.__class__ is not datetime:
        if not isinstance(value, datetime):
            value = datetime.combine(value, dtime())  # a date
    if value.tzinfo is None:
        if zone is timezone.utc:
            return (value - _NAIVE_EPOCH) // _ONE_MS
        return (value - zone.utcoffset(value) - _NAIVE_EPOCH) // _ONE_MS
    return (value - _EPOCH) // _ONE_MS


def _epoch_fn(scale: int, zone: Any) -> Callable[[Any], Any]:
    """Epoch numbers (``scale`` 1000: seconds, fractions rounded to the millisecond; 1: ms)."""

    def convert(value: Any) -> Any:
        cls = value.__class__
        if cls is int:
            return _in_range(value * scale)
        if cls is str:
            if value.isdigit() and value.isascii() and len(value) <= 20:
                return _in_range(int(value) * scale)
            value = _number(value)
            if value is None:
                return _BAD
            cls = value.__class__
            if cls is int:
                return _in_range(value * scale)
        if cls is float:
            if not math.isfinite(value) or abs(value) > 1e16:
                return _BAD
            return _in_range(round(value * 1000) if scale == 1000 else int(value))
        if isinstance(value, (datetime, date)):
            return _in_range(_datetime_ms(value, zone))
        return _BAD

    return convert


def _auto_fn(zone: Any) -> Callable[[Any], Any]:
    """Epoch milliseconds (a number or a numeric string), else RFC 3339 / ISO 8601."""
    epoch_ms = _epoch_fn(1, zone)

    def convert(value: Any) -> Any:
        if value.__class__ is str:
            if value.isdigit() and value.isascii():
                return _in_range(int(value)) if len(value) <= 20 else _BAD
            if _NUMBER.fullmatch(value) is not None:
                return epoch_ms(value)
            return _in_range(_datetime_ms(datetime.fromisoformat(value), zone))
        return epoch_ms(value)

    return convert


def _iso_fn(zone: Any) -> Callable[[Any], Any]:
    def convert(value: Any) -> Any:
        if value.__class__ is str:
            return _in_range(_datetime_ms(datetime.fromisoformat(value), zone))
        if isinstance(value, (datetime, date)):
            return _in_range(_datetime_ms(value, zone))
        return _BAD

    return convert


_FIXED_WIDTH = {"Y": 4, "m": 2, "d": 2, "H": 2, "M": 2, "S": 2}


def _fixed_layout(pattern: str) -> tuple[int, list[tuple[str, int, int]], list[tuple[int, str]]] | None:
    """(length, [(directive, start, end)], [(position, literal)]) for patterns made only of
    %Y %m %d %H %M %S and literal characters, else None."""
    slots: list[tuple[str, int, int]] = []
    literals: list[tuple[int, str]] = []
    pos = i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "%":
            directive = pattern[i + 1 : i + 2]
            if directive == "%":
                literals.append((pos, "%"))
                pos += 1
            elif directive in _FIXED_WIDTH and all(d != directive for d, _, _ in slots):
                width = _FIXED_WIDTH[directive]
                slots.append((directive, pos, pos + width))
                pos += width
            else:
                return None
            i += 2
        else:
            if ch.isdigit():
                return None
            literals.append((pos, ch))
            pos += 1
            i += 1
    if not {"Y", "m", "d"} <= {d for d, _, _ in slots}:
        return None
    return pos, slots, literals


_HOUR_CACHE_SIZE = 4096
_TAIL_MS = {"M": 60_000, "S": 1000}


def _pattern_fn(pattern: str, zone: Any) -> Callable[[Any], Any]:
    """A strptime pattern. Fixed-width digit patterns (e.g. '%Y%m%d%H%M%S') take fast paths
    that give what strptime gives, or fall back to strptime:

    - ``exact``: slice the digits, build the datetime;
    - ``fast``, when the date and hour come before the minutes and seconds: the epoch ms of
      each date-and-hour prefix is cached (for hours without a UTC-offset change), so most
      records cost two slices and an addition.
    """
    strptime = datetime.strptime
    layout = _fixed_layout(pattern)

    def slow(value: str) -> Any:
        return _in_range(_datetime_ms(strptime(value, pattern), zone))

    if layout is None:
        exact = slow
    else:
        length, slots, literals = layout
        spans = [next(((s, e) for d, s, e in slots if d == name), None) for name in ("Y", "m", "d", "H", "M", "S")]

        def exact(value: str) -> Any:
            if len(value) != length or not value.isascii():
                return slow(value)
            for position, literal in literals:
                if value[position] != literal:
                    return slow(value)
            parts = []
            for span in spans:
                if span is None:
                    parts.append(0)
                    continue
                piece = value[span[0] : span[1]]
                if not piece.isdigit():
                    return slow(value)
                parts.append(int(piece))
            try:
                moment = datetime(*parts)
            except ValueError:
                return slow(value)
            return _in_range(_datetime_ms(moment, zone))

    fast = exact
    if layout is not None:
        head_slots = [slot for slot in slots if slot[0] in ("Y", "m", "d", "H")]
        tail_slots = [slot for slot in slots if slot[0] in _TAIL_MS]
        cut = max(end for _, _, end in head_slots)
        if all(start >= cut for _, start, _ in tail_slots):
            tail = [(start, end, _TAIL_MS[d]) for d, start, end in tail_slots]
            tail_literals = [(position, literal) for position, literal in literals if position >= cut]
            head_literals = [(position, literal) for position, literal in literals if position < cut]
            head_spans = [next(((s, e) for d, s, e in head_slots if d == name), None) for name in ("Y", "m", "d", "H")]
            cache: dict[str, Any] = {}
            hour = timedelta(minutes=59, seconds=59)

            def hour_ms(prefix: str) -> Any:
                """Epoch ms of the prefix's date and hour, or _BAD (not cacheable: use exact)."""
                for position, literal in head_literals:
                    if prefix[position] != literal:
                        return _BAD
                parts = []
                for span in head_spans:
                    if span is None:
                        parts.append(0)
                        continue
                    piece = prefix[span[0] : span[1]]
                    if not piece.isdigit():
                        return _BAD
                    parts.append(int(piece))
                try:
                    moment = datetime(*parts)
                    if zone is timezone.utc:
                        return (moment - _NAIVE_EPOCH) // _ONE_MS
                    offset = zone.utcoffset(moment)
                    if zone.utcoffset(moment + hour) != offset:
                        return _BAD  # the offset changes within this hour
                    return (moment - offset - _NAIVE_EPOCH) // _ONE_MS
                except (ValueError, OverflowError):
                    return _BAD

            def fast(value: str) -> Any:
                if len(value) != length or not value.isascii():
                    return slow(value)
                prefix = value[:cut]
                base = cache.get(prefix)
                if base is None:
                    if len(cache) >= _HOUR_CACHE_SIZE:
                        cache.clear()
                    base = cache[prefix] = hour_ms(prefix)
                if base is _BAD:
                    return exact(value)
                for position, literal in tail_literals:
                    if value[position] != literal:
                        return slow(value)
                for start, end, unit in tail:
                    piece = value[start:end]
                    if not piece.isdigit() or piece[0] > "5":
                        return exact(value)  # e.g. second 60: let strptime judge
                    base += int(piece) * unit
                return _in_range(base)

    def convert(value: Any) -> Any:
        cls = value.__class__
        if cls is str:
            return fast(value)
        if cls is int:  # e.g. 20231114221320 in a JSON record
            return fast(str(value))
        if isinstance(value, (datetime, date)):
            return _in_range(_datetime_ms(value, zone))
        return _BAD

    return convert


def _check_pattern(pattern: str) -> str | None:
    """What is wrong with a strptime pattern, or None."""
    if "%" not in pattern:
        return "expected 'auto', 'epoch_s', 'epoch_ms', 'iso' or a strptime pattern such as '%Y%m%d%H%M%S'"
    sample = datetime(2023, 11, 14, 22, 13, 20, 123456, tzinfo=timezone.utc)
    try:
        datetime.strptime(sample.strftime(pattern), pattern)
    except ValueError as exc:
        return f"expected a strptime pattern that can read its own output, but {exc}"
    return None


# --- the compiler ------------------------------------------------------------------------


class _Compiler:
    def __init__(self, source_name: str) -> None:
        self.source = source_name
        # source keys a path names, left out by keep_unmapped ("a.b" names the key "a.b", not "a")
        self.used: set[str] = set()

    def error(self, path: str, what: str, *, expected: str = "", got: Any = None, **extra: Any) -> ConfigError:
        detail = {"path": path, "expected": expected or what, "got": got, **extra}
        return ConfigError(f"source {self.source!r} field {path!r}: {what}", errors=[detail])

    def prefix(self, field: str) -> str:
        return f"source {self.source!r} field {field}"

    def getter(self, path: str) -> Getter:
        """Read ``path``: the whole path as a key first, then a dotted walk. None if absent."""
        self.used.add(path)
        if "." not in path:
            return lambda fields: fields.get(path)
        parts = tuple(path.split("."))

        def get(fields: Fields) -> Any:
            value = fields.get(path)
            if value is None:
                value = fields
                for part in parts:
                    if value.__class__ is not dict:
                        return None
                    value = value.get(part)
                    if value is None:
                        return None
            return value

        return get

    # id, type, subject ---------------------------------------------------------------------

    def text_fn(self, path: str, field: str) -> Getter:
        get = self.getter(path)
        flat = "." not in path
        missing = f"{self.prefix(field)}: expected a value at {path!r}, got nothing"
        head = f"{self.prefix(field)}: expected a string or number at {path!r}, got "

        def text_of(fields: Fields) -> str:
            value = fields.get(path) if flat else get(fields)
            if value.__class__ is str:
                if value:
                    return value
                raise _Fail("missing_field", missing)
            if value is None:
                raise _Fail("missing_field", missing)
            text = _text(value)
            if text is _BAD:
                raise _Fail("invalid_value", head + _show(value))
            return text

        return text_of

    def id_fn(self, mapping: Mapping) -> Getter:
        spec = mapping.id_spec()
        if spec.from_ is not None:
            return self.text_fn(spec.from_, "id")
        paths = list(spec.fields or [])
        getters = [self.getter(p) for p in paths]
        encode = msgspec.json.Encoder(enc_hook=repr).encode
        sha1 = hashlib.sha1
        n = ID_DIGEST_LENGTH

        flat = all("." not in p for p in paths)

        def digest(fields: Fields) -> str:
            values = list(map(fields.get, paths)) if flat else [get(fields) for get in getters]
            try:
                blob = encode(values)
            except Exception:  # a value JSON cannot hold, e.g. a dict with tuple keys
                blob = repr(values).encode("utf-8", "backslashreplace")
            return sha1(blob).hexdigest()[:n]

        return digest

    def type_fn(self, mapping: Mapping) -> Getter:
        spec = mapping.type_spec()
        if spec.const is not None:
            const = spec.const
            return lambda fields: const
        assert spec.from_ is not None
        path = spec.from_
        if spec.map is None:
            return self.text_fn(path, "type")
        table = dict(spec.map)
        for code, name in table.items():
            if not isinstance(name, str) or not name or len(name) > MAX_TYPE_LENGTH:
                raise self.error(
                    f"mapping.type.map.{code}",
                    f"expected an event type name of 1-{MAX_TYPE_LENGTH} characters, got {_show(name)}",
                    got=name,
                )
        get = self.getter(path)
        prefix = self.prefix("type")
        missing = f"{prefix}: expected a value at {path!r}, got nothing"
        codes = _codes(table)

        flat = "." not in path

        def type_of(fields: Fields) -> str:
            value = fields.get(path) if flat else get(fields)
            if value is None or value == "":
                raise _Fail("missing_field", missing)
            name = table.get(value if value.__class__ is str else _key(value))
            if name is None:
                raise _Fail("unmapped_value", f"{prefix}: expected one of {codes} at {path!r}, got {_show(value)}")
            return name

        return type_of

    # time ------------------------------------------------------------------------------------

    def time_fn(self, mapping: Mapping) -> Getter:
        spec = mapping.time_spec()
        fmt = spec.format
        zone: Any = timezone.utc if spec.timezone in ("UTC", "Etc/UTC") else ZoneInfo(spec.timezone)
        if fmt == "auto":
            convert, expected = _auto_fn(zone), "epoch milliseconds or an RFC 3339 time"
        elif fmt == "epoch_s":
            convert, expected = _epoch_fn(1000, zone), "epoch seconds"
        elif fmt == "epoch_ms":
            convert, expected = _epoch_fn(1, zone), "epoch milliseconds"
        elif fmt == "iso":
            convert, expected = _iso_fn(zone), "an ISO 8601 time"
        else:
            problem = _check_pattern(fmt)
            if problem is not None:
                raise self.error("mapping.time.format", problem, got=fmt)
            convert, expected = _pattern_fn(fmt, zone), f"a time like {fmt!r}"
        path = spec.from_
        get = self.getter(path)
        prefix = self.prefix("time")
        missing = f"{prefix}: expected {expected} at {path!r}, got nothing"
        head = f"{prefix}: expected {expected} (years 1-9999) at {path!r}, got "

        flat = "." not in path

        def time_of(fields: Fields) -> int:
            value = fields.get(path) if flat else get(fields)
            if value is None or value == "":
                raise _Fail("missing_field", missing)
            try:
                ms = convert(value)
            except (ValueError, TypeError, OverflowError):
                ms = _BAD
            if ms is _BAD:
                raise _Fail("invalid_time", head + _show(value))
            return ms

        return time_of

    # data ------------------------------------------------------------------------------------

    def data_step(self, name: str, spec: FieldSpec) -> Step:
        where = f"mapping.data.{name}"
        field = f"data.{name}"
        prefix = self.prefix(field)
        table = dict(spec.map) if spec.map is not None else None
        coerce = _COERCE[spec.type] if spec.type is not None else None
        codes = _codes(table) if table is not None else ""

        def finish_const(value: Any, what: str) -> Any:
            """Map (a const, not a default: that is the output value) and coerce a constant
            now; a bad one is a config error."""
            if table is not None and what == "const":
                mapped = table.get(_key(value), _BAD)
                if mapped is _BAD:
                    raise self.error(f"{where}.{what}", f"expected one of {codes}, got {_show(value)}", got=value)
                value = mapped
            if coerce is not None:
                coerced = coerce(value)
                if coerced is _BAD:
                    raise self.error(f"{where}.{what}", f"expected {spec.type}, got {_show(value)}", got=value)
                value = coerced
            return value

        if spec.const is not None:
            const = finish_const(spec.const, "const")
            if isinstance(const, (dict, list)):

                def step_const_copy(fields: Fields, data: dict[str, Any], envelope: dict[str, Any]) -> None:
                    data[name] = copy.deepcopy(const)

                return step_const_copy

            def step_const(fields: Fields, data: dict[str, Any], envelope: dict[str, Any]) -> None:
                data[name] = const

            return step_const

        has_default = spec.default is not None
        default = finish_const(spec.default, "default") if has_default else None
        default_is_container = isinstance(default, (dict, list))
        required = spec.required

        missing_head = f"{prefix}: expected a value at "
        unmapped_head = f"{prefix}: expected one of {codes}, got "
        invalid_head = f"{prefix}: expected {spec.type}, got "

        def finish(value: Any, data: dict[str, Any], missing: str) -> None:
            """Default, map and coerce a value read for this field, and store it."""
            if value is None or value == "":
                if has_default:
                    data[name] = copy.deepcopy(default) if default_is_container else default
                elif required:
                    raise _Fail("missing_field", missing)
                return
            if table is not None:
                mapped = table.get(value if value.__class__ is str else _key(value), _BAD)
                if mapped is _BAD:
                    raise _Fail("unmapped_value", unmapped_head + _show(value))
                value = mapped
            if coerce is not None:
                coerced = coerce(value)
                if coerced is _BAD:
                    raise _Fail("invalid_value", invalid_head + _show(value))
                value = coerced
            data[name] = value

        if spec.expr is not None:
            try:
                evaluate = compile_expr(spec.expr).fn
            except ExpressionError as exc:
                raise self.error(
                    f"{where}.expr", exc.message, expected="a valid expression", got=spec.expr, position=exc.position
                ) from None
            origin = f"expression {_show(spec.expr)}"
            missing = f"{missing_head}{origin}, got nothing"

            def step_expr(fields: Fields, data: dict[str, Any], envelope: dict[str, Any]) -> None:
                try:
                    value = evaluate(envelope)
                except Exception as exc:  # EvalError, or a Python error on an exotic value
                    detail = str(exc) if isinstance(exc, EvalError) else f"{type(exc).__name__}: {exc}"
                    message = f"{prefix}: expected a value of {origin}, got an error: {detail}"
                    raise _Fail("mapping_error", message[:500]) from None
                finish(value, data, missing)

            return step_expr

        assert spec.from_ is not None
        path = spec.from_
        missing = f"{missing_head}{path!r}, got nothing"
        if "." in path:
            get = self.getter(path)

            def step_path(fields: Fields, data: dict[str, Any], envelope: dict[str, Any]) -> None:
                finish(get(fields), data, missing)

            return step_path

        self.used.add(path)
        if table is None and coerce is None and not has_default and not required:
            # the shorthand ``data: {name: column}``: one lookup, no call

            def step_plain(fields: Fields, data: dict[str, Any], envelope: dict[str, Any]) -> None:
                value = fields.get(path)
                if value is not None and value != "":
                    data[name] = value

            return step_plain

        if table is None and not has_default and not required:
            assert coerce is not None

            def step_coerce(fields: Fields, data: dict[str, Any], envelope: dict[str, Any]) -> None:
                value = fields.get(path)
                if value is not None and value != "":
                    coerced = coerce(value)
                    if coerced is _BAD:
                        raise _Fail("invalid_value", invalid_head + _show(value))
                    data[name] = coerced

            return step_coerce

        def step_key(fields: Fields, data: dict[str, Any], envelope: dict[str, Any]) -> None:
            finish(fields.get(path), data, missing)

        return step_key


def _codes(table: dict[str, Any] | None) -> str:
    if not table:
        return "[]"
    keys = list(table)
    shown = ", ".join(repr(k) for k in keys[:10])
    return f"[{shown}{', ...' if len(keys) > 10 else ''}]"
