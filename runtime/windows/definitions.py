"""Window definitions: what a condition's ``within`` and ``window`` declare, validated once,
and how an arriving event enters the window.

A window's events are kept by the engine as one flat list of fixed-size entries, time first
(``runtime.rules.state``: ``[time, ref, time, ref, ...]``), in event-time order; ``insert``
works on that list in place. ::

    tumbling, 10 ms:   |0 ........ 9|10 ....... 19|20 ...
    events:              3    7         12              12 opens [10, 20): 3 and 7 are dropped
                                    8                   then 8 is late: [0, 10) has closed
    sliding, 10 ms:    ... 3    7    12    14           at 14 the window is (4, 14]: 7 12 14
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from runtime.windows.ranges import sliding_floor_ms, window_range_ms


def _insert_in_time_order(window: list[Any], entry: tuple[Any, ...], stride: int) -> None:
    """After the last entry at or before the entry's time: usually at the end."""
    time_ms, at = entry[0], len(window)
    while at and window[at - stride] > time_ms:
        at -= stride
    window[at:at] = entry


@dataclass(frozen=True, slots=True)
class SlidingWindow:
    """The last ``duration_ms`` of event time up to the newest event; 0 means unbounded
    (an event condition without ``within``)."""

    duration_ms: int

    def __post_init__(self) -> None:
        if self.duration_ms < 0:
            raise ValueError(f"a sliding window needs a duration of 0 ms or more, got {self.duration_ms}")

    def insert(self, window: list[Any], entry: tuple[Any, ...], stride: int) -> bool:
        """Add the entry, then drop the entries that are ``duration_ms`` or more older than
        the newest. Always True: a sliding window takes every event. (The hot path of every
        count: the insertion and ``sliding_floor_ms`` are written out rather than called.)"""
        time_ms, at = entry[0], len(window)
        while at and window[at - stride] > time_ms:
            at -= stride
        window[at:at] = entry
        if self.duration_ms:
            floor_ms, cut, size = window[-stride] - self.duration_ms, 0, len(window)
            while cut < size and window[cut] <= floor_ms:
                cut += stride
            if cut:
                del window[:cut]
        return True

    def ended(self, newest_ms: int, watermark_ms: int) -> bool:
        """Whether a window whose newest event is at ``newest_ms`` can hold nothing any more."""
        return bool(self.duration_ms) and newest_ms <= sliding_floor_ms(watermark_ms, self.duration_ms)


@dataclass(frozen=True, slots=True)
class TumblingWindow:
    """Fixed, epoch-aligned windows of ``duration_ms`` (:func:`window_range_ms`)."""

    duration_ms: int

    def __post_init__(self) -> None:
        if self.duration_ms <= 0:
            raise ValueError(f"a tumbling window needs a duration above 0 ms, got {self.duration_ms}")

    def insert(self, window: list[Any], entry: tuple[Any, ...], stride: int) -> bool:
        """Add the entry to the window it falls in. The held entries all lie in one window:
        an earlier one is dropped first; a later one means this event is late (False)."""
        if window:
            start_ms, end_ms = window_range_ms(entry[0], self.duration_ms)
            newest_ms = window[-stride]
            if newest_ms >= end_ms:
                return False
            if newest_ms < start_ms:
                window.clear()
        _insert_in_time_order(window, entry, stride)
        return True

    def ended(self, newest_ms: int, watermark_ms: int) -> bool:
        """Forgotten ``duration_ms`` after its newest event, as a sliding window is."""
        return newest_ms <= sliding_floor_ms(watermark_ms, self.duration_ms)


WindowDef = SlidingWindow | TumblingWindow


def window_def(kind: str, duration_ms: int) -> WindowDef:
    """The definition of a condition's ``window`` ("sliding" or "tumbling") of ``within``."""
    if kind == "tumbling":
        return TumblingWindow(duration_ms)
    if kind == "sliding":
        return SlidingWindow(duration_ms)
    raise ValueError(f"a window is 'sliding' or 'tumbling', got {kind!r}")
