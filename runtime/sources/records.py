"""Bodies in a source's own format -> records (parsed fields, or the reason they are not).

One body becomes a list of :class:`Record`, one per record in the body, in body order: a
CSV row (the header line and empty lines are not records), a ``key=value`` line, a JSON item
(an array element, the single object, or an NDJSON line) or an Arrow row. A record that
cannot be parsed is still a record, with ``fields`` None and ``error`` = (reason, message),
so that only it is rejected and the rest of the body goes on (DESIGN.md invariant 4).

Whole-body problems raise :class:`~runtime.errors.UnparseableBody`: an Arrow body that is not
an IPC stream, and a CSV header line the csv module cannot read. CSV, kv and JSON bodies
otherwise never raise, whatever their bytes.
"""

from __future__ import annotations

import csv
import gc
import io
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from runtime.errors import UnparseableBody, UnsupportedContentType
from runtime.sources.coerce import show
from runtime.sources.decode import Unparseable, arrow_rows, decode_body, decode_item, raw_of, text_records

if TYPE_CHECKING:
    from runtime.sources.models import Source

__all__ = ["FORMATS", "Record", "gc_paused", "parse_records"]

FORMATS = ("csv", "kv", "json", "arrow")


class Record:
    """One record of a body.

    ``fields`` is the parsed record (a flat dict of strings for CSV and kv, any JSON object for
    JSON, the row for Arrow), or None when the record could not be parsed; ``error`` is then
    ``(reason, message)``. ``raw`` is the record's original bytes (the CSV or kv line without
    its line terminator, the JSON item re-encoded, the Arrow row as JSON); it is made on first
    access, since only rejected records need it.
    """

    __slots__ = ("_raw", "error", "fields")

    def __init__(self, fields: dict[str, Any] | None, raw: Any, error: tuple[str, str] | None = None) -> None:
        self.fields = fields
        self._raw = raw  # bytes, a text line (str), or a decoded item to encode as JSON
        self.error = error

    @property
    def raw(self) -> bytes:
        raw = self._raw
        if raw.__class__ is bytes:
            return raw
        if raw.__class__ is str:
            # surrogateescape gives back the exact bytes of lines that were not valid UTF-8
            raw = raw.rstrip("\r\n").encode("utf-8", "surrogateescape")
        else:
            raw = raw_of(raw)
        self._raw = raw
        return raw

    def __repr__(self) -> str:
        if self.fields is None:
            return f"Record(error={self.error!r}, raw={self.raw!r:.120})"
        return f"Record({self.fields!r:.200})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Record):
            return NotImplemented
        return self.fields == other.fields and self.error == other.error and self.raw == other.raw

    __hash__ = None  # type: ignore[assignment]


@contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while a batch is parsed or mapped.

    A batch allocates hundreds of thousands of small containers that hold no cycles; left
    on, the collector walks them again and again (a third of the time at 100k records). It is
    switched back on afterwards, unless it was already off."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def parse_records(body: bytes, fmt: str, source: Source) -> list[Record]:
    """The records of ``body`` in format ``fmt`` ("csv", "kv", "json" or "arrow"), read with
    ``source``'s format settings. The list index of a record is its index in the body."""
    with gc_paused():
        if fmt == "csv":
            return _parse_csv(body, source)
        if fmt == "kv":
            return _parse_kv(body, source)
        if fmt == "json":
            return _parse_json(body, source.name)
        if fmt == "arrow":
            return _parse_arrow(body, source.name)
    raise UnsupportedContentType(f"record format {fmt!r} is not supported; use one of {list(FORMATS)}")


# --- text -------------------------------------------------------------------------------


def _decode_text(body: bytes) -> tuple[str, bool]:
    """(text, clean). Bytes that are not UTF-8 are kept as lone surrogates (``clean`` False),
    so that only the records holding them are rejected and their raw bytes survive exactly."""
    if body[:3] == b"\xef\xbb\xbf":
        body = body[3:]
    try:
        return body.decode("utf-8"), True
    except UnicodeDecodeError:
        return body.decode("utf-8", "surrogateescape"), False


def _is_dirty(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _invalid_utf8(name: str, line: str) -> Record:
    return Record(None, line, ("invalid_encoding", f"source {name!r} record: expected UTF-8 text, got invalid bytes"))


# --- CSV --------------------------------------------------------------------------------


def _parse_csv(body: bytes, source: Source) -> list[Record]:
    spec = source.csv
    name = source.name
    text, clean = _decode_text(body)
    rows, lines = _csv_rows(text, spec.delimiter)
    names: list[str] | None = list(spec.columns) if spec.columns else None
    first = 0
    if spec.header:
        for first, row in enumerate(rows):  # noqa: B007  # the header's position is used below
            if row.__class__ is str:
                raise UnparseableBody(f"source {name!r}: the CSV header line cannot be read: {row}")
            if row and (len(row) > 1 or row[0].strip()):
                break
        else:
            return []
        if names is None:
            names = [c.strip() for c in row]
            if not clean:
                names = [c.encode("utf-8", "replace").decode("utf-8") if _is_dirty(c) else c for c in names]
        first += 1
    assert names is not None  # CsvFormat requires columns when there is no header
    width = len(names)
    out: list[Record] = []
    append = out.append
    for index in range(first, len(rows)):
        row = rows[index]
        if len(row) == width and row.__class__ is list and (clean or not _is_dirty(lines[index])):
            if width == 1 and not row[0].strip():
                continue  # an empty line
            append(Record(dict(zip(names, row, strict=True)), lines[index]))
            continue
        line = lines[index]
        if row.__class__ is str:
            append(Record(None, line, ("unparseable", f"source {name!r} record: CSV cannot be read: {row}")))
        elif not row or (len(row) == 1 and not row[0].strip()):
            continue  # an empty line
        elif not clean and _is_dirty(line):
            append(_invalid_utf8(name, line))
        else:
            message = f"source {name!r} record: expected {width} columns ({', '.join(names)}), got {len(row)}"
            append(Record(None, line, ("wrong_column_count", message[:500])))
    return out


def _csv_rows(text: str, delimiter: str) -> tuple[list[Any], list[str]]:
    """(rows, lines): each row (a list of fields, or a str saying why it cannot be read) with
    the text it came from. Text without a quote character is split directly, which is what
    the csv module would do with it, only faster; otherwise the csv module reads it."""
    if '"' not in text:
        lines = text.split("\n") if "\r" not in text else [line.rstrip("\r\n") for line in _physical_lines(text)]
        return [line.split(delimiter) for line in lines], lines
    physical = _physical_lines(text)
    reader = csv.reader(physical, delimiter=delimiter)
    rows: list[Any] = []
    lines: list[str] = []
    consumed = 0
    while True:
        try:
            for row in reader:
                now = reader.line_num
                lines.append(physical[consumed] if now - consumed == 1 else "".join(physical[consumed:now]))
                rows.append(row)
                consumed = now
            return rows, lines
        except csv.Error as exc:  # e.g. a field over csv.field_size_limit(); the next row starts afresh
            now = max(reader.line_num, consumed + 1)
            lines.append("".join(physical[consumed:now]))
            rows.append(str(exc))
            consumed = now


def _physical_lines(text: str) -> list[str]:
    """Lines ending in \\n, \\r or \\r\\n, terminators kept (as the csv module wants them)."""
    return list(io.StringIO(text, newline=""))


# --- key=value lines --------------------------------------------------------------------


def _parse_kv(body: bytes, source: Source) -> list[Record]:
    spec = source.kv
    name = source.name
    pair_delimiter = spec.pair_delimiter
    separator = spec.separator
    text, clean = _decode_text(body)
    out: list[Record] = []
    append = out.append
    for line in text.split("\n") if "\r" not in text else _physical_lines(text):
        stripped = line.strip()
        if not stripped:
            continue
        if not clean and _is_dirty(line):
            append(_invalid_utf8(name, line))
            continue
        fields: dict[str, Any] = {}
        problem = None
        for pair in stripped.split(pair_delimiter):
            key, found, value = pair.partition(separator)
            key = key.strip()
            if found and key:
                fields[key] = value.strip()
            elif found:
                problem = f"a key before {separator!r}, got {show(pair.strip())}"
                break
            elif key:
                problem = f"key{separator}value, got {show(key)}"
                break
            # else an empty pair, e.g. after a trailing delimiter: nothing to read
        if problem is None:
            append(Record(fields, line))
        else:
            message = f"source {name!r} record: expected pairs separated by {pair_delimiter!r}, each {problem}"
            append(Record(None, line, ("malformed_pair", message)))
    return out


# --- JSON -------------------------------------------------------------------------------


def _parse_json(body: bytes, name: str) -> list[Record]:
    """A JSON object, a JSON array of items, or NDJSON (a body that is not one JSON value)."""
    try:
        items = decode_body(body, "application/json")
    except (UnparseableBody, UnicodeDecodeError):
        try:
            items = decode_body(body, "application/x-ndjson")
        except UnicodeDecodeError:  # msgspec's error for invalid UTF-8 inside a string
            items = [decode_item(line) for line in text_records(body)]
    out: list[Record] = []
    append = out.append
    for item in items:
        if item.__class__ is dict:
            append(Record(item, item))
        elif isinstance(item, Unparseable):
            append(Record(None, item.raw, (item.reason, f"source {name!r} record: {item.message}")))
        else:
            message = f"source {name!r} record: expected a JSON object, got {type(item).__name__} {show(item)}"
            append(Record(None, raw_of(item), ("not_an_object", message)))
    return out


# --- Arrow ------------------------------------------------------------------------------


def _parse_arrow(body: bytes, name: str) -> list[Record]:
    """Rows of an Arrow IPC stream; timestamp columns with a time zone become epoch
    milliseconds, the platform's time unit."""
    return [Record(row, row) for row in arrow_rows(body, who=f"source {name!r}: ", timestamps_ms=True)]
