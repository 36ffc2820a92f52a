"""Aggregate thresholds of event conditions: sum, min, max, avg and distinct over the values of
one ``data`` attribute of the events in a window (folded by :mod:`runtime.windows.aggregators`)."""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from runtime.rules.models import Aggregate
from runtime.rules.state import UNKNOWN, AggregateWindow
from runtime.windows.aggregators import AGGREGATORS, Aggregator

_COMPARE: dict[str, Callable[[float, float], bool]] = {
    "gte": operator.ge,
    "gt": operator.gt,
    "lte": operator.le,
    "lt": operator.lt,
}


@dataclass(frozen=True, slots=True)
class AggregateSpec:
    fn: str  # sum | min | max | avg | distinct
    path: tuple[str, ...]  # inside data
    op: str  # gte | gt | lte | lt
    bound: float
    aggregator: Aggregator[Any] = field(compare=False, repr=False)

    @classmethod
    def build(cls, fn: str, aggregate: Aggregate) -> AggregateSpec:
        op = next(k for k in _COMPARE if getattr(aggregate, k) is not None)
        return cls(fn, tuple(aggregate.of.split(".")[1:]), op, float(getattr(aggregate, op)), AGGREGATORS[fn])

    @property
    def shape(self) -> tuple[Any, ...]:
        return (self.fn, ".".join(self.path), self.op, self.bound)

    def value(self, data: dict[str, Any]) -> Any:
        """The event's value, or None when it has none usable (then the event does not count)."""
        value: Any = data
        for key in self.path:
            if not isinstance(value, dict) or key not in value:
                return None
            value = value[key]
        if self.fn == "distinct":
            return value if isinstance(value, (str, int, float, bool)) else None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        return value

    def satisfied(self, window: list[Any], appended: bool) -> bool:
        """Whether the window's values (every third entry) pass the bound. When the last value
        was ``appended`` to a window that keeps its state, only that value is added."""
        aggregator = self.aggregator
        if window.__class__ is not AggregateWindow:
            return _COMPARE[self.op](aggregator.result(aggregator.of(window[2::3])), self.bound)
        state = window.state  # type: ignore[attr-defined]
        if appended and state is not UNKNOWN:
            state = aggregator.add(state, window[-1])
        else:
            state = aggregator.of(window[2::3])
        window.state = state  # type: ignore[attr-defined]
        return _COMPARE[self.op](aggregator.result(state), self.bound)
