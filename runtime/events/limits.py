"""Limits on what a JSON-like value from outside may look like, and one walk that checks them.

Everything that leaves the edge is later packed by msgpack or orjson, compared, hashed and
evaluated: a value nested 10,000 deep, an integer past 64 bits, a NaN or a lone surrogate would
fail far from the request that brought it (a 5xx, or a log entry that stalls its partition).
So events, profiles and config documents are held to these limits where they come in, and each
violation has a stable machine-readable reason::

    too_deep              containers nested deeper than MAX_DEPTH
    integer_out_of_range  an integer outside the signed 64-bit range
    string_too_long       a string over MAX_STRING_LENGTH, or a key over MAX_KEY_LENGTH
    too_many_keys         an object with more than MAX_KEYS keys
    invalid_number        NaN or an infinity
    invalid_unicode       a string that is not valid Unicode (a lone surrogate)
"""

from __future__ import annotations

import math
import re
from typing import Any

MAX_DEPTH = 32  # far below msgpack's and orjson's own limits (>254 fails there) and the C stack
MAX_STRING_LENGTH = 65_536  # characters
MAX_KEY_LENGTH = 256  # characters of an object key
MAX_KEYS = 1_000  # keys of one object
INT_MIN = -(2**63)
INT_MAX = 2**63 - 1

REASONS = (
    "too_deep",
    "integer_out_of_range",
    "string_too_long",
    "too_many_keys",
    "invalid_number",
    "invalid_unicode",
)

Problem = tuple[str, str]  # (reason, message)

_SURROGATE = re.compile("[\ud800-\udfff]")


def string_problem(text: str, limit: int = MAX_STRING_LENGTH) -> Problem | None:
    """A string's problem; ASCII strings (the common case) cost one flag test."""
    if len(text) > limit:
        return "string_too_long", f"has {len(text)} characters; at most {limit} are accepted"
    if not text.isascii() and _SURROGATE.search(text) is not None:
        return "invalid_unicode", "holds a lone surrogate, which is not valid Unicode"
    return None


def within_limits(value: Any, depth: int = 1) -> bool:
    """Whether ``value`` (at nesting level ``depth``) keeps every limit: the fast check, one
    loop without recursion or messages, for the ingest hot path."""
    stack = [(value, depth)]
    pop, push = stack.pop, stack.append
    while stack:
        node, level = pop()
        cls = node.__class__
        if cls is dict:
            if level > MAX_DEPTH or len(node) > MAX_KEYS:
                return False
            for key in node:
                if (
                    key.__class__ is str
                    and (len(key) > 32 or not key.isascii())
                    and string_problem(key, MAX_KEY_LENGTH)
                ):
                    return False
            items: Any = node.values()
        elif cls is list:
            if level > MAX_DEPTH:
                return False
            items = node
        else:
            items = (node,)
            level -= 1  # a scalar at the top: checked at its own level below
        for item in items:
            kind = item.__class__
            if kind is str:
                if len(item) > MAX_STRING_LENGTH or (not item.isascii() and _SURROGATE.search(item) is not None):
                    return False
            elif kind is int:
                if not INT_MIN <= item <= INT_MAX:
                    return False
            elif kind is float:
                if not _isfinite(item):
                    return False
            elif kind is dict or kind is list:
                push((item, level + 1))
    return True


def value_problem(value: Any, path: str = "data", *, depth: int = 1) -> Problem | None:
    """The first limit ``value`` breaks, as (reason, message naming where), or None. Types
    other than the JSON ones (an Arrow timestamp, say) are left to the caller. ``depth`` is
    the level ``value`` is at (0 for a whole event, whose ``data`` is then at level 1)."""
    found = locate(value, depth)
    if found is None:
        return None
    reason, where, what = found
    return reason, f"'{path}{where}' {what}"


def locate(value: Any, depth: int = 1) -> tuple[str, str, str] | None:
    """(reason, where, what) of the first limit ``value`` breaks, ``where`` a path such as
    ``.a[1].b`` below ``value``; None if it keeps them all (the fast check says so)."""
    if within_limits(value, depth):
        return None
    found = _walk(value, depth)
    if found is None:
        return None
    reason, what, parts = found
    where = "".join(reversed(parts))
    return reason, where if len(where) <= 120 else "..." + where[-117:], what


_Found = tuple[str, str, list[str]]  # reason, message, path parts from the innermost outwards


def _walk(value: Any, depth: int) -> _Found | None:
    """The precise walk, for a value known to break a limit: which one, and where. It stops at
    MAX_DEPTH, so it is itself safe on any input."""
    cls = value.__class__
    if cls is dict:
        if depth > MAX_DEPTH:
            return "too_deep", f"is nested more than {MAX_DEPTH} levels deep", []
        if len(value) > MAX_KEYS:
            return "too_many_keys", f"has {len(value)} keys; at most {MAX_KEYS} are accepted", []
        for key, item in value.items():
            problem = string_problem(key, MAX_KEY_LENGTH) if key.__class__ is str else None
            if problem is not None:
                return problem[0], f"has a key that {problem[1]}", []
            found = _walk(item, depth + 1)
            if found is not None:
                found[2].append(f".{str(key)[:40]}")
                return found
        return None
    if cls is list:
        if depth > MAX_DEPTH:
            return "too_deep", f"is nested more than {MAX_DEPTH} levels deep", []
        for index, item in enumerate(value):
            found = _walk(item, depth + 1)
            if found is not None:
                found[2].append(f"[{index}]")
                return found
        return None
    if cls is str:
        problem = string_problem(value)
        return None if problem is None else (*problem, [])
    if cls is int:
        if INT_MIN <= value <= INT_MAX:
            return None
        return "integer_out_of_range", "is outside the 64-bit integer range [-2^63, 2^63-1]", []
    if cls is float and not math.isfinite(value):
        return "invalid_number", f"is {value}; numbers must be finite", []
    return None


_isfinite = math.isfinite
