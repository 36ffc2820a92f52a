"""Per-partition rule evaluation: (rules, state) + events -> (outputs, state).

``PartitionEngine`` routes each event to the rules that read its type, keeps every customer's
state per rule (``state.py``), advances it with the operators (``operators.py``: count and
aggregate windows, all/any groups, sequences, absences, geofences), fires actions with
deterministic output ids, runs timers (``on_timer``), and snapshots everything for checkpoints.
Semantics of each operator are in the README and in the docstrings of their oracle tests.
Customers with no live state hold nothing.

The same engine runs inside partition actors, in tests, in backtests and in the benchmark; it
never reads the clock and never touches Redis or Ray.
"""

from __future__ import annotations

import hashlib
import heapq
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from runtime.envelope import Event, format_time_ms
from runtime.rules.compiled import (
    AbsenceSpec,
    CompiledRule,
    DurationSpec,
    GeofenceSpec,
    LeafSpec,
    SequenceSpec,
)
from runtime.rules.explain import explain_rule
from runtime.rules.operators import (
    accumulate,
    advance_sequence,
    expire_group,
    watch_absence,
    watch_duration,
    watch_geofence,
)
from runtime.rules.state import GroupState, Occurrence, WindowState, state_from_wire

__all__ = ["GroupState", "Output", "PartitionEngine", "WindowState", "output_id", "state_from_wire"]


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
        """Evaluate the rules over ``events`` in order; timers due at or before an event's time
        fire before it, so how events are batched never changes the outputs. ``profiles``
        (customer -> attributes and tags from the profile store) are visible to expressions as
        ``profile``."""
        outputs: list[Output] = []
        by_type, timers = self._by_type, self._timers
        for event in events:
            if timers and timers[0][0] <= event.time:  # a wait that ended before this event fires first
                outputs += self.on_timer(event.time)
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
        occurrence = accumulate(window, event, rule.leaf)
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
                watch_geofence(rule.group, event, context, state, quiet=True)
            elif isinstance(rule.group, DurationSpec):  # and whether the state is open
                watch_duration(rule.group, event, context, state, quiet=True)
            return
        state.cooldown_until = None
        occurrence = self._evaluate(rule.group, event, context, state)
        if occurrence is not None:
            outputs += self._fire(rule, event.customer, event.time, occurrence[1])
            if not isinstance(rule.group, LeafSpec):  # grouped counts: the other values' windows go on
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

    def _evaluate(self, node: Any, event: Event, context: dict[str, Any], state: GroupState) -> Occurrence | None:
        """The occurrence ``node`` completes with this event, updating its state."""
        if isinstance(node, SequenceSpec):
            return advance_sequence(node, event, context, state)
        if isinstance(node, AbsenceSpec):
            watch_absence(node, event, context, state)
            return None
        if isinstance(node, GeofenceSpec):
            return watch_geofence(node, event, context, state)
        if isinstance(node, DurationSpec):
            return watch_duration(node, event, context, state)
        if isinstance(node, LeafSpec):
            if node.event_type != event.type or (node.where is not None and not node.where.predicate(context)):
                return None
            key = node.window_key(event.data)
            if key is None:
                return None
            window = state.windows.setdefault(key, WindowState())
            occurrence = accumulate(window, event, node)
            if not window.times:
                del state.windows[key]
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
                    expire_group(rule, state, watermark_ms)
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


def _wire_shape(shape: tuple[Any, ...]) -> list[Any]:
    """A rule's shape as it reads back from a checkpoint (nested lists)."""
    return orjson.loads(orjson.dumps(shape))
