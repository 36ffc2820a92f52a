"""Aggregators: ``initialize() -> state``, ``add(state, value) -> state``, ``result(state)``.

A window's aggregate is the result of adding its values, oldest first, to a fresh state. A
window that only grows at its end keeps its state and adds each new value (O(1)); one that
lost or reordered values rebuilds it with ``of(values)``, the same fold done by a builtin in C
(``sum``, ``min``, ``max``, ``set``), which gives the very same state: ``sum`` adds left to
right like ``add``, ``min``/``max`` keep the first of equal values like ``add``. The unit
tests check the two agree on any values.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Generic, TypeVar

S = TypeVar("S")


class Aggregator(Generic[S]):
    """Folds a window's values into one number; subclasses say how."""

    name = ""
    kept = True  # whether a window keeps this state between events (see Distinct)

    def initialize(self) -> S:
        raise NotImplementedError

    def add(self, state: S, value: Any) -> S:
        raise NotImplementedError

    def result(self, state: S) -> float:
        raise NotImplementedError

    def of(self, values: Sequence[Any]) -> S:
        """The state after adding ``values`` in order to a fresh one."""
        state = self.initialize()
        for value in values:
            state = self.add(state, value)
        return state


class Count(Aggregator[int]):
    name = "count"

    def initialize(self) -> int:
        return 0

    def add(self, state: int, value: Any) -> int:
        return state + 1

    def result(self, state: int) -> float:
        return state

    def of(self, values: Sequence[Any]) -> int:
        return len(values)


class Sum(Aggregator[Any]):
    name = "sum"

    def initialize(self) -> Any:
        return 0

    def add(self, state: Any, value: Any) -> Any:
        return state + value

    def result(self, state: Any) -> float:
        return state  # type: ignore[no-any-return]

    def of(self, values: Sequence[Any]) -> Any:
        return sum(values)


class Min(Aggregator[Any]):
    name = "min"

    def initialize(self) -> Any:
        return None

    def add(self, state: Any, value: Any) -> Any:
        return value if state is None or value < state else state

    def result(self, state: Any) -> float:
        return state  # type: ignore[no-any-return]

    def of(self, values: Sequence[Any]) -> Any:
        return min(values) if values else None


class Max(Aggregator[Any]):
    name = "max"

    def initialize(self) -> Any:
        return None

    def add(self, state: Any, value: Any) -> Any:
        return value if state is None or value > state else state

    def result(self, state: Any) -> float:
        return state  # type: ignore[no-any-return]

    def of(self, values: Sequence[Any]) -> Any:
        return max(values) if values else None


class Avg(Aggregator[tuple[Any, int]]):
    name = "avg"

    def initialize(self) -> tuple[Any, int]:
        return 0, 0

    def add(self, state: tuple[Any, int], value: Any) -> tuple[Any, int]:
        return state[0] + value, state[1] + 1

    def result(self, state: tuple[Any, int]) -> float:
        return state[0] / state[1]  # type: ignore[no-any-return]

    def of(self, values: Sequence[Any]) -> tuple[Any, int]:
        return sum(values), len(values)


class Distinct(Aggregator[set[Any]]):
    """Distinct values, compared as Python compares them (1, 1.0 and True are one value).
    Its state, a set, costs about 240 bytes per window, as much as the rest of a customer's
    state, so windows rebuild it on each event instead of keeping it."""

    name = "distinct"
    kept = False

    def initialize(self) -> set[Any]:
        return set()

    def add(self, state: set[Any], value: Any) -> set[Any]:
        state.add(value)
        return state

    def result(self, state: set[Any]) -> float:
        return len(state)

    def of(self, values: Sequence[Any]) -> set[Any]:
        return set(values)


AGGREGATORS: dict[str, Aggregator[Any]] = {a.name: a for a in (Count(), Sum(), Min(), Max(), Avg(), Distinct())}
