"""Durations as users write them (``90s``, ``30m``, ``7d``, ``500ms``, or plain seconds)."""

from __future__ import annotations

import math
import re
from decimal import Decimal

_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")


def parse_duration_ms(value: object) -> int:
    """Milliseconds in ``value``; numbers are seconds. Raises ValueError naming the input."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like '30m' or '7d', got {value!r}")
    if isinstance(value, (int, float)):
        if value < 0 or not math.isfinite(value):
            raise ValueError(f"expected a finite, non-negative duration, got {value!r}")
        return int(Decimal(str(value)) * 1000)
    if isinstance(value, str):
        match = _PATTERN.match(value)
        if match:
            return int(Decimal(match.group(1)) * _UNITS_MS[match.group(2) or "s"])
    raise ValueError(f"expected a duration like '30m', '7d' or a number of seconds, got {value!r}")


def format_duration_ms(ms: int) -> str:
    if ms == 0:
        return "0s"
    for unit in ("w", "d", "h", "m", "s"):
        size = _UNITS_MS[unit]
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"
