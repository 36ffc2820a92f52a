"""Per-partition rule evaluation: (rules, state) + events -> (outputs, state).

For each customer and rule the engine keeps the matching events of the current window (event
time, newest last; an event arriving out of order takes its place by time, and events older
than the newest minus the window fall out). When the count reaches the threshold the rule
fires with the events in the window, the window restarts and the cooldown begins. During a
cooldown the customer's matching events are ignored: counting starts afresh when it ends.
Customers with no open window and no running cooldown hold no state.

The same engine runs inside partition actors, in tests and in the benchmark; it never reads the
clock and never touches Redis or Ray.
"""

from __future__ import annotations

import bisect
import hashlib
import heapq
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from runtime.envelope import Event, format_time_ms
from runtime.rules.compiled import AbsenceSpec, CompiledRule, GeofenceSpec, GroupSpec, LeafSpec, SequenceSpec


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


def _accumulate(window: WindowState, event: Event, leaf: LeafSpec) -> Occurrence | None:
    """Add a matching event to a condition's window; the occurrence when its count or aggregate
    threshold is reached (the window then restarts)."""
    value = None
    if leaf.aggregate is not None:
        value = leaf.aggregate.value(event.data)
        if value is None:
            return None
    if leaf.tumbling and window.times:
        bucket, current = event.time // leaf.window_ms, window.times[-1] // leaf.window_ms
        if bucket < current:
            return None  # late for a window that has closed
        if bucket > current:
            window.clear()
    at = bisect.bisect_right(window.times, event.time)
    window.times.insert(at, event.time)
    window.refs.insert(at, (event.source, event.id))
    if leaf.aggregate is not None:
        window.values.insert(at, value)
    if leaf.window_ms and not leaf.tumbling:
        cut = bisect.bisect_left(window.times, window.times[-1] - leaf.window_ms + 1)
        if cut:
            del window.times[:cut], window.refs[:cut], window.values[:cut]
    if leaf.aggregate is not None:
        if not leaf.aggregate.satisfied(window.values):
            return None
    elif len(window.times) < leaf.threshold:
        return None
    occurrence = (window.times[-1], list(window.refs))
    window.clear()
    return occurrence


@dataclass(frozen=True, slots=True)
class Output:
    """Something a rule produced: a CloudEvent for ``topic`` with a deterministic ``id``."""

    id: str
    topic: str
    event: dict[str, Any]


def output_id(rule: str, customer: str, refs: Iterable[tuple[str, str]], action_index: int) -> str:
    """Deterministic: the same rule, customer, matched events and action give the same id;
    the parts are JSON-encoded, so no choice of ids can make two different inputs collide."""
    encoded = orjson.dumps([rule, customer, action_index, list(refs)])
    return hashlib.sha256(encoded).hexdigest()[:32]


class PartitionEngine:
    """Rules over the customers of one virtual partition. ``snapshot()`` is the checkpoint."""

    def __init__(self, rules: Iterable[CompiledRule], resume_state: dict[str, Any] | None = None) -> None:
        self._state: dict[str, dict[str, WindowState | GroupState]] = {}
        self._timers: list[tuple[int, str, str]] = []  # (deadline, customer, rule); stale entries are skipped
        self._set_rules(list(rules))
        if resume_state:
            shapes = resume_state.get("shapes", {})
            keep = {n for n, r in self._rules.items() if shapes.get(n) == _wire_shape(r.shape)}
            for customer, per_rule in resume_state.get("customers", {}).items():
                windows = {name: state_from_wire(w) for name, w in per_rule.items() if name in keep}
                if windows:
                    self._state[customer] = windows
                    for name, state in windows.items():
                        if isinstance(state, GroupState):
                            for deadline, _ in state.timers.values():
                                heapq.heappush(self._timers, (deadline, customer, name))

    def _set_rules(self, rules: list[CompiledRule]) -> None:
        self._rules = {r.name: r for r in rules}
        by_type: dict[str, list[CompiledRule]] = defaultdict(list)
        for rule in sorted(rules, key=lambda r: (-r.priority, r.name)):
            for event_type in rule.event_types:
                by_type[event_type].append(rule)
        self._by_type = dict(by_type)
        self._reads_profiles = any(r.reads_profiles for r in rules)

    @property
    def rules(self) -> dict[str, CompiledRule]:
        return dict(self._rules)

    def update_rules(self, rules: Iterable[CompiledRule]) -> None:
        """Hot reload: keep the windows of rules whose shape is unchanged, drop the others.
        (Resuming from a snapshot applies the same test.)"""
        old = self._rules
        self._set_rules(list(rules))
        keep = {name for name, r in self._rules.items() if name in old and old[name].shape == r.shape}
        for customer in list(self._state):
            per_rule = {n: w for n, w in self._state[customer].items() if n in keep}
            if per_rule:
                self._state[customer] = per_rule
            else:
                del self._state[customer]

    @property
    def reads_profiles(self) -> bool:
        """Whether any rule's expression reads ``profile.*`` (enrichment is needed)."""
        return self._reads_profiles

    def on_events(self, events: Iterable[Event], profiles: dict[str, dict[str, Any]] | None = None) -> list[Output]:
        """Evaluate the rules over ``events`` in order. ``profiles`` (customer -> attributes and
        tags from the profile store) are visible to expressions as ``profile``."""
        outputs: list[Output] = []
        by_type = self._by_type
        for event in events:
            rules = by_type.get(event.type)
            if not rules:
                continue
            context = None
            for rule in rules:
                if (rule.valid_from_ms is not None or rule.valid_until_ms is not None) and not rule.valid_at(
                    event.time
                ):
                    continue
                if rule.audience is not None:
                    profile = profiles.get(event.customer, {}) if profiles is not None else {}
                    if not rule.audience(profile):
                        continue
                if rule.group is not None:
                    if context is None:
                        context = event.as_context()
                        if profiles is not None:
                            context["profile"] = profiles.get(event.customer, {})
                    self._on_group_event(rule, event, context, outputs)
                    continue
                if rule.where is not None:
                    if context is None:
                        context = event.as_context()
                        if profiles is not None:
                            context["profile"] = profiles.get(event.customer, {})
                    if not rule.where.predicate(context):
                        continue
                self._on_match(rule, event, outputs)
        return outputs

    def _on_match(self, rule: CompiledRule, event: Event, outputs: list[Output]) -> None:
        per_rule = self._state.setdefault(event.customer, {})
        window = per_rule.get(rule.name)
        if not isinstance(window, WindowState):
            window = per_rule[rule.name] = WindowState()
        if window.cooldown_until is not None:
            if event.time < window.cooldown_until:
                return
            window.cooldown_until = None
        assert rule.leaf is not None  # compile_rule sets it for single-condition rules
        occurrence = _accumulate(window, event, rule.leaf)
        if occurrence is not None:
            outputs += self._fire(rule, event.customer, event.time, occurrence[1])
            if rule.cooldown_ms:
                window.cooldown_until = event.time + rule.cooldown_ms
        if not window.times and window.cooldown_until is None:
            del per_rule[rule.name]
            if not per_rule:
                del self._state[event.customer]

    def _on_group_event(self, rule: CompiledRule, event: Event, context: dict[str, Any], outputs: list[Output]) -> None:
        assert rule.group is not None  # callers route only group rules here
        per_rule = self._state.setdefault(event.customer, {})
        state = per_rule.get(rule.name)
        if not isinstance(state, GroupState):
            state = per_rule[rule.name] = GroupState()
        if state.cooldown_until is not None and event.time < state.cooldown_until:
            if isinstance(rule.group, GeofenceSpec):  # keep knowing where the customer is
                _watch_geofence(rule.group, event, context, state, quiet=True)
            return
        state.cooldown_until = None
        occurrence = self._evaluate(rule.group, event, context, state)
        if occurrence is not None:
            outputs += self._fire(rule, event.customer, event.time, occurrence[1])
            state.windows.clear()
            state.latest.clear()
            state.partials.clear()
            if rule.cooldown_ms:
                state.cooldown_until = event.time + rule.cooldown_ms
        for deadline, _ in state.timers.values():
            heapq.heappush(self._timers, (deadline, event.customer, rule.name))
        if state.empty:
            del per_rule[rule.name]
            if not per_rule:
                del self._state[event.customer]

    def _evaluate(
        self, node: LeafSpec | GroupSpec | SequenceSpec, event: Event, context: dict[str, Any], state: GroupState
    ) -> Occurrence | None:
        """The occurrence ``node`` completes with this event, updating its state."""
        if isinstance(node, SequenceSpec):
            return _advance_sequence(node, event, context, state)
        if isinstance(node, AbsenceSpec):
            _watch_absence(node, event, context, state)
            return None
        if isinstance(node, GeofenceSpec):
            return _watch_geofence(node, event, context, state)
        if isinstance(node, LeafSpec):
            if node.event_type != event.type or (node.where is not None and not node.where.predicate(context)):
                return None
            window = state.windows.setdefault(node.path, WindowState())
            occurrence = _accumulate(window, event, node)
            if not window.times:
                del state.windows[node.path]
            return occurrence
        results = [self._evaluate(child, event, context, state) for child in node.children]
        if node.kind == "any":
            return next((r for r in results if r is not None), None)
        latest = state.latest.setdefault(node.path, {})
        for index, occurrence in enumerate(results):
            if occurrence is not None:
                latest[index] = occurrence
        newest = max(t for t, _ in latest.values()) if latest else 0
        for index in [i for i, (t, _) in latest.items() if node.within_ms and t <= newest - node.within_ms]:
            del latest[index]
        fired = None
        if len(latest) == len(node.children):
            refs = dict.fromkeys(ref for i in range(len(node.children)) for ref in latest[i][1])
            fired = (newest, list(refs))
            latest.clear()
        if not latest:
            del state.latest[node.path]
        return fired

    def _fire(self, rule: CompiledRule, customer: str, time_ms: int, refs: list[tuple[str, str]]) -> list[Output]:
        matched = [{"source": s, "id": i} for s, i in refs]
        when = format_time_ms(time_ms)
        outputs = []
        for index, topic in enumerate(rule.action_topics):
            oid = output_id(rule.name, customer, refs, index)
            data: dict[str, Any] = {
                "rule": rule.name,
                "rule_version": rule.version,
                "count": len(refs),
                "events": matched,
            }
            details = rule.action_details[index]
            if details is not None:
                key, body = details
                data[key] = body
                if key == "task":
                    data[key] = {**body, "due": format_time_ms(time_ms + rule.actions[index].task.sla)}  # type: ignore[union-attr]
            cloudevent = {
                "specversion": "1.0",
                "id": oid,
                "source": f"esp/rule/{rule.name}",
                "type": topic,
                "time": when,
                "subject": customer,
                "data": data,
            }
            outputs.append(Output(oid, topic, cloudevent))
        return outputs

    def explain(self, customer: str, rule: str | None = None) -> list[dict[str, Any]]:
        """The state of ``customer`` for each rule (or one), for ``esp why``."""
        names = [rule] if rule is not None else sorted(self._rules)
        per_rule = self._state.get(customer, {})
        return [explain_rule(self._rules[n], per_rule.get(n)) for n in names if n in self._rules]

    def next_timer_at(self) -> int | None:
        """The earliest pending absence deadline (event time), if any."""
        while self._timers and not self._timer_live(*self._timers[0]):
            heapq.heappop(self._timers)
        return self._timers[0][0] if self._timers else None

    def _timer_live(self, deadline: int, customer: str, name: str) -> bool:
        state = self._state.get(customer, {}).get(name)
        return isinstance(state, GroupState) and any(t == deadline for t, _ in state.timers.values())

    def on_timer(self, now_ms: int) -> list[Output]:
        """Fire the absence rules whose deadline is at or before ``now_ms``: their 'after' event
        was not followed by the 'missing' one in time."""
        outputs: list[Output] = []
        while self._timers and self._timers[0][0] <= now_ms:
            deadline, customer, name = heapq.heappop(self._timers)
            if not self._timer_live(deadline, customer, name):
                continue
            rule, state = self._rules[name], self._state[customer][name]
            assert isinstance(state, GroupState)
            for path, (due, refs) in list(state.timers.items()):
                if due == deadline:
                    del state.timers[path]
                    outputs += self._fire(rule, customer, deadline, refs)
                    if rule.cooldown_ms:
                        state.cooldown_until = deadline + rule.cooldown_ms
            if state.empty:
                del self._state[customer][name]
                if not self._state[customer]:
                    del self._state[customer]
        return outputs

    def expire(self, watermark_ms: int) -> None:
        """Forget windows, occurrences and cooldowns that ended before ``watermark_ms``."""
        for customer in list(self._state):
            per_rule = self._state[customer]
            for name in list(per_rule):
                rule, state = self._rules[name], per_rule[name]
                if isinstance(state, GroupState):
                    _expire_group(rule, state, watermark_ms)
                    if state.empty:
                        del per_rule[name]
                    continue
                if rule.window_ms and state.times and state.times[-1] <= watermark_ms - rule.window_ms:
                    state.clear()
                if state.cooldown_until is not None and state.cooldown_until <= watermark_ms:
                    state.cooldown_until = None
                if not state.times and state.cooldown_until is None:
                    del per_rule[name]
            if not per_rule:
                del self._state[customer]

    @property
    def customers(self) -> int:
        return len(self._state)

    def snapshot(self) -> dict[str, Any]:
        return {
            "customers": {c: {n: w.to_wire() for n, w in per_rule.items()} for c, per_rule in self._state.items()},
            "rules": {n: r.version for n, r in self._rules.items()},
            "shapes": {n: _wire_shape(r.shape) for n, r in self._rules.items()},
        }


def _watch_geofence(
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
        entered: Occurrence = (event.time, [(event.source, event.id)])
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


def _watch_absence(node: AbsenceSpec, event: Event, context: dict[str, Any], state: GroupState) -> None:
    """A 'missing' event at or after the 'after' event, before the deadline, cancels the wait;
    an 'after' event starts one when none is pending."""
    pending = state.timers.get(node.path)
    if pending is not None and _matches(node.missing, event, context):
        deadline = pending[0]
        if deadline - node.within_ms <= event.time < deadline:
            del state.timers[node.path]
            pending = None
    if pending is None and _matches(node.after, event, context):
        state.timers[node.path] = (event.time + node.within_ms, [(event.source, event.id)])


def _matches(leaf: LeafSpec | None, event: Event, context: dict[str, Any]) -> bool:
    return leaf is not None and leaf.event_type == event.type and (leaf.where is None or leaf.where.predicate(context))


def _advance_sequence(
    node: SequenceSpec, event: Event, context: dict[str, Any], state: GroupState
) -> Occurrence | None:
    """Keep, per number of steps done, the latest-started partial match (a later start is never
    worse: it leaves more of ``within`` and fewer events in between). The match completing the
    last step is the occurrence; the sequence then restarts."""
    old = state.partials.get(node.path, {})
    old = {k: m for k, m in old.items() if m[0] > event.time - node.within_ms}
    ref = (event.source, event.id)
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


def _expire_group(rule: CompiledRule, state: GroupState, watermark_ms: int) -> None:
    assert rule.group is not None
    windows = {leaf.path: leaf.window_ms for leaf in rule.group.leaves()}
    for path in list(state.windows):
        window, span = state.windows[path], windows.get(path, 0)
        if span and window.times and window.times[-1] <= watermark_ms - span:
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


def _wire_shape(shape: tuple[Any, ...]) -> list[Any]:
    """A rule's shape as it reads back from a checkpoint (nested lists)."""
    return orjson.loads(orjson.dumps(shape))


def _refs(refs: list[tuple[str, str]]) -> list[dict[str, str]]:
    return [{"source": s, "id": i} for s, i in refs]


def explain_rule(rule: CompiledRule, state: WindowState | GroupState | None) -> dict[str, Any]:
    """What a customer's state for ``rule`` says: what holds, by which events, what is missing,
    and when it runs out (times are event times, ms)."""
    out: dict[str, Any] = {"rule": rule.name, "version": rule.version, "state": state is not None}
    if state is None:
        out["missing"] = "nothing has matched yet"
        return out
    out["cooldown_until"] = format_time_ms(state.cooldown_until) if state.cooldown_until is not None else None
    if isinstance(state, WindowState):
        leaf = rule.leaf
        out["window"] = _explain_window(leaf, state) if leaf else {}
        return out
    out["conditions"] = {
        path: _explain_window(leaf, state.windows[path])
        for leaf in rule.group.leaves()  # type: ignore[union-attr]
        if (path := leaf.path) in state.windows
    }
    out["satisfied"] = {
        path: {str(i): {"at": format_time_ms(t), "events": _refs(refs)} for i, (t, refs) in occ.items()}
        for path, occ in state.latest.items()
    }
    out["sequence_progress"] = {
        path: {f"{k} steps": {"since": format_time_ms(t), "events": _refs(refs)} for k, (t, refs) in m.items()}
        for path, m in state.partials.items()
    }
    out["timers"] = {
        path: {"due": format_time_ms(t), "events": _refs(refs)} for path, (t, refs) in state.timers.items()
    }
    out["inside_zone_since"] = {path: format_time_ms(t) for path, (t, _) in state.inside.items()}
    return out


def _explain_window(leaf: LeafSpec, window: WindowState) -> dict[str, Any]:
    info: dict[str, Any] = {"events": _refs(window.refs), "count": len(window.times)}
    if leaf.aggregate is not None:
        info["aggregate"] = {"fn": leaf.aggregate.fn, "of": ".".join(leaf.aggregate.path), "values": window.values}
        info["needs"] = f"{leaf.aggregate.fn} {leaf.aggregate.op} {leaf.aggregate.bound:g}"
    else:
        info["needs"] = f"{leaf.threshold} events"
    if leaf.window_ms and window.times:
        info["oldest_expires_at"] = format_time_ms(window.times[0] + leaf.window_ms)
    return info
