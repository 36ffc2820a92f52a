"""A source's mapping, compiled once: records -> envelopes ``{id, type, time, subject, data}``.

:func:`compile_mapping` turns a :class:`~runtime.sources.models.Mapping` into one closure per
output value (every spec is read, checked and specialised here, never per record);
:meth:`CompiledMapping.apply` runs them over a batch. A record that cannot be mapped becomes a
:class:`Failure` with its index, a machine-readable reason and a message naming the source, the
output field, what was expected and what arrived; the other records go on.

Semantics (DESIGN.md §3-4, ``runtime/sources/models.py``):

- Source paths are read from the parsed record: the whole path as a key first (CSV and kv
  records are flat, and their keys may contain dots), then a dotted walk into nested objects.
  A missing key and a null value are the same thing.
- ``id``: a path (numbers become strings) or a digest (sha1 hex, 24 characters) of the JSON
  list of several paths' values, missing ones as null, so feeds without ids de-duplicate on
  content (values as parsed: the CSV text "1" and the JSON number 1 digest differently).
  ``type``: a constant, or a path, through ``map`` when given. ``subject``: a path.
- ``time``: :class:`~runtime.sources.models.TimeSpec`, output epoch milliseconds.
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

Value coercion (``type``, ``map`` keys, text) is in :mod:`runtime.sources.coerce`, time
formats in :mod:`runtime.sources.timeparse`; this module compiles the specs into closures.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec

from runtime.errors import ConfigError, ExpressionError
from runtime.events.envelope import MAX_TYPE_LENGTH
from runtime.expr import EvalError, compile_expr
from runtime.sources.coerce import BAD, COERCERS, as_text, map_key, show
from runtime.sources.models import FieldSpec, Mapping
from runtime.sources.records import Record, gc_paused
from runtime.sources.timeparse import TIME_FORMATS, check_pattern, time_converter, zone_named

__all__ = ["CompiledMapping", "Failure", "compile_mapping"]

ID_DIGEST_LENGTH = 24


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
            text = as_text(value)
            if text is BAD:
                raise _Fail("invalid_value", head + show(value))
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
                    f"expected an event type name of 1-{MAX_TYPE_LENGTH} characters, got {show(name)}",
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
            name = table.get(value if value.__class__ is str else map_key(value))
            if name is None:
                raise _Fail("unmapped_value", f"{prefix}: expected one of {codes} at {path!r}, got {show(value)}")
            return name

        return type_of

    # time ------------------------------------------------------------------------------------

    def time_fn(self, mapping: Mapping) -> Getter:
        spec = mapping.time_spec()
        fmt = spec.format
        zone = zone_named(spec.timezone)
        if fmt not in TIME_FORMATS:
            problem = check_pattern(fmt)
            if problem is not None:
                raise self.error("mapping.time.format", problem, got=fmt)
        convert, expected = time_converter(fmt, zone)
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
                ms = BAD
            if ms is BAD:
                raise _Fail("invalid_time", head + show(value))
            return ms

        return time_of

    # data ------------------------------------------------------------------------------------

    def data_step(self, name: str, spec: FieldSpec) -> Step:
        where = f"mapping.data.{name}"
        field = f"data.{name}"
        prefix = self.prefix(field)
        table = dict(spec.map) if spec.map is not None else None
        coerce = COERCERS[spec.type] if spec.type is not None else None
        codes = _codes(table) if table is not None else ""

        def finish_const(value: Any, what: str) -> Any:
            """Map (a const, not a default: that is the output value) and coerce a constant
            now; a bad one is a config error."""
            if table is not None and what == "const":
                mapped = table.get(map_key(value), BAD)
                if mapped is BAD:
                    raise self.error(f"{where}.{what}", f"expected one of {codes}, got {show(value)}", got=value)
                value = mapped
            if coerce is not None:
                coerced = coerce(value)
                if coerced is BAD:
                    raise self.error(f"{where}.{what}", f"expected {spec.type}, got {show(value)}", got=value)
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
                mapped = table.get(value if value.__class__ is str else map_key(value), BAD)
                if mapped is BAD:
                    raise _Fail("unmapped_value", unmapped_head + show(value))
                value = mapped
            if coerce is not None:
                coerced = coerce(value)
                if coerced is BAD:
                    raise _Fail("invalid_value", invalid_head + show(value))
                value = coerced
            data[name] = value

        if spec.expr is not None:
            try:
                evaluate = compile_expr(spec.expr).fn
            except ExpressionError as exc:
                raise self.error(
                    f"{where}.expr", exc.message, expected="a valid expression", got=spec.expr, position=exc.position
                ) from None
            origin = f"expression {show(spec.expr)}"
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
                    if coerced is BAD:
                        raise _Fail("invalid_value", invalid_head + show(value))
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
