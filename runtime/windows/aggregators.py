"""Aggregators: ``initialize() -> state``, ``add(state, value) -> state``, ``result(state)``.

A window's aggregate is the result of adding its values, oldest first, to a fresh state.
``over(values)`` is that same fold done by a builtin in C (``sum``, ``min``, ``max``,
``len(set())``), which returns the very same number: ``sum`` adds left to right like ``add``,
``min``/``max`` keep the first of equal values like ``add``. The unit tests check the two
agree on any values.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Generic, TypeVar

S = TypeVar("S")


class Aggregator(Generic[S]):
    """Folds a window's values into one number; subclasses say how."""

    name = ""

    def initialize(self) -> S:
        raise NotImplementedError

    def add(self, state: S, value: Any) -> S:
        raise NotImplementedError

    def result(self, state: S) -> float:
        raise NotImplementedError

    def over(self, values: Sequence[Any]) -> float:
        """The result of adding ``values`` in order to a fresh state (``values`` not empty)."""
        state = self.initialize()
        for value in values:
            state = self.add(state, value)
        return self.result(state)


class Count(Aggregator[int]):
    name = "count"

    def initialize(self) -> int:
        return 0

    def add(self, state: int, value: Any) -> int:
        return state + 1

    def result(self, state: int) -> float:
        return state

    def over(self, values: Sequence[Any]) -> float:
        return len(values)


class Sum(Aggregator[Any]):
    name = "sum"

    def initialize(self) -> Any:
        return 0

    def add(self, state: Any, value: Any) -> Any:
        return state + value

    def result(self, state: Any) -> float:
        return state  # type: ignore[no-any-return]

    def over(self, values: Sequence[Any]) -> float:
        return sum(values)


class Min(Aggregator[Any]):
    name = "min"

    def initialize(self) -> Any:
        return None

    def add(self, state: Any, value: Any) -> Any:
        return value if state is None or value < state else state

    def result(self, state: Any) -> float:
        return state  # type: ignore[no-any-return]

    def over(self, values: Sequence[Any]) -> float:
        return min(values)  # type: ignore[no-any-return]


class Max(Aggregator[Any]):
    name = "max"

    def initialize(self) -> Any:
        return None

    def add(self, state: Any, value: Any) -> Any:
        return value if state is None or value > state else state

    def result(self, state: Any) -> float:
        return state  # type: ignore[no-any-return]

    def over(self, values: Sequence[Any]) -> float:
        return max(values)  # type: ignore[no-any-return]


class Avg(Aggregator[tuple[Any, int]]):
    name = "avg"

    def initialize(self) -> tuple[Any, int]:
        return 0, 0

    def add(self, state: tuple[Any, int], value: Any) -> tuple[Any, int]:
        return state[0] + value, state[1] + 1

    def result(self, state: tuple[Any, int]) -> float:
        return state[0] / state[1]  # type: ignore[no-any-return]

    def over(self, values: Sequence[Any]) -> float:
        return sum(values) / len(values)  # type: ignore[no-any-return]


class Distinct(Aggregator[set[Any]]):
    """Distinct values, compared as Python compares them (1, 1.0 and True are one value)."""

    name = "distinct"

    def initialize(self) -> set[Any]:
        return set()

    def add(self, state: set[Any], value: Any) -> set[Any]:
        state.add(value)
        return state

    def result(self, state: set[Any]) -> float:
        return len(state)

    def over(self, values: Sequence[Any]) -> float:
        return len(set(values))


AGGREGATORS: dict[str, Aggregator[Any]] = {a.name: a for a in (Count(), Sum(), Min(), Max(), Avg(), Distinct())}
