"""Event times from source values: one converter per ``TimeSpec`` format, built at compile time.

:func:`time_converter` returns a function from a parsed value (a number, text, a datetime or
a date) to epoch milliseconds within years 1-9999, or :data:`~runtime.sources.coerce.BAD`;
it may also raise ``ValueError``, ``TypeError`` or ``OverflowError`` on a malformed value,
which the caller treats the same way. A naive time is wall time in the spec's zone.

Formats: ``auto`` (epoch ms as a number or numeric text, else RFC 3339), ``epoch_s``,
``epoch_ms``, ``iso``, or a strptime pattern; check a pattern with :func:`check_pattern`
before building its converter.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import date, datetime, timedelta, timezone
from datetime import time as dtime
from typing import Any
from zoneinfo import ZoneInfo

from runtime.events.envelope import MAX_TIME_MS, MIN_TIME_MS
from runtime.sources.coerce import BAD, NUMBER_TEXT, parse_number

__all__ = ["TIME_FORMATS", "Converter", "check_pattern", "time_converter", "zone_named"]

Converter = Callable[[Any], Any]

TIME_FORMATS = ("auto", "epoch_s", "epoch_ms", "iso")

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_NAIVE_EPOCH = datetime(1970, 1, 1)
_ONE_MS = timedelta(milliseconds=1)


def zone_named(name: str) -> Any:
    """The zone for an IANA name; UTC as ``timezone.utc``, which the converters special-case."""
    return timezone.utc if name in ("UTC", "Etc/UTC") else ZoneInfo(name)


def time_converter(fmt: str, zone: Any) -> tuple[Converter, str]:
    """(convert, what it expects, for messages) for ``fmt``: one of :data:`TIME_FORMATS` or a
    strptime pattern that :func:`check_pattern` accepts."""
    if fmt == "auto":
        return _auto_fn(zone), "epoch milliseconds or an RFC 3339 time"
    if fmt == "epoch_s":
        return _epoch_fn(1000, zone), "epoch seconds"
    if fmt == "epoch_ms":
        return _epoch_fn(1, zone), "epoch milliseconds"
    if fmt == "iso":
        return _iso_fn(zone), "an ISO 8601 time"
    return _pattern_fn(fmt, zone), f"a time like {fmt!r}"


def check_pattern(pattern: str) -> str | None:
    """What is wrong with a strptime pattern, or None."""
    if "%" not in pattern:
        named = ", ".join(repr(name) for name in TIME_FORMATS)
        return f"expected {named} or a strptime pattern such as '%Y%m%d%H%M%S'"
    sample = datetime(2023, 11, 14, 22, 13, 20, 123456, tzinfo=timezone.utc)
    try:
        datetime.strptime(sample.strftime(pattern), pattern)
    except ValueError as exc:
        return f"expected a strptime pattern that can read its own output, but {exc}"
    return None


def _in_range(ms: int) -> Any:
    return ms if MIN_TIME_MS <= ms <= MAX_TIME_MS else BAD


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


def _epoch_fn(scale: int, zone: Any) -> Converter:
    """Epoch numbers (``scale`` 1000: seconds, fractions rounded to the millisecond; 1: ms)."""

    def convert(value: Any) -> Any:
        cls = value.__class__
        if cls is int:
            return _in_range(value * scale)
        if cls is str:
            if value.isdigit() and value.isascii() and len(value) <= 20:
                return _in_range(int(value) * scale)
            value = parse_number(value)
            if value is None:
                return BAD
            cls = value.__class__
            if cls is int:
                return _in_range(value * scale)
        if cls is float:
            if not math.isfinite(value) or abs(value) > 1e16:
                return BAD
            return _in_range(round(value * 1000) if scale == 1000 else int(value))
        if isinstance(value, (datetime, date)):
            return _in_range(_datetime_ms(value, zone))
        return BAD

    return convert


def _auto_fn(zone: Any) -> Converter:
    """Epoch milliseconds (a number or a numeric string), else RFC 3339 / ISO 8601."""
    epoch_ms = _epoch_fn(1, zone)

    def convert(value: Any) -> Any:
        if value.__class__ is str:
            if value.isdigit() and value.isascii():
                return _in_range(int(value)) if len(value) <= 20 else BAD
            if NUMBER_TEXT.fullmatch(value) is not None:
                return epoch_ms(value)
            return _in_range(_datetime_ms(datetime.fromisoformat(value), zone))
        return epoch_ms(value)

    return convert


def _iso_fn(zone: Any) -> Converter:
    def convert(value: Any) -> Any:
        if value.__class__ is str:
            return _in_range(_datetime_ms(datetime.fromisoformat(value), zone))
        if isinstance(value, (datetime, date)):
            return _in_range(_datetime_ms(value, zone))
        return BAD

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


def _pattern_fn(pattern: str, zone: Any) -> Converter:
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
                """Epoch ms of the prefix's date and hour, or BAD (not cacheable: use exact)."""
                for position, literal in head_literals:
                    if prefix[position] != literal:
                        return BAD
                parts = []
                for span in head_spans:
                    if span is None:
                        parts.append(0)
                        continue
                    piece = prefix[span[0] : span[1]]
                    if not piece.isdigit():
                        return BAD
                    parts.append(int(piece))
                try:
                    moment = datetime(*parts)
                    if zone is timezone.utc:
                        return (moment - _NAIVE_EPOCH) // _ONE_MS
                    offset = zone.utcoffset(moment)
                    if zone.utcoffset(moment + hour) != offset:
                        return BAD  # the offset changes within this hour
                    return (moment - offset - _NAIVE_EPOCH) // _ONE_MS
                except (ValueError, OverflowError):
                    return BAD

            def fast(value: str) -> Any:
                if len(value) != length or not value.isascii():
                    return slow(value)
                prefix = value[:cut]
                base = cache.get(prefix)
                if base is None:
                    if len(cache) >= _HOUR_CACHE_SIZE:
                        cache.clear()
                    base = cache[prefix] = hour_ms(prefix)
                if base is BAD:
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
        return BAD

    return convert
