"""Window definitions: what a condition's ``within`` and ``window`` declare, validated once,
with the decisions the engine asks of them as an event arrives.

::

    tumbling, 10 ms:   |0 ........ 9|10 ....... 19|20 ...
    events:              3    7         12              -> 12 opens [10, 20): 3 and 7 are dropped
                                    8                   -> late for [0, 10), which has closed
    sliding, 10 ms:    ... 3    7    12    14           -> at 14 the window is (4, 14]: 7 12 14
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from runtime.windows.ranges import sliding_floor_ms, window_range_ms


class Arrival(Enum):
    """What an event does to a tumbling window that already holds events."""

    JOIN = "join"  # same window: insert it
    RESTART = "restart"  # a later window: drop the old events first
    LATE = "late"  # an earlier window, already closed: ignore the event


@dataclass(frozen=True, slots=True)
class SlidingWindow:
    """The last ``duration_ms`` of event time before the newest event; 0 means unbounded
    (an event condition without ``within``)."""

    duration_ms: int

    def __post_init__(self) -> None:
        if self.duration_ms < 0:
            raise ValueError(f"a sliding window needs a duration of 0 ms or more, got {self.duration_ms}")

    def arrival(self, newest_ms: int, time_ms: int) -> Arrival:
        """A sliding window takes every event; eviction (``floor_ms``) keeps it within bounds."""
        return Arrival.JOIN

    def floor_ms(self, newest_ms: int) -> int | None:
        """Events at or before this time leave the window; None: nothing leaves."""
        return sliding_floor_ms(newest_ms, self.duration_ms) if self.duration_ms else None

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

    def arrival(self, newest_ms: int, time_ms: int) -> Arrival:
        """Compare the event's window with the window of the newest event held."""
        start_ms, _ = window_range_ms(time_ms, self.duration_ms)
        current_ms, _ = window_range_ms(newest_ms, self.duration_ms)
        if start_ms < current_ms:
            return Arrival.LATE
        return Arrival.RESTART if start_ms > current_ms else Arrival.JOIN

    def floor_ms(self, newest_ms: int) -> int | None:
        """Nothing leaves a tumbling window early: it restarts whole."""
        return None

    def ended(self, newest_ms: int, watermark_ms: int) -> bool:
        """Forgotten ``duration_ms`` after its newest event, as a sliding window would be."""
        return newest_ms <= sliding_floor_ms(watermark_ms, self.duration_ms)


WindowDef = SlidingWindow | TumblingWindow


def window_def(kind: str, duration_ms: int) -> WindowDef:
    """The definition of a condition's ``window`` ("sliding" or "tumbling") of ``within``."""
    if kind == "tumbling":
        return TumblingWindow(duration_ms)
    if kind == "sliding":
        return SlidingWindow(duration_ms)
    raise ValueError(f"a window is 'sliding' or 'tumbling', got {kind!r}")
