"""How each kind of condition advances with one event: count and aggregate windows, sequences,
absences and geofences. Plain functions over the state in ``runtime.rules.state``."""

from __future__ import annotations

from typing import Any

from runtime.events.envelope import Event
from runtime.rules.compiled import (
    AbsenceSpec,
    CompiledRule,
    DurationSpec,
    GeofenceSpec,
    GroupSpec,
    LeafSpec,
    SequenceSpec,
)
from runtime.rules.state import UNKNOWN, AggregateWindow, GroupState, Occurrence, Partial, Window, ref_of

MARK_MEMORY_MS = 24 * 3600 * 1000  # how long a geofence remembers where a customer was last seen


def accumulate(window: Window, time_ms: int, ref: str, data: dict[str, Any], leaf: LeafSpec) -> Occurrence | None:
    """Add a matching event (its time, ref and ``data``, which only an aggregate reads) to a
    condition's window (a flat list, see ``state.py``) as its window definition says; the
    occurrence when its count or aggregate threshold is reached (the window then restarts)."""
    stride = leaf.stride
    if leaf.aggregate is not None:
        value = leaf.aggregate.value(data)
        if value is None:
            return None
        entry: tuple[Any, ...] = (time_ms, ref, value)
        size = len(window)
    else:
        entry = (time_ms, ref)
    if not leaf.insert(window, entry, stride):
        return None  # late for a tumbling window that has closed
    if leaf.aggregate is not None:
        # grown by exactly this entry, at the end: nothing left, nothing reordered
        appended = len(window) == size + stride and window[-2] is entry[1]
        if not leaf.aggregate.satisfied(window, appended):
            return None
    elif len(window) < leaf.threshold * stride:
        return None
    occurrence = (window[-stride], window[1::stride])
    window.clear()
    if window.__class__ is AggregateWindow:
        window.state = UNKNOWN  # type: ignore[attr-defined]
    return occurrence


def watch_geofence(
    node: GeofenceSpec,
    event: Event,
    context: dict[str, Any],
    state: GroupState,
    retracted: list[str],
    *,
    quiet: bool = False,
) -> Occurrence | None:
    """Track whether the customer is in the zone. An entry is the first in-zone location after
    an out-of-zone one (a first known location inside the zone is no entry): the occurrence
    (enter), or a dwell timer; leaving cancels the timer. Staying inside does not fire again.
    A location older than the last one known changes nothing; when it shows that an entry (or a
    dwell) already published was not one, its path goes to ``retracted``. ``quiet`` (during a
    cooldown): track only."""
    if not _matches(node.event, event, context):
        return None
    inside = node.contains(event.data)
    if inside is None:
        return None
    path, t = node.path, event.time
    marks = state.marks.get(path)  # [last location, last out-of-zone location (-1: none), in zone]
    entered = state.inside.get(path)
    if marks is not None and t < marks[0]:  # late: placed against what is known, nothing moves
        if entered is not None and not quiet:
            if inside and marks[1] < t < entered[0] and not node.dwell_ms:
                retracted.append(path)  # the customer was already inside: that entry was none
            elif not inside and entered[0] <= t < entered[0] + node.dwell_ms and path not in state.timers:
                retracted.append(path)  # left before the dwell that was published
        if not inside and entered is not None and t >= entered[0]:  # left, came back at an unknown time
            del state.inside[path]
            state.timers.pop(path, None)
            marks[1] = t
        return None
    if marks is None:
        state.marks[path] = [t, -1 if inside else t, int(inside)]
        return None
    was_inside = marks[2]
    marks[0], marks[2] = t, int(inside)
    if not inside:
        marks[1] = t
        if entered is not None:
            del state.inside[path]
            state.timers.pop(path, None)
        return None
    if was_inside:
        return None
    entry: Occurrence = (t, [ref_of(event)])
    state.inside[path] = entry
    if quiet:
        return None
    if not node.dwell_ms:
        return entry
    state.timers[path] = (t + node.dwell_ms, entry[1])
    return None


def watch_duration(
    node: DurationSpec,
    event: Event,
    context: dict[str, Any],
    state: GroupState,
    retracted: list[str],
    *,
    quiet: bool = False,
) -> Occurrence | None:
    """A ``start`` opens the state (and a timer at start + ``min_ms``) unless one is open; a
    ``stop`` closes it, firing when it comes at or after the timer's time and the timer has not
    run yet. A ``stop`` earlier than the open state's start is ignored, and so is a ``start``
    earlier than a ``stop`` already seen; a late ``stop`` that ends a state before the duration
    it already fired goes to ``retracted``. ``quiet`` (during a cooldown): track only."""
    path, t = node.path, event.time
    opened = state.inside.get(path)
    marks = state.marks.get(path)  # [newest stop, the last fired state's start, its due] (-1: none)
    if _matches(node.stop, event, context):
        marks = _closing_seen(state, path, t)
        if _inside_fired(marks, t) and not quiet:
            retracted.append(path)
        if opened is not None and t >= opened[0]:
            del state.inside[path]
            timer = state.timers.pop(path, None)
            if timer is not None and t >= timer[0] and not quiet:
                _fired(state, path, opened[0], timer[0])
                return timer
            return None
    if opened is None and _matches(node.start, event, context):
        if marks is not None and marks[0] > t:
            return None  # a stop after this start was seen: where the state ended is unknown
        ref = [ref_of(event)]
        state.inside[path] = (t, ref)
        if not quiet:
            state.timers[path] = (t + node.min_ms, ref)
    return None


def watch_absence(
    node: AbsenceSpec, event: Event, context: dict[str, Any], state: GroupState, retracted: list[str]
) -> None:
    """A 'missing' event at or after the 'after' event, before the deadline, cancels the wait
    (arriving once the wait has fired, it goes to ``retracted``); an 'after' event starts one
    when none is pending and no 'missing' event later than it has been seen."""
    path, t = node.path, event.time
    pending = state.timers.get(path)
    marks = state.marks.get(path)  # [newest missing, the last fired wait's after, its deadline] (-1: none)
    if _matches(node.missing, event, context):
        marks = _closing_seen(state, path, t)
        if pending is not None and pending[0] - node.within_ms <= t < pending[0]:
            del state.timers[path]
            pending = None
        elif _inside_fired(marks, t):
            retracted.append(path)
    if pending is None and _matches(node.after, event, context) and (marks is None or marks[0] <= t):
        state.timers[path] = (t + node.within_ms, [ref_of(event)])


def _closing_seen(state: GroupState, path: str, time_ms: int) -> list[int]:
    """Remember the newest event that closes an absence or duration ('missing', 'stop'): the
    condition's marks, ``[newest, last fired from, last fired until]`` (-1: none)."""
    marks = state.marks.get(path)
    if marks is None:
        marks = state.marks[path] = [time_ms, -1, -1]
    elif time_ms > marks[0]:
        marks[0] = time_ms
    return marks


def _inside_fired(marks: list[int], time_ms: int) -> bool:
    """Whether ``time_ms`` falls in the span of the wait or state that last fired."""
    return 0 <= marks[1] <= time_ms < marks[2]


def timer_fired(node: Any, state: GroupState, deadline: int) -> None:
    """Remember the span of a fired absence or duration, to recognise a late event that
    contradicts it (a retraction)."""
    if isinstance(node, (AbsenceSpec, DurationSpec)):
        span = node.within_ms if isinstance(node, AbsenceSpec) else node.min_ms
        _fired(state, node.path, deadline - span, deadline)


def _fired(state: GroupState, path: str, start: int, due: int) -> None:
    marks = state.marks.setdefault(path, [-1, -1, -1])
    marks[1], marks[2] = start, due


def _matches(leaf: LeafSpec | None, event: Event | None, context: dict[str, Any] | None) -> bool:
    return (
        leaf is not None
        and event is not None
        and leaf.event_type == event.type
        and (leaf.where is None or leaf.where.predicate(context))  # type: ignore[arg-type]
    )


def advance_sequence(
    node: SequenceSpec,
    event: Event | None,
    context: dict[str, Any] | None,
    state: GroupState,
    occurring: dict[int, Occurrence],
) -> Occurrence | None:
    """Advance the sequence by the steps that occur now (``occurring``: step -> occurrence;
    single-event steps occur with the event, timed ones when they complete). Keep, per number
    of steps done, the latest-started partial match (a later start is never worse: it leaves
    more of ``within`` and fewer events in between). A step extends a partial only when it
    occurs at or after the partial's last step and less than ``within`` after its first, so a
    late event is placed where its time says. The match completing the last step is the
    occurrence (at its last step's time); the sequence then restarts."""
    old = state.partials.get(node.path, {})
    within, steps = node.within_ms, len(node.steps)
    # newest time of a 'not' event per gap (and at 0, for strict, of any event of the steps' types)
    seen = state.marks.get(node.path) if node.strict or node.guarded else None
    advanced: dict[int, Partial] = {}
    fired: Occurrence | None = None
    for k in sorted(occurring):
        t, refs = occurring[k]
        if k == 0:
            match: Partial = (t, refs, t)
        else:
            partial = old.get(k)  # a 'not' condition counts only strictly between steps
            if partial is None or not (partial[2] <= t and t - partial[0] < within):
                continue
            if seen is not None and (seen[k] > partial[2] or (node.strict and seen[0] > partial[2])):
                continue  # a 'not' (strict: any step-type) event seen earlier lies after the partial's last step
            match = (partial[0], [*partial[1], *refs], t)
        if k + 1 == steps:
            fired = (t, match[1])
        else:
            advanced[k + 1] = match
    if event is None:
        kept = dict(old)
    else:
        t = event.time
        strict = node.strict and event.type in node.step_types
        # drop what ran out by this event's time; a 'not' event (strict: any event of the steps'
        # types) ends the partials whose last step is not after it
        kept = {
            k: m
            for k, m in old.items()
            if t - m[0] < within and not (m[2] <= t and (strict or _matches(node.guards[k], event, context)))
        }
    if event is not None and (node.strict or node.guarded):
        _remember_between(node, event, context, state)
    for k, match in advanced.items():
        if k not in kept or kept[k][0] <= match[0]:
            kept[k] = match
    if fired is not None:
        kept = {}
    if kept:
        state.partials[node.path] = kept
    else:
        state.partials.pop(node.path, None)
    return fired


def _remember_between(node: SequenceSpec, event: Event, context: dict[str, Any] | None, state: GroupState) -> None:
    """Remember the newest 'not' event of each gap (strict: of any step type), so a late step
    cannot complete a match across one that arrived before it."""
    hits = [k for k, guard in enumerate(node.guards) if guard is not None and _matches(guard, event, context)]
    if node.strict and event.type in node.step_types:
        hits.append(0)
    if not hits:
        return
    seen = state.marks.get(node.path)
    if seen is None:
        seen = state.marks[node.path] = [-1] * len(node.steps)
    for k in hits:
        seen[k] = max(seen[k], event.time)


def expire_group(rule: CompiledRule, state: GroupState, watermark_ms: int) -> None:
    assert rule.group is not None
    leaves = {leaf.path: leaf for leaf in rule.group.leaves()}
    for path in list(state.windows):
        window, leaf = state.windows[path], leaves.get(path.partition("#")[0])
        if leaf is None or (window and leaf.window.ended(window[-leaf.stride], watermark_ms)):
            del state.windows[path]
    spans = _group_spans(rule.group)
    nodes = nodes_of(rule.group)
    for path in list(state.latest):
        span = spans.get(path, 0)
        occurrences = state.latest[path]
        for index in [i for i, (t, _) in occurrences.items() if span and t <= watermark_ms - span]:
            del occurrences[index]
        if not occurrences:
            del state.latest[path]
    for path in list(state.partials):
        span = spans.get(path, 0)
        partials = {k: m for k, m in state.partials[path].items() if not (span and m[0] <= watermark_ms - span)}
        if partials:
            state.partials[path] = partials
        else:
            del state.partials[path]
    for path in list(state.marks):
        memory = MARK_MEMORY_MS if isinstance(nodes.get(path), GeofenceSpec) else 0
        if path not in state.inside and path not in state.timers and max(state.marks[path]) <= watermark_ms - memory:
            del state.marks[path]
    if state.cooldown_until is not None and state.cooldown_until <= watermark_ms:
        state.cooldown_until = None


def nodes_of(node: Any) -> dict[str, Any]:
    """Every condition under ``node`` (itself included), by path."""
    found = {node.path: node}
    for child in (*getattr(node, "steps", ()), *getattr(node, "children", ())):
        found.update(nodes_of(child))
    return found


def _group_spans(node: Any) -> dict[str, int]:
    """``within`` of every all/any group and sequence under ``node``, by path."""
    if isinstance(node, SequenceSpec):
        return {node.path: node.within_ms}
    if not isinstance(node, GroupSpec):
        return {}
    spans = {node.path: node.within_ms}
    for child in node.children:
        spans.update(_group_spans(child))
    return spans
