"""Per-customer rule state, kept small (the budget is a few hundred bytes per active customer),
and its checkpoint form (msgpack-friendly lists and dicts, unchanged across versions).

A *window* is one flat list ``[time, ref, time, ref, ...]`` ordered by event time, or
``[time, ref, value, ...]`` when its condition aggregates a value (``stride`` 3). A *ref* names
a matched event as one string, ``"<source>\\x1f<id>"`` (source names cannot hold the separator),
which costs a third of a (source, id) tuple. One list per window instead of parallel lists and
an object: most windows hold one or two events.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from runtime.events.envelope import Event

SEP = "\x1f"

Window = list[Any]
Occurrence = tuple[int, list[str]]  # (event time, refs of the matched events)
Partial = tuple[int, list[str], int]  # a sequence's partial match: (first step's time, refs, last step's time)


class AggregateWindow(list):  # type: ignore[type-arg]
    """The window of an aggregating condition, carrying its aggregator's running state
    (``UNKNOWN`` until first computed, and after the window is cleared). The state is not
    checkpointed: it is rebuilt from the values, which are."""

    __slots__ = ("state",)

    def __init__(self, entries: Any = ()) -> None:
        super().__init__(entries)
        self.state: Any = UNKNOWN


UNKNOWN: Any = object()


def new_window(leaf: Any) -> Window:
    """An empty window for a condition (a ``LeafSpec``): one that keeps a running aggregate
    when the condition aggregates and its aggregator's state is worth keeping."""
    return AggregateWindow() if leaf.aggregate is not None and leaf.aggregate.aggregator.kept else []


def exact_copy(window: Window) -> Window:
    """The window in a list sized exactly (an insertion over-allocates), state kept."""
    if window.__class__ is AggregateWindow:
        copy = AggregateWindow(window)
        copy.state = window.state  # type: ignore[attr-defined]
        return copy
    return window.copy()


def ref_of(event: Event) -> str:
    return f"{event.source}{SEP}{event.id}"


def split_ref(ref: str) -> tuple[str, str]:
    source, _, event_id = ref.partition(SEP)
    return source, event_id


def window_times(window: Window, stride: int) -> list[int]:
    return window[0::stride]


def window_refs(window: Window, stride: int) -> list[str]:
    return window[1::stride]


def window_to_wire(window: Window, stride: int) -> list[Any]:
    """``[times, [[source, id], ...], values?]``: the checkpoint form."""
    wire = [window[0::stride], [list(split_ref(r)) for r in window[1::stride]]]
    return [*wire, window[2::3]] if stride == 3 else wire


def window_from_wire(times: list[int], refs: list[list[str]], values: list[Any] | None = None) -> Window:
    window: Window = []
    for i, (t, (source, event_id)) in enumerate(zip(times, refs, strict=True)):
        window += (t, f"{source}{SEP}{event_id}", values[i]) if values else (t, f"{source}{SEP}{event_id}")
    return window


def _occ_to_wire(occurrence: Occurrence) -> list[Any]:
    return [occurrence[0], [list(split_ref(r)) for r in occurrence[1]]]


def _occ_from_wire(wire: list[Any]) -> Occurrence:
    return int(wire[0]), [f"{s}{SEP}{i}" for s, i in wire[1]]


def _partial_to_wire(partial: Partial) -> list[Any]:
    return [partial[0], [list(split_ref(r)) for r in partial[1]], partial[2]]


def _partial_from_wire(wire: list[Any]) -> Partial:
    # checkpoints before 0.14 kept no last-step time: the first step's is the safe stand-in
    last = int(wire[2]) if len(wire) > 2 else int(wire[0])
    return int(wire[0]), [f"{s}{SEP}{i}" for s, i in wire[1]], last


@dataclass(slots=True, init=False)
class GroupState:
    """One customer's state for a rule whose ``when`` is not one plain event condition: the
    windows of its event conditions (by path, or ``path#value`` when grouped), per 'all' group
    the latest occurrence of each of its conditions, sequence progress, pending timers and open
    states (in a zone, a duration)."""

    windows: dict[str, Window]
    latest: dict[str, dict[int, Occurrence]]
    cooldown_until: int | None
    partials: dict[str, dict[int, Partial]]  # sequence -> steps done -> match
    timers: dict[str, Occurrence]  # absence/dwell/duration -> (deadline, events)
    inside: dict[str, Occurrence]  # geofence/duration -> (since, the event)
    # what a timed condition remembers to place a late event (see operators.py): geofence
    # [last location, last out-of-zone location, in zone 0/1]; absence [newest missing, the
    # last fired wait's after, its deadline]; duration [newest stop, the last fired start, its due]
    marks: dict[str, list[int]]

    def __init__(
        self,
        windows: dict[str, Window] | None = None,
        latest: dict[str, dict[int, Occurrence]] | None = None,
        cooldown_until: int | None = None,
        partials: dict[str, dict[int, Partial]] | None = None,
        timers: dict[str, Occurrence] | None = None,
        inside: dict[str, Occurrence] | None = None,
        marks: dict[str, list[int]] | None = None,
    ) -> None:
        # written out: a dataclass's default factories cost 0.7 µs per state, and a plain
        # sequence makes one per started match
        self.windows = {} if windows is None else windows
        self.latest = {} if latest is None else latest
        self.cooldown_until = cooldown_until
        self.partials = {} if partials is None else partials
        self.timers = {} if timers is None else timers
        self.inside = {} if inside is None else inside
        self.marks = {} if marks is None else marks

    @property
    def empty(self) -> bool:
        return (
            not self.windows
            and not self.latest
            and not self.partials
            and not self.timers
            and not self.inside
            and not self.marks
            and self.cooldown_until is None
        )

    def to_wire(self, strides: dict[str, int]) -> dict[str, Any]:
        return {
            "w": {p: window_to_wire(w, strides.get(p.partition("#")[0], 2)) for p, w in self.windows.items()},
            "o": {p: {str(i): _occ_to_wire(o) for i, o in occ.items()} for p, occ in self.latest.items()},
            "c": self.cooldown_until,
            "p": {p: {str(k): _partial_to_wire(o) for k, o in m.items()} for p, m in self.partials.items()},
            "t": {p: _occ_to_wire(o) for p, o in self.timers.items()},
            "i": {p: _occ_to_wire(o) for p, o in self.inside.items()},
            "m": self.marks,
        }

    @classmethod
    def from_wire(cls, wire: dict[str, Any]) -> GroupState:
        return cls(
            {p: window_from_wire(*w) for p, w in wire.get("w", {}).items()},
            {p: {int(i): _occ_from_wire(o) for i, o in occ.items()} for p, occ in wire.get("o", {}).items()},
            wire.get("c"),
            {p: {int(k): _partial_from_wire(o) for k, o in m.items()} for p, m in wire.get("p", {}).items()},
            {p: _occ_from_wire(o) for p, o in wire.get("t", {}).items()},
            {p: _occ_from_wire(o) for p, o in wire.get("i", {}).items()},
            {p: [int(v) for v in m] for p, m in wire.get("m", {}).items()},
        )
