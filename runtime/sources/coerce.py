"""Value conversions for mapped fields: a parsed value in, the converted value or :data:`BAD` out.

The converters never raise on a value they cannot convert; they return :data:`BAD` (None is a
legal value, so it cannot mean "no"). :data:`COERCERS` holds the ``FieldSpec.type`` coercions
(``string``, ``int``, ``float``, ``bool``); :func:`as_text` writes an id, type or subject and
:func:`map_key` a ``map`` key. Numbers written as text are read by :func:`parse_number`, which
takes plain decimals only (no ``nan``, ``inf`` or ``1_000``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import date, datetime
from typing import Any

from runtime.expr.values import INT_MAX, INT_MIN

__all__ = [
    "BAD",
    "COERCERS",
    "NUMBER_TEXT",
    "as_text",
    "map_key",
    "parse_number",
    "show",
    "to_bool",
    "to_float",
    "to_int",
    "to_string",
]

BAD: Any = object()  # "cannot convert" (None is a legal value)
NUMBER_TEXT = re.compile(r"\s*[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\s*", re.ASCII)
_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})


def show(value: Any) -> str:
    """A value for an error message: its repr, cut to 80 characters."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def as_text(value: Any) -> Any:
    """An id, subject or type as a string: strings as they are, numbers written out."""
    cls = value.__class__
    if cls is str:
        return value
    if cls is int:
        return str(value)
    if cls is float:
        if value.is_integer():
            return str(int(value))
        return repr(value) if math.isfinite(value) else BAD
    if cls is bool:
        return "true" if value else "false"
    return BAD


def map_key(value: Any) -> str:
    """A value as a ``map`` key: strings as they are, numbers and booleans written out."""
    cls = value.__class__
    if cls is str:
        return value
    if cls is bool:
        return "true" if value else "false"
    if cls is float and value.is_integer():
        return str(int(value))
    return str(value)


def parse_number(text: str) -> int | float | None:
    """A decimal number written as text ("42", "-1.5", "1e3"), else None (no nan/inf/1_000)."""
    if len(text) > 64 or not NUMBER_TEXT.fullmatch(text):
        return None
    stripped = text.strip()
    if stripped.lstrip("+-").isdigit():
        return int(stripped)
    value = float(stripped)
    return value if math.isfinite(value) else None


def to_string(value: Any) -> Any:
    """``type: string``: numbers and booleans written out, dates in ISO 8601."""
    cls = value.__class__
    if cls is str:
        return value
    if cls is bool:
        return "true" if value else "false"
    if cls is int:
        return str(value)
    if cls is float:
        return repr(value) if math.isfinite(value) else BAD
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    return BAD


def to_int(value: Any) -> Any:
    """``type: int``: int64 integers, from integral floats and numeric text too."""
    cls = value.__class__
    if cls is int:
        return value if INT_MIN <= value <= INT_MAX else BAD
    if cls is str:
        if value.isdigit() and value.isascii() and len(value) < 19:
            return int(value)
        number = parse_number(value)
        if number is None:
            return BAD
        value, cls = number, number.__class__
        if cls is int:
            return value if INT_MIN <= value <= INT_MAX else BAD
    if cls is float and value.is_integer() and INT_MIN <= value <= INT_MAX:
        return int(value)
    return BAD


def to_float(value: Any) -> Any:
    """``type: float``: finite floats, from integers and numeric text too."""
    cls = value.__class__
    if cls is float:
        return value if math.isfinite(value) else BAD
    if cls is int:
        try:
            return float(value)
        except OverflowError:
            return BAD
    if cls is str:
        number = parse_number(value)
        if number is None:
            return BAD
        try:
            number = float(number)
        except OverflowError:
            return BAD
        return number if math.isfinite(number) else BAD
    return BAD


def to_bool(value: Any) -> Any:
    """``type: bool``: booleans, the words true/false, yes/no, 1/0, and the integers 1 and 0."""
    cls = value.__class__
    if cls is bool:
        return value
    if cls is str:
        word = value.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
        return BAD
    if cls is int and value in (0, 1):
        return value == 1
    return BAD


COERCERS: dict[str, Callable[[Any], Any]] = {
    "string": to_string,
    "int": to_int,
    "float": to_float,
    "bool": to_bool,
}
