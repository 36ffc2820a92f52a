"""Durations as users write them (``90s``, ``30m``, ``7d``, ``500ms``, or plain seconds)."""

from __future__ import annotations

import math
import re
from decimal import Decimal

MAX_DURATION_MS = 400 * 86_400_000  # 400 days: longer than any window, horizon or wait needs
_MAX_TEXT = 32  # characters of a written duration

_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")


def parse_duration_ms(value: object, *, max_ms: int = MAX_DURATION_MS) -> int:
    """Milliseconds in ``value``; numbers are seconds. Raises ValueError naming the input,
    also above ``max_ms``: an unbounded duration (``99999999w``) would make the work it sizes
    (day buckets to scan, windows to keep) unbounded too."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like '30m' or '7d', got {value!r}")
    if isinstance(value, (int, float)):
        if value < 0 or not math.isfinite(value) or value > max_ms:  # seconds > max_ms ms: certainly too long
            raise ValueError(
                f"expected a finite, non-negative duration of at most {format_duration_ms(max_ms)}, got {value!r:.40}"
            )
        ms = int(Decimal(str(value)) * 1000)
    elif isinstance(value, str) and len(value) <= _MAX_TEXT and (match := _PATTERN.match(value)):
        ms = int(Decimal(match.group(1)) * _UNITS_MS[match.group(2) or "s"])
    else:
        raise ValueError(f"expected a duration like '30m', '7d' or a number of seconds, got {value!r:.40}")
    if ms > max_ms:
        raise ValueError(f"duration {value!r:.40} is longer than the longest accepted, {format_duration_ms(max_ms)}")
    return ms


def format_duration_ms(ms: int) -> str:
    if ms == 0:
        return "0s"
    for unit in ("w", "d", "h", "m", "s"):
        size = _UNITS_MS[unit]
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"
