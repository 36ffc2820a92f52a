"""The one decoder of JSON and Arrow bodies, for envelopes (``runtime.events.envelope``) and
for a source's own records (``runtime.sources.records``) alike.

JSON, NDJSON and JSON text sequences become decoded items; an item msgspec refuses becomes an
:class:`Unparseable` that says why (too deep, NaN, a number out of range, a lone surrogate,
a syntax error), so only that item is rejected (DESIGN.md invariant 4). An Arrow IPC stream
becomes its rows. Pure Python: no Ray, no Redis.
"""

from __future__ import annotations

import json
import re
from typing import Any

import msgspec

from runtime.errors import UnparseableBody, UnsupportedContentType
from runtime.events.limits import MAX_DEPTH, value_problem

JSON_TYPES = {"application/json", "application/cloudevents+json", "application/cloudevents-batch+json"}
NDJSON_TYPES = {"application/x-ndjson", "application/ndjson", "application/jsonl", "application/json-seq"}
ARROW_TYPES = {"application/vnd.apache.arrow.stream"}
SUPPORTED_TYPES = JSON_TYPES | NDJSON_TYPES | ARROW_TYPES


_json_decoder = msgspec.json.Decoder()


def media_type(content_type: str | None) -> str:
    return (content_type or "application/json").split(";")[0].strip().lower()


def decode_body(body: bytes, content_type: str | None) -> list[Any]:
    """Raw items of a body. Whole-body problems raise; a bad NDJSON line becomes an
    :class:`Unparseable` item so that only that line is rejected."""
    kind = media_type(content_type)
    if kind not in SUPPORTED_TYPES:
        raise UnsupportedContentType(f"content type {kind!r} is not accepted; use one of {sorted(SUPPORTED_TYPES)}")
    if kind in NDJSON_TYPES:
        return [decode_item(line) for line in text_records(body)]
    if kind in ARROW_TYPES:
        return arrow_rows(body)
    try:
        decoded = _json_decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError, RecursionError) as exc:
        return _decode_items(body, exc)
    return decoded if isinstance(decoded, list) else [decoded]


def _decode_items(body: bytes, whole: Exception) -> list[Any]:
    """A JSON body that msgspec refused as a whole, item by item: an item too deep, with a
    NaN, a huge number or a lone surrogate becomes an :class:`Unparseable` with its reason,
    and the other items go on (invariant 4). A body with a syntax error stays unparseable."""
    items = [decode_item(raw) for raw in split_json_array(body) or ()]
    if not items or any(isinstance(i, Unparseable) and i.reason == "unparseable" for i in items):
        raise UnparseableBody(f"body is not valid JSON: {whole}")
    return items


def text_records(body: bytes) -> list[bytes]:
    """The records of NDJSON or JSON text sequences (RFC 7464: each record starts with RS)."""
    return [r for r in (line.strip(b"\x1e \t\r") for line in body.splitlines()) if r]


class Unparseable:
    """An item that cannot become a value: its raw bytes and why (``unparseable``, or the
    limit it breaks, see :mod:`runtime.events.limits`)."""

    __slots__ = ("id", "message", "raw", "reason")

    def __init__(self, message: str, raw: bytes = b"", reason: str = "unparseable", id: str | None = None) -> None:
        self.message = message
        self.raw = raw
        self.reason = reason
        self.id = id  # the event's id, when it could be read


def decode_item(raw: bytes) -> Any:
    """One JSON value (an NDJSON line, an array item). msgspec decodes what it can; what it
    refuses is read again leniently only to say precisely why it is refused."""
    try:
        return _json_decoder.decode(raw)
    except RecursionError:
        return Unparseable(f"the item is nested more than {MAX_DEPTH} levels deep", raw, "too_deep")
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
        return _lenient(raw, exc)


_TOO_BIG = 2**64  # stands for an integer too long to convert: the walk calls it out of range


def _int(text: str) -> int:
    return int(text) if len(text) <= 21 else _TOO_BIG


def _lenient(raw: bytes, refused: Exception) -> Any:
    """Why msgspec refused ``raw``: Python's json reads NaN, infinities, huge numbers and lone
    surrogates, so a limit can be named; anything else is a syntax error (``unparseable``)."""
    try:
        value = json.loads(raw, parse_int=_int)  # NaN and infinities read as floats the walk refuses
    except RecursionError:
        return Unparseable(f"the item is nested more than {MAX_DEPTH} levels deep", raw, "too_deep")
    except ValueError:  # a syntax error, or bytes that are not UTF-8
        return Unparseable(f"line is not valid JSON: {refused}", raw)
    problem = value_problem(value, "item", depth=0)
    if problem is not None:
        event_id = value.get("id") if isinstance(value, dict) else None
        clean_id = event_id if isinstance(event_id, str) and value_problem(event_id) is None else None
        return Unparseable(problem[1], raw, problem[0], clean_id)
    return Unparseable(f"line is not valid JSON: {refused}", raw)


# a string (unrolled, so no backtracking blow-up), a lone quote (an unterminated string) or a
# structural character
_TOKENS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|"|[\[\]{},]', re.DOTALL)


def split_json_array(body: bytes) -> list[bytes] | None:
    """The items of a JSON array body as raw bytes (a body that is not an array is its one
    item), found without recursion so depth costs nothing; None if the brackets do not
    balance. Linear in the body: only bodies msgspec refused come here."""
    text = body.strip()
    if text[:1] != b"[":
        return [text] if text else None
    items: list[bytes] = []
    depth = 0
    start = 1
    for token in _TOKENS.finditer(text):
        char = text[token.start()]
        if char == 0x22:  # '"'
            if token.end() - token.start() == 1:
                return None
        elif char in b"[{":
            depth += 1
        elif char in b"]}":
            depth -= 1
            if depth == 0:
                last = text[start : token.start()].strip()
                if last:
                    items.append(last)
                return items if token.end() == len(text) else None
        elif depth == 1:  # a comma between items
            items.append(text[start : token.start()].strip())
            start = token.end()
    return None


def raw_of(item: Any) -> bytes:
    """The bytes to keep in quarantine for a decoded item."""
    if isinstance(item, Unparseable):
        return item.raw
    try:
        return msgspec.json.encode(item)
    except (TypeError, ValueError, RecursionError, msgspec.EncodeError):  # e.g. a lone surrogate
        return repr(item)[:100_000].encode("utf-8", "backslashreplace")


def arrow_rows(body: bytes, *, who: str = "", timestamps_ms: bool = False) -> list[dict[str, Any]]:
    """The rows of an Arrow IPC stream, built column by column (faster than
    ``Table.to_pylist``). ``timestamps_ms``: timestamp columns with a time zone become epoch
    milliseconds, the platform's time unit, rather than datetimes (making a datetime per value
    would cost more than the rest of the row). ``who`` prefixes error messages."""
    import pyarrow as pa

    try:
        table = pa.ipc.open_stream(body).read_all()
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise UnparseableBody(f"{who}body is not an Arrow IPC stream: {exc}") from None
    names = table.column_names
    try:
        columns = [_column_values(column, pa, timestamps_ms) for column in table.columns]
    except (pa.ArrowException, ValueError, OverflowError) as exc:
        raise UnparseableBody(f"{who}Arrow body cannot be read: {exc}") from None
    if not names:
        return [{} for _ in range(table.num_rows)]
    return [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)]


def _column_values(column: Any, pa: Any, timestamps_ms: bool) -> list[Any]:
    kind = column.type
    if timestamps_ms and pa.types.is_timestamp(kind) and kind.tz is not None:
        return column.cast(pa.timestamp("ms", tz=kind.tz), safe=False).cast(pa.int64()).to_pylist()
    return column.to_pylist()
