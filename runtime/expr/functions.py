"""The whitelisted functions. Nothing else is callable from an expression.

Each function may be written global-style ``f(x, y)`` or receiver-style ``x.f(y)``; both
mean the same call. ``has()`` is a macro handled by the parser and compiler, and
``matches()`` needs its pattern at compile time (see :func:`compile_pattern`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

from runtime.expr.values import (
    INT_MIN,
    LIST_TYPES,
    NUMBER_TYPES,
    EvalError,
    check_int,
    type_name,
)

_INT_TEXT = re.compile(r"[+-]?[0-9]+")
_FLOAT_TEXT = re.compile(
    r"[+-]?(?:(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|inf|infinity|nan)",
    re.IGNORECASE,
)
# Group openers a linear-time (RE2) engine lacks: lookaround, named backreference,
# conditional and atomic groups.
_NON_RE2_GROUPS = ("(?=", "(?!", "(?<=", "(?<!", "(?P=", "(?(", "(?>")


@dataclass(frozen=True, slots=True)
class Function:
    """A callable's arity bounds (``max_args=None``: variadic) and implementation."""

    name: str
    min_args: int
    max_args: int | None
    impl: Callable[..., object]


def _str(value: object, fn: str) -> str:
    if value.__class__ is str:
        return value  # type: ignore[return-value]
    raise EvalError(f"{fn}() expects a string, got {type_name(value)}")


def size(value: object) -> int:
    cls = value.__class__
    if cls is str or cls in LIST_TYPES or isinstance(value, dict):
        return len(value)  # type: ignore[arg-type]
    raise EvalError(f"size() expects a string, list or map, got {type_name(value)}")


def starts_with(value: object, prefix: object) -> bool:
    return _str(value, "startsWith").startswith(_str(prefix, "startsWith"))


def ends_with(value: object, suffix: object) -> bool:
    return _str(value, "endsWith").endswith(_str(suffix, "endsWith"))


def str_contains(value: object, part: object) -> bool:
    return _str(part, "contains") in _str(value, "contains")


def lower(value: object) -> str:
    return _str(value, "lower").lower()


def upper(value: object) -> str:
    return _str(value, "upper").upper()


def to_int(value: object) -> int:
    cls = value.__class__
    if cls is int:
        return value  # type: ignore[return-value]
    if cls is float:
        if math.isfinite(value) and INT_MIN <= value < 2.0**63:  # type: ignore[arg-type]
            return int(value)  # type: ignore[arg-type]
        raise EvalError(f"int() cannot convert {value!r}: out of range")
    if cls is str:
        if _INT_TEXT.fullmatch(value):  # type: ignore[arg-type]
            return check_int(int(value))  # type: ignore[arg-type]
        raise EvalError(f"int() cannot parse {value!r}")
    raise EvalError(f"int() expects an int, double or string, got {type_name(value)}")


def to_double(value: object) -> float:
    cls = value.__class__
    if cls in NUMBER_TYPES:
        return float(value)  # type: ignore[arg-type]
    if cls is str:
        if _FLOAT_TEXT.fullmatch(value):  # type: ignore[arg-type]
            return float(value)  # type: ignore[arg-type]
        raise EvalError(f"double() cannot parse {value!r}")
    raise EvalError(f"double() expects an int, double or string, got {type_name(value)}")


def to_string(value: object) -> str:
    cls = value.__class__
    if cls is str:
        return value  # type: ignore[return-value]
    if cls is bool:
        return "true" if value else "false"
    if cls is int or cls is float:
        return repr(value)
    raise EvalError(f"string() expects a string, number or bool, got {type_name(value)}")


def absolute(value: object) -> object:
    cls = value.__class__
    if cls is int:
        return check_int(abs(value))  # type: ignore[arg-type]
    if cls is float:
        return abs(value)  # type: ignore[arg-type]
    raise EvalError(f"abs() expects a number, got {type_name(value)}")


def _extreme_items(args: tuple[object, ...], fn: str) -> tuple[object, ...]:
    items = tuple(args[0]) if len(args) == 1 and args[0].__class__ in LIST_TYPES else args  # type: ignore[call-overload]
    if not items:
        raise EvalError(f"{fn}() of an empty list")
    if all(item.__class__ in NUMBER_TYPES for item in items):
        return items
    if all(item.__class__ is str for item in items):
        return items
    kinds = sorted({type_name(item) for item in items})
    raise EvalError(f"{fn}() expects all numbers or all strings, got {', '.join(kinds)}")


def minimum(*args: object) -> object:
    return min(_extreme_items(args, "min"))  # type: ignore[type-var]


def maximum(*args: object) -> object:
    return max(_extreme_items(args, "max"))  # type: ignore[type-var]


FUNCTIONS: dict[str, Function] = {
    f.name: f
    for f in (
        Function("size", 1, 1, size),
        Function("startsWith", 2, 2, starts_with),
        Function("endsWith", 2, 2, ends_with),
        Function("contains", 2, 2, str_contains),
        Function("lower", 1, 1, lower),
        Function("upper", 1, 1, upper),
        Function("int", 1, 1, to_int),
        Function("double", 1, 1, to_double),
        Function("string", 1, 1, to_string),
        Function("abs", 1, 1, absolute),
        Function("min", 1, None, minimum),
        Function("max", 1, None, maximum),
        Function("matches", 2, 2, lambda value, pattern: None),  # compiled specially
    )
}


def _non_re2_feature(pattern: str) -> str | None:
    """The first construct in ``pattern`` that RE2 would not accept, if any."""
    i, in_class = 0, False
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            nxt = pattern[i + 1 : i + 2]
            if nxt and nxt in "123456789" and not in_class:
                return "\\" + nxt  # a backreference
            i += 2
            continue
        if in_class:
            in_class = ch != "]"
        elif ch == "[":
            in_class = True
            i += 2 if pattern[i + 1 : i + 2] == "^" else 1
            if pattern[i : i + 1] == "]":  # a leading ']' is a literal
                i += 1
            continue
        elif ch == "(" and pattern.startswith(_NON_RE2_GROUPS, i):
            return next(group for group in _NON_RE2_GROUPS if pattern.startswith(group, i))
        elif ch in "*+?}" and pattern[i + 1 : i + 2] == "+":
            return pattern[i : i + 2]  # a possessive quantifier
        i += 1
    return None


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """Compile a ``matches()`` pattern once; raise ValueError for non-RE2 or invalid ones."""
    bad = _non_re2_feature(pattern)
    if bad:
        raise ValueError(
            f"unsupported regex feature {bad!r} (patterns are RE2-like: "
            "no lookaround, backreferences, atomic groups or possessive quantifiers)"
        )
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"invalid regex: {exc}") from None


def make_matcher(pattern: re.Pattern[str]) -> Callable[[object], bool]:
    """A one-argument ``matches`` for a pre-compiled pattern (partial match, like RE2)."""
    search = pattern.search

    def matches(value: object) -> bool:
        if value.__class__ is not str:
            raise EvalError(f"matches() expects a string, got {type_name(value)}")
        return search(value) is not None  # type: ignore[arg-type]

    return matches
