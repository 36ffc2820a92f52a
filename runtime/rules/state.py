"""Per-customer rule state and its checkpoint form (msgpack-friendly lists and dicts)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class WindowState:
    """Matching events of one customer for one condition, ordered by event time (with their
    aggregated values when the condition aggregates)."""

    times: list[int] = field(default_factory=list)
    refs: list[tuple[str, str]] = field(default_factory=list)  # (source, id)
    cooldown_until: int | None = None  # event time before which matches are ignored
    values: list[Any] = field(default_factory=list)

    def clear(self) -> None:
        self.times.clear()
        self.refs.clear()
        self.values.clear()

    def to_wire(self) -> list[Any]:
        wire = [self.times, [list(r) for r in self.refs], self.cooldown_until]
        return [*wire, self.values] if self.values else wire

    @classmethod
    def from_wire(cls, wire: list[Any]) -> WindowState:
        times, refs, cooldown_until, *values = wire
        return cls(list(times), [(s, i) for s, i in refs], cooldown_until, list(values[0]) if values else [])


Occurrence = tuple[int, list[tuple[str, str]]]  # (event time, matched (source, id) refs)


@dataclass(slots=True)
class GroupState:
    """One customer's state for an all/any rule: the count windows of its event conditions (by
    path) and, per 'all' group, the latest occurrence of each of its conditions."""

    windows: dict[str, WindowState] = field(default_factory=dict)
    latest: dict[str, dict[int, Occurrence]] = field(default_factory=dict)
    cooldown_until: int | None = None
    partials: dict[str, dict[int, Occurrence]] = field(default_factory=dict)  # sequence -> steps done -> match
    timers: dict[str, Occurrence] = field(default_factory=dict)  # absence/dwell -> (deadline, the events)
    inside: dict[str, Occurrence] = field(default_factory=dict)  # geofence -> (entered at, the event)

    @property
    def empty(self) -> bool:
        return (
            not self.windows
            and not self.latest
            and not self.partials
            and not self.timers
            and not self.inside
            and self.cooldown_until is None
        )

    def to_wire(self) -> dict[str, Any]:
        return {
            "w": {
                p: [w.times, [list(r) for r in w.refs], *([w.values] if w.values else [])]
                for p, w in self.windows.items()
            },
            "o": {
                p: {str(i): [t, [list(r) for r in refs]] for i, (t, refs) in occ.items()}
                for p, occ in self.latest.items()
            },
            "c": self.cooldown_until,
            "p": {
                p: {str(k): [t, [list(r) for r in refs]] for k, (t, refs) in m.items()}
                for p, m in self.partials.items()
            },
            "t": {p: [t, [list(r) for r in refs]] for p, (t, refs) in self.timers.items()},
            "i": {p: [t, [list(r) for r in refs]] for p, (t, refs) in self.inside.items()},
        }

    @classmethod
    def from_wire(cls, wire: dict[str, Any]) -> GroupState:
        windows = {p: WindowState.from_wire([*w[:2], None, *w[2:]]) for p, w in wire.get("w", {}).items()}
        latest = {
            p: {int(i): (int(t), [(s, e) for s, e in refs]) for i, (t, refs) in occ.items()}
            for p, occ in wire.get("o", {}).items()
        }
        partials = {
            p: {int(k): (int(t), [(s, e) for s, e in refs]) for k, (t, refs) in m.items()}
            for p, m in wire.get("p", {}).items()
        }
        timers = {p: (int(t), [(s, e) for s, e in refs]) for p, (t, refs) in wire.get("t", {}).items()}
        inside = {p: (int(t), [(s, e) for s, e in refs]) for p, (t, refs) in wire.get("i", {}).items()}
        return cls(windows, latest, wire.get("c"), partials, timers, inside)


def state_from_wire(wire: Any) -> WindowState | GroupState:
    return GroupState.from_wire(wire) if isinstance(wire, dict) else WindowState.from_wire(wire)
