"""Window ranges in event time: pure functions of integers, milliseconds in every name.

Tumbling windows are aligned to the epoch: ``[k * duration_ms, (k + 1) * duration_ms)``. A
sliding window of ``duration_ms`` ending at an event holds the events at most ``duration_ms``
before it, strictly: ``0 <= newest - t < duration_ms`` (DESIGN.md invariant 9, "within T").
"""

from __future__ import annotations


def window_range_ms(timestamp_ms: int, duration_ms: int) -> tuple[int, int]:
    """``(start_ms, end_ms)``, end exclusive, of the tumbling window holding ``timestamp_ms``.
    Floors towards minus infinity, so times before 1970 fall in the right window too."""
    start_ms = timestamp_ms - timestamp_ms % duration_ms
    return start_ms, start_ms + duration_ms


def sliding_floor_ms(newest_ms: int, duration_ms: int) -> int:
    """Events at or before this time have left the sliding window that ends at ``newest_ms``."""
    return newest_ms - duration_ms
