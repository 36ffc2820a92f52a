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
from runtime.rules.state import UNKNOWN, AggregateWindow, GroupState, Occurrence, Window, ref_of


def accumulate(window: Window, event: Event, leaf: LeafSpec) -> Occurrence | None:
    """Add a matching event to a condition's window (a flat list, see ``state.py``) as its
    window definition says; the occurrence when its count or aggregate threshold is reached
    (the window then restarts)."""
    stride = leaf.stride
    if leaf.aggregate is not None:
        value = leaf.aggregate.value(event.data)
        if value is None:
            return None
        entry: tuple[Any, ...] = (event.time, ref_of(event), value)
        size = len(window)
    else:
        entry = (event.time, ref_of(event))
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
    node: GeofenceSpec, event: Event, context: dict[str, Any], state: GroupState, *, quiet: bool = False
) -> Occurrence | None:
    """Track whether the customer is in the zone. Entering: the occurrence (enter), or a dwell
    timer; leaving cancels the timer. Staying inside does not fire again. ``quiet`` (during a
    cooldown): track only."""
    if not _matches(node.event, event, context):
        return None
    inside = node.contains(event.data)
    if inside is None:
        return None
    was_inside = node.path in state.inside
    if inside and not was_inside:
        entered: Occurrence = (event.time, [ref_of(event)])
        state.inside[node.path] = entered
        if quiet:
            return None
        if not node.dwell_ms:
            return entered
        state.timers[node.path] = (event.time + node.dwell_ms, entered[1])
    elif not inside and was_inside:
        del state.inside[node.path]
        state.timers.pop(node.path, None)
    return None


def watch_duration(
    node: DurationSpec, event: Event, context: dict[str, Any], state: GroupState, *, quiet: bool = False
) -> Occurrence | None:
    """A ``start`` opens the state (and a timer at start + ``min_ms``) unless one is open; a
    ``stop`` closes it, firing when it comes at or after the timer's time and the timer has not
    run yet. ``quiet`` (during a cooldown): track only."""
    opened = state.inside.get(node.path)
    if opened is not None and _matches(node.stop, event, context) and event.time >= opened[0]:
        del state.inside[node.path]
        timer = state.timers.pop(node.path, None)
        if timer is not None and event.time >= timer[0] and not quiet:
            return timer
        return None
    if opened is None and _matches(node.start, event, context):
        ref = [ref_of(event)]
        state.inside[node.path] = (event.time, ref)
        if not quiet:
            state.timers[node.path] = (event.time + node.min_ms, ref)
    return None


def watch_absence(node: AbsenceSpec, event: Event, context: dict[str, Any], state: GroupState) -> None:
    """A 'missing' event at or after the 'after' event, before the deadline, cancels the wait;
    an 'after' event starts one when none is pending."""
    pending = state.timers.get(node.path)
    if pending is not None and _matches(node.missing, event, context):
        deadline = pending[0]
        if deadline - node.within_ms <= event.time < deadline:
            del state.timers[node.path]
            pending = None
    if pending is None and _matches(node.after, event, context):
        state.timers[node.path] = (event.time + node.within_ms, [ref_of(event)])


def _matches(leaf: LeafSpec | None, event: Event, context: dict[str, Any]) -> bool:
    return leaf is not None and leaf.event_type == event.type and (leaf.where is None or leaf.where.predicate(context))


def advance_sequence(node: SequenceSpec, event: Event, context: dict[str, Any], state: GroupState) -> Occurrence | None:
    """Keep, per number of steps done, the latest-started partial match (a later start is never
    worse: it leaves more of ``within`` and fewer events in between). The match completing the
    last step is the occurrence; the sequence then restarts."""
    old = state.partials.get(node.path, {})
    old = {k: m for k, m in old.items() if m[0] > event.time - node.within_ms}
    ref = ref_of(event)
    steps = len(node.steps)
    advanced: dict[int, Occurrence] = {}
    fired: Occurrence | None = None
    for k, step in enumerate(node.steps):
        if not _matches(step, event, context):
            continue
        if k == 0:
            match: Occurrence = (event.time, [ref])
        elif k in old:  # a 'not' condition counts only strictly between steps
            match = (old[k][0], [*old[k][1], ref])
        else:
            continue
        if k + 1 == steps:
            fired = match
        else:
            advanced[k + 1] = match
    if node.strict and any(s.event_type == event.type for s in node.steps):
        kept: dict[int, Occurrence] = {}  # strict: an event of the steps' types ends every partial it does not extend
    else:
        kept = {k: m for k, m in old.items() if not _matches(node.guards[k], event, context)}
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


def expire_group(rule: CompiledRule, state: GroupState, watermark_ms: int) -> None:
    assert rule.group is not None
    leaves = {leaf.path: leaf for leaf in rule.group.leaves()}
    for path in list(state.windows):
        window, leaf = state.windows[path], leaves.get(path.partition("#")[0])
        if leaf is None or (window and leaf.window.ended(window[-leaf.stride], watermark_ms)):
            del state.windows[path]
    spans = _group_spans(rule.group)
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
    if state.cooldown_until is not None and state.cooldown_until <= watermark_ms:
        state.cooldown_until = None


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
