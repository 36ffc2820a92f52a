"""The event envelope: decoding request bodies and validating events in batch.

Input events use CloudEvents attribute names (``id``, ``type``, ``time``, ``subject``,
``data``, optional ``source``). A standardised :class:`Event` also carries the resolved
``customer`` and ``received_at``. Validation is a tight loop over decoded objects: one bad
event is rejected with its index and a reason, the rest go on.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Annotated, Any

import msgspec

from runtime.errors import UnparseableBody, UnsupportedContentType
from runtime.events.limits import (
    INT_MAX,
    INT_MIN,
    MAX_DEPTH,
    MAX_KEY_LENGTH,
    MAX_KEYS,
    MAX_STRING_LENGTH,
    value_problem,
    within_limits,
)

MAX_ID_LENGTH = 256
MAX_TYPE_LENGTH = 128
TYPE_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}$")  # the catalogue's name pattern (config NAME_PATTERN)

JSON_TYPES = {"application/json", "application/cloudevents+json", "application/cloudevents-batch+json"}
NDJSON_TYPES = {"application/x-ndjson", "application/ndjson", "application/jsonl", "application/json-seq"}
ARROW_TYPES = {"application/vnd.apache.arrow.stream"}
SUPPORTED_TYPES = JSON_TYPES | NDJSON_TYPES | ARROW_TYPES


class Event(msgspec.Struct, array_like=True, gc=False):
    """A standardised event as it travels through the log (msgpack, positional)."""

    id: str
    type: str
    time: int  # event time, epoch milliseconds
    subject: str
    customer: str
    source: str
    data: dict[str, Any]
    received_at: int  # epoch milliseconds

    def as_context(self) -> dict[str, Any]:
        """The mapping expressions see."""
        return {
            "id": self.id,
            "type": self.type,
            "time": self.time,
            "subject": self.subject,
            "customer": self.customer,
            "source": self.source,
            "data": self.data,
        }

    def to_cloudevent(self) -> dict[str, Any]:
        return {
            "specversion": "1.0",
            "id": self.id,
            "source": self.source,
            "type": self.type,
            "time": format_time_ms(self.time),
            "subject": self.subject,
            "customer": self.customer,
            "receivedat": format_time_ms(self.received_at),
            "data": self.data,
        }


@dataclass(frozen=True, slots=True)
class Rejection:
    index: int
    id: str | None
    reason: str
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "id": self.id, "reason": self.reason, "message": self.message}


@dataclass(slots=True)
class Batch:
    """The result of validating a request: good events and why the others were refused."""

    events: list[Event] = field(default_factory=list)
    indices: list[int] = field(default_factory=list)  # request index of each good event
    rejected: list[Rejection] = field(default_factory=list)


_json_decoder = msgspec.json.Decoder()


# ``data``'s top level checked in C while decoding: the walk (limits.within_limits) is then only
# needed when a body holds nested objects or lists.
_Value = (
    Annotated[str, msgspec.Meta(max_length=MAX_STRING_LENGTH)]
    | Annotated[int, msgspec.Meta(ge=INT_MIN, le=INT_MAX)]
    | float
    | bool
    | None
    | list[Any]
    | dict[str, Any]
)
_Key = Annotated[str, msgspec.Meta(max_length=MAX_KEY_LENGTH)]
_Data = Annotated[dict[_Key, _Value], msgspec.Meta(max_length=MAX_KEYS)]


class _InEvent(msgspec.Struct):
    """The fast path's typed view of an incoming event (unknown attributes are ignored)."""

    id: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_LENGTH)]
    type: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_TYPE_LENGTH)]
    time: int | float | str
    subject: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_LENGTH)]
    data: _Data | None = None
    source: str | None = None


_typed_decoder = msgspec.json.Decoder(list[_InEvent])


def decode_events(body: bytes, content_type: str | None, *, source: str, received_at: int) -> tuple[Batch, int]:
    """Decode and validate a body: (batch, number of items). A body whose events are all
    well-formed takes a typed decode in C; any problem falls back to item-by-item checks
    that find exactly the bad ones."""
    kind = media_type(content_type)
    if kind in JSON_TYPES or kind in NDJSON_TYPES:
        array, expected = body, None
        if kind in NDJSON_TYPES:
            records = text_records(body)
            array, expected = b"[" + b",".join(records) + b"]", len(records)
        elif body.lstrip()[:1] != b"[":
            array, expected = b"[" + body + b"]", 1
        try:
            typed = _typed_decoder.decode(array)
        except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError, RecursionError):
            typed = None
        # a count mismatch means a record held more than one value: let the slow path judge it
        if typed is not None and (expected is None or len(typed) == expected):
            batch = _from_typed(typed, source, received_at, _brackets(array))
            if batch is not None:
                return batch, len(typed)
    items = decode_body(body, content_type)
    return validate_batch(items, source=source, received_at=received_at), len(items)


def _brackets(array: bytes) -> int:
    """Opening brackets and braces in a body (inside strings too: an overcount only costs a walk)."""
    return array.count(b"{") + array.count(b"[")


def _from_typed(typed: list[_InEvent], source: str, received_at: int, brackets: int) -> Batch | None:
    """Events from typed items, or None when one needs the slow path's precise rejection.
    ``data`` is walked for limits only if the body has more brackets than the envelopes'
    own (the array, each event, each ``data``): a flat body costs no walk."""
    events = []
    own = 1
    for item in typed:
        at = parse_time_ms(item.time)
        if at is None or (item.source is not None and item.source != source):
            return None
        data = item.data
        if data is None:
            data = {}
        else:
            own += 1
        events.append(Event(item.id, item.type, at, item.subject, item.subject, source, data, received_at))
    own += len(events)
    if _bad_types({e.type for e in events}):
        return None
    if brackets > own and not all(within_limits(e.data) for e in events):
        return None
    return Batch(events=events, indices=list(range(len(events))))


def _bad_types(types: set[str]) -> bool:
    """Whether any event type breaks the catalogue's name pattern (checked once per distinct type)."""
    return any(TYPE_PATTERN.match(t) is None for t in types)


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
        return _decode_arrow(body)
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


def _decode_arrow(body: bytes) -> list[Any]:
    import pyarrow as pa

    try:
        return pa.ipc.open_stream(body).read_all().to_pylist()
    except (pa.ArrowException, OSError, ValueError, OverflowError) as exc:
        raise UnparseableBody(f"body is not an Arrow IPC stream: {exc}") from None


MIN_TIME_MS = -62_135_596_800_000  # 0001-01-01T00:00:00Z
MAX_TIME_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_ONE_MS = timedelta(milliseconds=1)


def raw_of(item: Any) -> bytes:
    """The bytes to keep in quarantine for a decoded item."""
    if isinstance(item, Unparseable):
        return item.raw
    try:
        return msgspec.json.encode(item)
    except (TypeError, ValueError, RecursionError, msgspec.EncodeError):  # e.g. a lone surrogate
        return repr(item)[:100_000].encode("utf-8", "backslashreplace")


def parse_time_ms(value: Any) -> int | None:
    """Epoch milliseconds from an RFC 3339 string or an epoch-millisecond number within years
    1-9999; None if it is neither."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        value = int(value)
    if isinstance(value, int):
        return value if MIN_TIME_MS <= value <= MAX_TIME_MS else None
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return None
    elif isinstance(value, datetime):  # Arrow timestamp columns
        parsed = value
    else:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return (parsed - _EPOCH) // _ONE_MS


def format_time_ms(ms: int) -> str:
    """RFC 3339 in UTC with milliseconds, e.g. ``2026-09-21T14:13:20.180Z``."""
    seconds, millis = divmod(ms, 1000)
    t = time.gmtime(seconds)
    return f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}.{millis:03d}Z"


def validate_batch(items: list[Any], *, source: str, received_at: int) -> Batch:
    """Check each item; good ones become :class:`Event` with ``customer = subject``."""
    batch = Batch()
    for index, item in enumerate(items):
        problem = _problem(item, source)
        if problem is not None:
            reason, message = problem
            item_id = item.get("id") if isinstance(item, dict) and isinstance(item.get("id"), str) else None
            item_id = item.id if isinstance(item, Unparseable) else item_id
            batch.rejected.append(Rejection(index, item_id, reason, message))
            continue
        subject = item["subject"]
        batch.events.append(
            Event(
                id=item["id"],
                type=item["type"],
                time=parse_time_ms(item["time"]),  # type: ignore[arg-type]  # checked in _problem
                subject=subject,
                customer=subject,
                source=source,
                data=item.get("data") or {},
                received_at=received_at,
            )
        )
        batch.indices.append(index)
    return batch


def _problem(item: Any, source: str) -> tuple[str, str] | None:
    """(reason, message) if the item is not a usable event, else None."""
    if isinstance(item, Unparseable):
        return item.reason, item.message
    if not isinstance(item, dict):
        return "not_an_object", f"expected a JSON object, got {type(item).__name__}"
    for name, limit in (("id", MAX_ID_LENGTH), ("type", MAX_TYPE_LENGTH), ("subject", MAX_ID_LENGTH)):
        value = item.get(name)
        if value is None:
            return "missing_field", f"required field '{name}' is missing"
        if not isinstance(value, str) or not value or len(value) > limit:
            return (
                "invalid_field",
                f"field '{name}' must be a non-empty string of at most {limit} characters, got {value!r:.80}",
            )
    if TYPE_PATTERN.match(item["type"]) is None:
        return (
            "invalid_type",
            f"field 'type' must match {TYPE_PATTERN.pattern} (lower-case letters, digits, '.', '_', '-'), "
            f"got {item['type']!r:.80}",
        )
    if "time" not in item:
        return "missing_field", "required field 'time' is missing"
    if parse_time_ms(item["time"]) is None:
        return "invalid_time", f"field 'time' must be RFC 3339 or epoch milliseconds, got {item['time']!r:.80}"
    data = item.get("data")
    if data is not None and not isinstance(data, dict):
        return "invalid_field", f"field 'data' must be an object, got {type(data).__name__}"
    claimed = item.get("source")
    if claimed is not None and claimed != source:
        return "source_mismatch", f"event names source {claimed!r:.80} but the credentials are for {source!r}"
    return None if data is None else value_problem(data)
