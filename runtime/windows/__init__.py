"""Event-time windows, split as Quix Streams splits them: the pure range arithmetic
(``ranges``), the window definitions a condition declares (``definitions``) and the
aggregators that fold the values of a window (``aggregators``).

The rule engine keeps each window's events itself (``runtime.rules.state``: a flat list, the
checkpoint form); this package decides which of them are in the window and what they add up to.
"""

from runtime.windows.aggregators import AGGREGATORS, Aggregator
from runtime.windows.definitions import SlidingWindow, TumblingWindow, WindowDef, window_def
from runtime.windows.ranges import sliding_floor_ms, window_range_ms

__all__ = [
    "AGGREGATORS",
    "Aggregator",
    "SlidingWindow",
    "TumblingWindow",
    "WindowDef",
    "sliding_floor_ms",
    "window_def",
    "window_range_ms",
]
