"""Per-partition rule evaluation: (rules, state) + events -> (outputs, state).

``PartitionEngine`` routes each event to the rules that read its type (a rule that needs no
gate and no context runs as a kernel instead: one loop over the whole batch), keeps every
customer's state per rule (``state.py``), advances it with the operators (``operators.py``:
count and aggregate windows, all/any groups, sequences, absences, geofences), fires actions
with deterministic output ids, runs timers (``on_timer``), and snapshots everything for
checkpoints.
Semantics of each operator are in the README and in the docstrings of their oracle tests.
Customers with no live state hold nothing.

The same engine runs inside partition actors, in tests, in backtests and in the benchmark; it
never reads the clock and never touches Redis or Ray.
"""

from __future__ import annotations

import heapq
import sys
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from hashlib import sha256
from operator import itemgetter
from typing import Any, NamedTuple

import orjson

from runtime.events.columns import EventColumns
from runtime.events.envelope import Event, format_time_ms
from runtime.expr.paths import MISSING
from runtime.rules.compiled import (
    AbsenceSpec,
    CompiledRule,
    DurationSpec,
    GeofenceSpec,
    LeafSpec,
    PlainSequence,
    SequenceSpec,
    plain_steps,
)
from runtime.rules.explain import explain_rule
from runtime.rules.operators import (
    accumulate,
    advance_sequence,
    expire_group,
    nodes_of,
    timer_fired,
    watch_absence,
    watch_duration,
    watch_geofence,
)
from runtime.rules.pair_scan import scan
from runtime.rules.state import (
    SEP,
    GroupState,
    Occurrence,
    Partial,
    Window,
    exact_copy,
    new_window,
    ref_of,
    window_from_wire,
    window_to_wire,
)

__all__ = ["GroupState", "Output", "PartitionEngine", "Retraction", "output_id"]


class Output(NamedTuple):
    """Something a rule produced: a CloudEvent for ``topic`` with a deterministic ``id``. (A
    named tuple: a frozen dataclass costs 1 µs per output to build.)"""

    id: str
    topic: str
    event: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Retraction:
    """A late event showing that an output ``rule`` already published for ``customer`` no longer
    holds. ESP does not un-send it; the runner counts it and records it in the event's trace."""

    rule: str
    customer: str
    source: str
    event_id: str


Handler = Callable[[Event, list["Output"]], None]  # one rule's step for one event
RulesOfType = list[tuple[CompiledRule, Handler | None, bool]]  # (rule, its handler or None, whether it is gated)
# one rule over a whole batch's columns: appends (index of the event, its outputs) for each event that fired
Kernel = Callable[[EventColumns, list[tuple[int, list["Output"]]]], None]
# Kernels scan the whole batch each: beyond this many, one pass dispatching each event is cheaper.
KERNELS_MAX = 3


def output_id(rule: str, customer: str, refs: Sequence[Sequence[str]], action_index: int) -> str:
    """Deterministic: the same rule, customer, matched events and action give the same id;
    the parts are JSON-encoded (a ref is [source, id]), so no choice of ids can make two
    different inputs collide."""
    return sha256(orjson.dumps([rule, customer, action_index, refs])).hexdigest()[:32]


class PartitionEngine:
    """Rules over the customers of one virtual partition. ``snapshot()`` is the checkpoint."""

    def __init__(
        self,
        rules: Iterable[CompiledRule],
        resume_state: dict[str, Any] | None = None,
        *,
        lateness_ms: int = 3_600_000,
    ) -> None:
        # rule -> customer -> state: a window (flat list) for a plain event condition, else a
        # GroupState; one dict per rule rather than one per customer keeps a customer cheap
        self._state: dict[str, dict[str, Window | GroupState]] = {}
        self._cooldowns: dict[str, dict[str, int]] = {}  # plain-condition rule -> customer -> silent until
        # (due, customer, rule): due is a timer's deadline plus the customer's offset; stale entries are skipped
        self._timers: list[tuple[int, str, str]] = []
        self.lateness_ms = lateness_ms
        # per customer: the newest event time evaluated (an event is late only against its own
        # customer's), and for a customer far behind the partition (a backfill) how far behind:
        # its timers and expiry run on the partition's time minus that offset
        self._clock: dict[str, int] = {}
        self._offset: dict[str, int] = {}
        self.retractions: list[Retraction] = []  # since the runner last took them
        self._profiles: dict[str, dict[str, Any]] | None = None  # on_events's, for the rules that read them
        if resume_state:  # before the rules: their handlers hold these dicts
            self._clock = {sys.intern(c): int(t) for c, t in resume_state.get("clocks", {}).items()}
            self._offset = {sys.intern(c): int(o) for c, o in resume_state.get("offsets", {}).items()}
        self._set_rules(list(rules))
        if resume_state:
            shapes = resume_state.get("shapes", {})
            keep = {n for n, r in self._rules.items() if shapes.get(n) == _wire_shape(r.shape)}
            for customer, per_rule in resume_state.get("customers", {}).items():
                customer = sys.intern(customer)
                for name, wire in per_rule.items():
                    if name in keep:
                        self._restore(customer, self._rules[name], wire)

    def _restore(self, customer: str, rule: CompiledRule, wire: Any) -> None:
        if rule.group is not None:
            state = self._recast(rule, GroupState.from_wire(wire))
            if state:
                self._state[rule.name][customer] = state
            if isinstance(state, GroupState):
                self._push_timers(customer, rule.name, state)
            return
        times, refs, cooldown_until, *values = wire
        if times:
            self._state[rule.name][customer] = window_from_wire(times, refs, *values)  # state: rebuilt when next needed
        if cooldown_until is not None:
            self._cooldowns[rule.name][customer] = cooldown_until

    def _set_rules(self, rules: list[CompiledRule]) -> None:
        self._rules = {r.name: r for r in rules}
        self._state = {r.name: self._state.get(r.name, {}) for r in rules}
        self._cooldowns = {r.name: self._cooldowns.get(r.name, {}) for r in rules if r.group is None}
        self._plain = {r.name: plain_steps(r) for r in rules}  # see _plain_sequence
        for rule in rules:  # a kept rule that became plain, or stopped being plain (its cooldown changed)
            if rule.group is not None:
                self._state[rule.name] = {
                    c: s for c, s in ((c, self._recast(rule, s)) for c, s in self._state[rule.name].items()) if s
                }
        # event type -> (rule, its handler or None, whether validity or audience gate it), by priority
        by_type: dict[str, RulesOfType] = defaultdict(list)
        kernels: dict[str, Kernel] = {}  # by priority, for the rules that may run as one
        for rule in sorted(rules, key=lambda r: (-r.priority, r.name)):
            gated = rule.valid_from_ms is not None or rule.valid_until_ms is not None or rule.audience is not None
            kernel = self._pair(rule) if _is_pair(self._plain[rule.name]) else None
            handler = _one_at_a_time(kernel) if kernel is not None else self._handler(rule)
            if handler is not None and not gated:
                kernels[rule.name] = kernel or self._count(rule) or self._kernel(rule, handler)
            for event_type in rule.event_types:
                by_type[event_type].append((rule, handler, gated))
        self._needs_context = {r.name for r in rules if r.expressions}  # others never read the event as a dict
        # A rule runs as a kernel over the whole batch when its events need no gate, no context
        # and no rule that is not a kernel (outputs then keep the order of the events that fired
        # them); a rule that stops being one may leave another sharing a type with it.
        mixed = True
        while mixed:
            mixed = False
            for found in by_type.values():
                if any(r.name in kernels for r, _, _ in found) and any(r.name not in kernels for r, _, _ in found):
                    mixed = True
                    for rule, _, _ in found:
                        kernels.pop(rule.name, None)
        if len(kernels) > KERNELS_MAX:
            kernels.clear()
        self._kernels = list(kernels.values())
        # event type -> what one event of it does: the handler of its only rule when that rule
        # needs neither a gate nor a context (the hot path), else a walk over its rules; all of
        # them (a batch in which a backfill may start), or the rules that are no kernel
        self._dispatch = self._dispatch_table(by_type)
        self._rest = self._dispatch_table({t: f for t, f in by_type.items() if f[0][0].name not in kernels})
        self._reads_profiles = any(r.reads_profiles for r in rules)
        self._group_rules = [r.name for r in rules if r.group is not None]

    def _dispatch_table(self, by_type: dict[str, RulesOfType]) -> dict[str, Handler]:
        return {
            t: found[0][1] if len(found) == 1 and found[0][1] is not None and not found[0][2] else self._walk(found)
            for t, found in by_type.items()
        }

    def _recast(self, rule: CompiledRule, state: Any) -> Any:
        """A group rule's state in the form its rule keeps now: a plain pair its partial match
        alone (``(time, source, id)``), another plain sequence its partial matches
        (``dict[int, Partial]``), any other group rule a GroupState."""
        plain = self._plain[rule.name]
        state = self._group_state(rule, state)
        if plain is None:
            return state
        partials = state.partials.get(plain[1])
        if partials and _is_pair(plain):
            first = partials.get(1)  # a pair's only partial: its first event's
            return (first[0], *first[1][0].split(SEP, 1)) if first else None
        return partials

    @staticmethod
    def _group_state(rule: CompiledRule, state: Any) -> Any:
        """A customer's state in the form checkpoints and ``esp why`` read: a plain sequence's
        partial matches (a pair's tuple, another's dict) as the GroupState they stand for, any
        other state as it is."""
        if isinstance(state, tuple):
            state = {1: (state[0], [f"{state[1]}{SEP}{state[2]}"], state[0])}
        if isinstance(state, dict):
            return GroupState(partials={rule.group.path: state})  # type: ignore[union-attr]
        return state

    @property
    def rules(self) -> dict[str, CompiledRule]:
        return dict(self._rules)

    def update_rules(self, rules: Iterable[CompiledRule]) -> None:
        """Hot reload: keep the windows of rules whose shape is unchanged, drop the others.
        (Resuming from a snapshot applies the same test.)"""
        old, rules = self._rules, list(rules)
        changed = {r.name for r in rules if r.name not in old or old[r.name].shape != r.shape}
        for name in changed:
            self._state.pop(name, None)
            self._cooldowns.pop(name, None)
        self._set_rules(rules)

    @property
    def reads_profiles(self) -> bool:
        """Whether any rule's expression reads ``profile.*`` (enrichment is needed)."""
        return self._reads_profiles

    def on_events(
        self,
        events: Sequence[Event],
        profiles: dict[str, dict[str, Any]] | None = None,
        *,
        watermark: int | None = None,
    ) -> list[Output]:
        """Evaluate the rules over ``events`` in order; timers due at or before an event's time
        fire before it, so how events are batched never changes the outputs. ``profiles``
        (customer -> attributes and tags from the profile store) are visible to expressions as
        ``profile``. ``watermark`` (the partition's, before these events' log entry arrived)
        tells which customers' events arrive far behind the others' (a backfill): their timers
        and expiry then follow their own time."""
        # an event older than this may start a backfill; no bound when there is no watermark
        backfill_from = -sys.maxsize if watermark is None else watermark - self.lateness_ms
        self._profiles = profiles  # the batch's, for the rules that read them (see _walk)
        columns = EventColumns.of(events)
        if (
            not self._kernels
            or self._offset
            or (watermark is not None and min(columns.times, default=0) < backfill_from)
        ):
            return self._each(columns.rows, self._dispatch, backfill_from, watermark)
        # Kernel rules run over the whole batch's columns first (no backfill is or may be under
        # way: it moves customers' clocks event by event); the others then go event by event,
        # their outputs and the kernels' in the order of the events that fired them.
        fired: list[tuple[int, list[Output]]] = []
        for kernel in self._kernels:
            kernel(columns, fired)
        if len(self._kernels) > 1:
            fired.sort(key=itemgetter(0))  # stable: the rules of one event stay in priority order
        if not self._rest and not self._timers:
            return [o for _, out in fired for o in out]
        rows, times = columns.rows, columns.times
        outputs: list[Output] = []
        start = 0
        for index, out in fired:
            if index > start:
                outputs += self._each(rows[start:index], self._rest, backfill_from, watermark)
                start = index
            outputs += self.on_timer(times[index])  # the timers due before the event, as in _each
            outputs += out
        outputs += self._each(rows[start:], self._rest, backfill_from, watermark)
        return outputs

    def _each(
        self, events: Sequence[Event], table: dict[str, Handler], backfill_from: int, watermark: int | None
    ) -> list[Output]:
        """``events`` one by one through the rules of ``table`` (the dispatch table of
        ``on_events``), the timers due before each first."""
        outputs: list[Output] = []
        dispatch, timers, offsets = table.get, self._timers, self._offset
        due = self._earliest_timer()  # a wait that ends before an event fires first
        for event in events:
            time_ms = event.time
            if offsets or time_ms < backfill_from:  # a backfill is (or may be) under way
                customer = event.customer
                if watermark is not None and (time_ms < backfill_from or customer in offsets):
                    self._track_offset(customer, time_ms, watermark)  # may move the customer's timers
                    due = self._earliest_timer()
                if customer in offsets:  # its own waits that ended before it fire first
                    outputs += self._customer_timers(customer, time_ms)
                elif time_ms >= due:
                    outputs += self.on_timer(time_ms)
                due = self._earliest_timer()
            elif time_ms >= due:
                outputs += self.on_timer(time_ms)
                due = self._earliest_timer()
            handler = dispatch(event.type)
            if handler is not None:
                handler(event, outputs)
                if timers and timers[0][0] < due:  # the event started a wait
                    due = timers[0][0]
        return outputs

    def _earliest_timer(self) -> int:
        """The heap's first deadline (it may be a stale entry), or no deadline at all."""
        return self._timers[0][0] if self._timers else sys.maxsize

    def _walk(self, rules: RulesOfType) -> Handler:
        """One event through several rules of its type, or a gated one, or one that reads the
        event as a dict (built once, shared by them)."""
        needs_context = self._needs_context

        def on_event(event: Event, outputs: list[Output]) -> None:
            customer, time_ms, profiles = event.customer, event.time, self._profiles
            context = None
            for rule, handler, gated in rules:
                if gated and not self._admits(rule, customer, time_ms, profiles):
                    continue
                if handler is not None:
                    handler(event, outputs)
                    continue
                if context is None and rule.name in needs_context:
                    context = event.as_context()
                    if profiles is not None:
                        context["profile"] = profiles.get(customer, {})
                if rule.group is not None:
                    self._on_group_event(rule, event, context, outputs)
                elif rule.where.predicate(context):  # type: ignore[union-attr]  # one that reads more than data
                    self._on_match(rule, customer, time_ms, ref_of(event), event.data, outputs)

        return on_event

    @staticmethod
    def _admits(rule: CompiledRule, customer: str, time_ms: int, profiles: dict[str, dict[str, Any]] | None) -> bool:
        """Whether the rule is valid at the event's time and the customer is in its audience."""
        if not rule.valid_at(time_ms):
            return False
        return rule.audience is None or rule.audience(profiles.get(customer, {}) if profiles is not None else {})

    def _advance_clock(self, customer: str, time_ms: int) -> None:
        """The customer's newest event that reached a rule's state (what lateness is measured from)."""
        newest = self._clock.get(customer)
        if newest is None:
            self._clock[sys.intern(customer)] = time_ms
        elif time_ms > newest:
            self._clock[customer] = time_ms

    def _track_offset(self, customer: str, time_ms: int, watermark: int) -> None:
        """A customer whose events arrive more than the allowed lateness behind the partition's
        watermark is backfilling: its time is the partition's minus this offset. It catches up
        when an event of its comes within the lateness; a late event of a live customer (one
        older than the customer's own newest) does not make it a backfill."""
        behind = watermark - time_ms
        if behind <= self.lateness_ms:
            if self._offset.pop(customer, None) is not None:
                self._repush_timers(customer)
            return
        newest = self._clock.get(customer)
        if customer in self._offset or newest is None or newest < watermark - self.lateness_ms:
            if self._offset.get(customer) != behind:
                self._offset[sys.intern(customer)] = behind
                self._repush_timers(customer)

    def _repush_timers(self, customer: str) -> None:
        """The customer's offset changed: its timers are due at new times."""
        for name in self._group_rules:
            state = self._state[name].get(customer)
            if isinstance(state, GroupState):
                self._push_timers(customer, name, state)

    def late(self, events: Sequence[Event], newest: int | None = None) -> list[tuple[Event, int]]:
        """The events older than their own customer's newest evaluated event by more than the
        allowed lateness (other customers' events never make an event late), each with how far
        behind its customer it is (ms). ``newest``: a time no customer's newest evaluated event
        is after (the partition's newest event time); when every event is within the lateness of
        it, none is late and no customer is looked up."""
        clocks, lateness = self._clock, self.lateness_ms
        if not clocks or not events:
            return []
        if newest and min(EventColumns.of(events).times) >= newest - lateness:
            return []
        return [
            (e, clocks[e.customer] - e.time)
            for e in events
            if e.customer in clocks and e.time < clocks[e.customer] - lateness
        ]

    def take_retractions(self) -> list[Retraction]:
        taken, self.retractions = self.retractions, []
        return taken

    def _on_match(
        self, rule: CompiledRule, customer: str, time_ms: int, ref: str, data: Any, outputs: list[Output]
    ) -> None:
        """A single event condition's step for an event of its that passed its ``where`` (the
        event as its parts: ``data`` is read only by an aggregate)."""
        self._advance_clock(customer, time_ms)
        if rule.cooldown_ms:
            cooldowns = self._cooldowns[rule.name]
            until = cooldowns.get(customer)
            if until is not None:
                if time_ms < until:
                    return
                del cooldowns[customer]
        windows = self._state[rule.name]
        window = windows.get(customer)
        fresh = window is None
        assert rule.leaf is not None  # compile_rule sets it for single-condition rules
        if fresh:
            window = [] if rule.leaf.aggregate is None else new_window(rule.leaf)  # counts: the hot path
        occurrence = accumulate(window, time_ms, ref, data, rule.leaf)  # type: ignore[arg-type]
        if occurrence is not None:  # at its newest event's time (a late event may complete it)
            outputs += self._fire(rule, customer, occurrence[0], occurrence[1])
            if rule.cooldown_ms:
                self._cooldowns[rule.name][sys.intern(customer)] = occurrence[0] + rule.cooldown_ms
        if not window:
            if not fresh:
                del windows[customer]
        elif fresh:
            # sized exactly: most windows hold one event
            windows[sys.intern(customer)] = window.copy() if window.__class__ is list else exact_copy(window)

    def _on_group_event(
        self, rule: CompiledRule, event: Event, context: dict[str, Any] | None, outputs: list[Output]
    ) -> None:
        assert rule.group is not None  # callers route only group rules here
        self._advance_clock(event.customer, event.time)
        states = self._state[rule.name]
        state = states.get(event.customer)
        if state is None:
            state = states[sys.intern(event.customer)] = GroupState()
        assert isinstance(state, GroupState)
        retracted: list[str] = []
        if state.cooldown_until is not None and event.time < state.cooldown_until:
            if isinstance(rule.group, GeofenceSpec):  # keep knowing where the customer is
                watch_geofence(rule.group, event, context, state, retracted, quiet=True)
            elif isinstance(rule.group, DurationSpec):  # and whether the state is open
                watch_duration(rule.group, event, context, state, retracted, quiet=True)
        else:
            state.cooldown_until = None
            occurrence = self._evaluate(rule.group, event, context, state, retracted)
            if occurrence is not None:
                self._fired_group(rule, event.customer, state, occurrence, outputs)
        if retracted:
            self.retractions.append(Retraction(rule.name, event.customer, event.source, event.id))
        self._push_timers(event.customer, rule.name, state)
        if state.empty:
            del self._state[rule.name][event.customer]

    def _handler(self, rule: CompiledRule) -> Handler | None:
        """A closure taking one event of ``rule``'s types, for the rules that never read the event
        as a dict: plain sequences, and single event conditions whose ``where`` reads ``data``
        alone. None for the others (``on_events`` shares one context among them)."""
        plain = self._plain[rule.name]
        if plain is not None:
            return self._plain_sequence(rule, plain)
        if rule.group is not None:
            return None
        match = self._on_match
        test = rule.where.data_predicate if rule.where is not None else None
        if rule.where is not None and test is None:
            return None

        def on_event(event: Event, outputs: list[Output]) -> None:
            if test is None or test(event.data):
                match(rule, event.customer, event.time, ref_of(event), event.data, outputs)

        return on_event

    def _kernel(self, rule: CompiledRule, handler: Handler) -> Kernel:
        """A rule's handler as a kernel: one loop over the batch's events of the rule's types
        calling it. A single event condition's ``where`` (on ``data`` alone) is tested over the
        ``data`` column, and its step reads the columns: no ``Event`` is built."""
        types = dict.fromkeys(rule.event_types, True)
        if rule.group is not None:

            def each(events: EventColumns, fired: list[tuple[int, list[Output]]]) -> None:
                for index in events.positions(types):
                    outputs: list[Output] = []
                    handler(events.event(index), outputs)
                    if outputs:
                        fired.append((index, outputs))

            return each
        where = _batch_where(rule)
        reads_data = rule.leaf.aggregate is not None  # type: ignore[union-attr]
        match = partial(self._on_match, rule)

        def kernel(events: EventColumns, fired: list[tuple[int, list[Output]]]) -> None:
            indices: Iterable[int] = events.positions(types)
            if where is not None:
                indices = where(events, indices)
            data: list[Any] = events.data if reads_data else [None] * len(events)
            customers, times, ids = events.customers, events.times, events.ids
            sources, source_of = events.coded_sources.names, events.coded_sources.codes
            outputs: list[Output] = []
            for i in indices:
                match(customers[i], times[i], f"{sources[source_of[i]]}{SEP}{ids[i]}", data[i], outputs)
                if outputs:
                    fired.append((i, outputs))
                    outputs = []

        return kernel

    def _plain_sequence(self, rule: CompiledRule, plain: PlainSequence) -> Handler:
        """``_on_group_event`` for a sequence of plain steps (see ``plain_steps``), as a closure
        over what it reads: the same matches and outputs as ``advance_sequence`` gives them,
        without the tree walk and the occurrence dicts. A customer's state is its partial
        matches alone, ``{steps done: match}`` (``_group_state`` gives the GroupState it stands
        for)."""
        steps, _, within, last = plain
        states: dict[str, dict[int, Partial]] = self._state[rule.name]  # type: ignore[assignment]
        advance, fire, intern = self._advance_clock, self._fire, sys.intern

        def on_event(event: Event, outputs: list[Output]) -> None:
            customer, t = event.customer, event.time
            advance(customer, t)
            old = states.get(customer)
            if old is None:  # most events: a first step starts the customer's only match, others do nothing
                if steps[event.type][0]:
                    return
                refs = [f"{event.source}{SEP}{event.id}"]
                if last == 0:
                    outputs += fire(rule, customer, t, refs)
                else:
                    states[intern(customer)] = {1: (t, refs, t)}
                return
            ref = f"{event.source}{SEP}{event.id}"
            advanced: dict[int, Partial] = {}
            for k in steps[event.type]:
                if k == 0:
                    match: Partial = (t, [ref], t)
                else:
                    partial = old.get(k)
                    if partial is None or not (partial[2] <= t and t - partial[0] < within):
                        continue
                    match = (partial[0], [*partial[1], ref], t)
                if k == last:
                    del states[customer]
                    outputs += fire(rule, customer, t, match[1])
                    return
                advanced[k + 1] = match
            kept = {k: m for k, m in old.items() if t - m[0] < within}
            for k, match in advanced.items():
                if k not in kept or kept[k][0] <= match[0]:
                    kept[k] = match
            if kept:
                states[customer] = kept
            else:
                del states[customer]

        return on_event

    def _pair(self, rule: CompiledRule) -> Kernel:
        """The kernel of the most common sequence of all, "an event of one type, then one of
        another" (``_plain_sequence`` gives the same outputs one event at a time). A customer's
        only partial match comes from its newest first event (the one a later second event
        completes), kept as ``(time, source, id)``: about 64 bytes of its own against 450 for the
        general form (``_group_state`` gives that); the ref string is made only when the match
        fires, and the output takes the refs as pairs. One loop over the batch, compiled
        (``pair_scan``), the customers' clocks kept in it (``_advance_clock``)."""
        steps, _, within, _ = self._plain[rule.name]  # type: ignore[misc]
        first, second = sorted(steps, key=steps.__getitem__)
        states: dict[str, tuple[int, str, str]] = self._state[rule.name]  # type: ignore[assignment]
        clocks, fire = self._clock, self._fire_refs

        def kernel(events: EventColumns, fired: list[tuple[int, list[Output]]]) -> None:
            types, sources = events.coded_types, events.coded_sources
            roles = bytes(1 if n == first else 2 if n == second else 0 for n in types.names)
            kinds = types.codes
            if type(kinds) is not bytes:  # over 256 types in the batch: each event's role instead
                kinds, roles = bytes(map(roles.__getitem__, kinds)), _ROLES
            customers, times, ids = events.customers, events.times, events.ids
            for index, customer, t, refs in scan(
                roles, kinds, customers, times, sources.names, sources.codes, ids, clocks, states, within
            ):
                fired.append((index, fire(rule, customer, t, refs)))

        return kernel

    def _count(self, rule: CompiledRule) -> Kernel | None:
        """The kernel of the most common event condition, a count of one type's events within a
        sliding window ("3 failed logins within 10 min"): ``_on_match`` and the window's insert
        written out over the columns, the same windows (a flat [time, ref, ...] per customer)
        and outputs. None for the other shapes (aggregates, tumbling windows, groups)."""
        leaf = rule.leaf
        if rule.group is not None or leaf is None or leaf.aggregate is not None or leaf.tumbling or leaf.group_by:
            return None
        if rule.where is not None and rule.where.data_select is None:
            return None
        types, where = dict.fromkeys(rule.event_types, True), _batch_where(rule)
        need, within, cooldown = 2 * leaf.threshold, leaf.window_ms, rule.cooldown_ms
        windows: dict[str, list[Any]] = self._state[rule.name]  # type: ignore[assignment]
        cooldowns, clocks, fire, intern = self._cooldowns[rule.name], self._clock, self._fire, sys.intern

        def kernel(events: EventColumns, fired: list[tuple[int, list[Output]]]) -> None:
            indices: Iterable[int] = events.positions(types)
            if where is not None:
                indices = where(events, indices)
            customers, times, ids = events.customers, events.times, events.ids
            sources, source_of = events.coded_sources.names, events.coded_sources.codes
            for i in indices:
                customer, t = customers[i], times[i]
                newest = clocks.get(customer)
                if newest is None:
                    clocks[intern(customer)] = t
                elif t > newest:
                    clocks[customer] = t
                if cooldown:
                    until = cooldowns.get(customer)
                    if until is not None:
                        if t < until:
                            continue
                        del cooldowns[customer]
                window = windows.get(customer)
                if window is None:
                    window = [t, f"{sources[source_of[i]]}{SEP}{ids[i]}"]
                    if need > 2:
                        windows[intern(customer)] = window
                        continue
                else:  # SlidingWindow.insert
                    at = len(window)
                    while at and window[at - 2] > t:
                        at -= 2
                    window[at:at] = (t, f"{sources[source_of[i]]}{SEP}{ids[i]}")
                    if within:
                        floor, cut, size = window[-2] - within, 0, len(window)
                        while cut < size and window[cut] <= floor:
                            cut += 2
                        if cut:
                            del window[:cut]
                    if len(window) < need:
                        continue
                    del windows[customer]
                fired.append((i, fire(rule, customer, window[-2], window[1::2])))
                if cooldown:
                    cooldowns[intern(customer)] = window[-2] + cooldown

        return kernel

    def _fired_group(
        self,
        rule: CompiledRule,
        customer: str,
        state: GroupState,
        occurrence: Occurrence,
        outputs: list[Output],
    ) -> None:
        """Fire ``rule`` at the occurrence's time and restart its state."""
        time_ms = occurrence[0]
        outputs += self._fire(rule, customer, time_ms, occurrence[1])
        if not isinstance(rule.group, LeafSpec):  # grouped counts: the other values' windows go on
            state.windows.clear()
            state.latest.clear()
            state.partials.clear()
        if rule.cooldown_ms:
            state.cooldown_until = time_ms + rule.cooldown_ms

    def _push_timers(self, customer: str, name: str, state: GroupState) -> None:
        offset = self._offset.get(customer, 0)
        for deadline, _ in state.timers.values():
            heapq.heappush(self._timers, (deadline + offset, customer, name))

    def _evaluate(
        self,
        node: Any,
        event: Event | None,
        context: dict[str, Any] | None,
        state: GroupState,
        retracted: list[str],
        fired: dict[str, Occurrence] | None = None,
    ) -> Occurrence | None:
        """The occurrence ``node`` completes with this event (or, with ``event`` None, with the
        timers in ``fired``: path -> occurrence), updating its state."""
        if isinstance(node, LeafSpec):
            if (
                event is None
                or node.event_type != event.type
                or (node.where is not None and not node.where.predicate(context))
            ):
                return None
            if node.single:  # what a one-event window would give, without one (most sequence steps)
                return (event.time, [ref_of(event)])
            key = node.window_key(event.data)
            if key is None:
                return None
            window = state.windows.get(key)
            if window is None:
                window = state.windows[key] = new_window(node)
            occurrence = accumulate(window, event.time, ref_of(event), event.data, node)
            if not window:
                del state.windows[key]
            return occurrence
        if isinstance(node, (GeofenceSpec, AbsenceSpec, DurationSpec)):
            if event is None:
                return fired.get(node.path) if fired else None
            if isinstance(node, GeofenceSpec):
                return watch_geofence(node, event, context, state, retracted)  # type: ignore[arg-type]
            if isinstance(node, DurationSpec):
                return watch_duration(node, event, context, state, retracted)  # type: ignore[arg-type]
            watch_absence(node, event, context, state, retracted)  # type: ignore[arg-type]
            return None
        if isinstance(node, SequenceSpec):
            occurring: dict[int, Occurrence] = {}
            for k, step in enumerate(node.steps):
                occurrence = self._evaluate(step, event, context, state, retracted, fired)
                if occurrence is not None:
                    occurring[k] = occurrence
            if not occurring and (event is None or not (node.strict or node.guarded)):
                return None  # nothing to advance or to end (run-out partials go at expiry)
            return advance_sequence(node, event, context, state, occurring)
        results = [self._evaluate(child, event, context, state, retracted, fired) for child in node.children]
        if node.kind == "any":
            return next((r for r in results if r is not None), None)
        now = {index: occurrence for index, occurrence in enumerate(results) if occurrence is not None}
        if not now:
            return None
        latest = state.latest.setdefault(node.path, {})
        within = node.within_ms
        fired_now = None
        candidate = {**latest, **now}
        times = [t for t, _ in candidate.values()]
        if len(candidate) == len(node.children) and (not within or max(times) - min(times) < within):
            refs = dict.fromkeys(ref for i in range(len(node.children)) for ref in candidate[i][1])
            fired_now = (max(times), list(refs))
            latest.clear()
        else:
            for index, occurrence in now.items():
                kept = latest.get(index)
                if kept is None or kept[0] <= occurrence[0]:  # a later occurrence is never worse
                    latest[index] = occurrence
        if latest and within:  # what can no longer fall within 'within' of the newest goes
            newest = max(t for t, _ in latest.values())
            for index in [i for i, (t, _) in latest.items() if t <= newest - within]:
                del latest[index]
        if not latest:
            del state.latest[node.path]
        return fired_now

    def _fire(self, rule: CompiledRule, customer: str, time_ms: int, matched_refs: list[str]) -> list[Output]:
        return self._fire_refs(rule, customer, time_ms, [r.split(SEP, 1) for r in matched_refs])

    def _fire_refs(self, rule: CompiledRule, customer: str, time_ms: int, refs: list[Sequence[str]]) -> list[Output]:
        """The outputs of ``rule`` firing, the matched events given as (source, id) pairs (lists
        or tuples: ``output_id`` encodes both as JSON arrays)."""
        matched = [{"source": s, "id": i} for s, i in refs]
        when = format_time_ms(time_ms)
        name, source = rule.name, f"esp/rule/{rule.name}"
        outputs = []
        for index, topic in enumerate(rule.action_topics):
            oid = output_id(name, customer, refs, index)
            data: dict[str, Any] = {"rule": name, "rule_version": rule.version, "count": len(refs), "events": matched}
            details = rule.action_details[index]
            if details is not None:
                key, body = details
                data[key] = body
                if key == "task":
                    data[key] = {**body, "due": format_time_ms(time_ms + rule.actions[index].task.sla)}  # type: ignore[union-attr]
            cloudevent = {
                "specversion": "1.0",
                "id": oid,
                "source": source,
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
        return [
            explain_rule(
                self._rules[n],
                self._group_state(self._rules[n], self._state[n].get(customer)),
                self._cooldowns.get(n, {}).get(customer),
            )
            for n in names
            if n in self._rules
        ]

    def next_timer_at(self) -> int | None:
        """When the earliest pending timer (absence, dwell, duration) is due, in partition time."""
        while self._timers and not self._timer_live(*self._timers[0]):
            heapq.heappop(self._timers)
        return self._timers[0][0] if self._timers else None

    def _timer_live(self, due: int, customer: str, name: str) -> bool:
        state = self._state.get(name, {}).get(customer)
        offset = self._offset.get(customer, 0)
        return isinstance(state, GroupState) and any(t + offset == due for t, _ in state.timers.values())

    def _customer_timers(self, customer: str, time_ms: int) -> list[Output]:
        """Run one backfilling customer's timers due at or before its own ``time_ms`` (the heap
        entries they leave behind are skipped as stale)."""
        outputs: list[Output] = []
        offset = self._offset.get(customer, 0)
        for name in self._group_rules:
            state = self._state[name].get(customer)
            if isinstance(state, GroupState) and any(t <= time_ms for t, _ in state.timers.values()):
                due = {t + offset for t, _ in state.timers.values() if t <= time_ms}
                for key in sorted(due):
                    outputs += self._run_timers(name, customer, state, key)
        return outputs

    def on_timer(self, now_ms: int) -> list[Output]:
        """Run the timers due at or before ``now_ms`` (partition time; a backfilling customer's
        are due its offset later): an absence whose 'missing' event did not come, a dwell, a
        duration still open. A timed condition that is the rule's whole ``when`` fires it; one
        inside a sequence or a group passes its occurrence up."""
        outputs: list[Output] = []
        while self._timers and self._timers[0][0] <= now_ms:
            key, customer, name = heapq.heappop(self._timers)
            state = self._state.get(name, {}).get(customer)
            if isinstance(state, GroupState):
                outputs += self._run_timers(name, customer, state, key)
        return outputs

    def _run_timers(self, name: str, customer: str, state: GroupState, key: int) -> list[Output]:
        """Run the customer's timers of rule ``name`` due at ``key`` (deadline + offset)."""
        outputs: list[Output] = []
        rule, offset = self._rules[name], self._offset.get(customer, 0)
        due = sorted((deadline, path) for path, (deadline, _) in state.timers.items() if deadline + offset == key)
        for deadline, path in due:
            occurrence = state.timers.pop(path)
            timer_fired(nodes_of(rule.group).get(path), state, deadline)
            if state.cooldown_until is not None and deadline < state.cooldown_until:
                continue
            state.cooldown_until = None
            if path == rule.group.path:  # type: ignore[union-attr]
                self._fired_group(rule, customer, state, occurrence, outputs)
                continue
            found = self._evaluate(rule.group, None, None, state, [], {path: occurrence})
            if found is not None:
                self._fired_group(rule, customer, state, found, outputs)
        if state.empty:
            del self._state[name][customer]
        return outputs

    def expire(self, watermark_ms: int) -> None:
        """Forget windows, occurrences, cooldowns and customer clocks that ended before
        ``watermark_ms`` (for a backfilling customer: before its own time)."""
        offsets = self._offset
        for name, states in self._state.items():
            rule, plain = self._rules[name], self._plain[name]
            if plain is not None:
                within = plain[2]
                for customer in list(states):
                    ended, state = watermark_ms - offsets.get(customer, 0) - within, states[customer]
                    if state.__class__ is tuple:  # a pair's partial match
                        if state[0] <= ended:  # type: ignore[index]
                            del states[customer]
                        continue
                    partials = {k: m for k, m in state.items() if m[0] > ended}  # type: ignore[union-attr]
                    if partials:
                        states[customer] = partials
                    else:
                        del states[customer]
                continue
            if rule.group is not None:
                for customer in list(states):
                    state = states[customer]
                    assert isinstance(state, GroupState)
                    expire_group(rule, state, watermark_ms - offsets.get(customer, 0))
                    if state.empty:
                        del states[customer]
                continue
            assert rule.leaf is not None
            stride, ended = rule.leaf.stride, rule.leaf.window.ended
            for customer in [c for c, w in states.items() if ended(w[-stride], watermark_ms - offsets.get(c, 0))]:
                del states[customer]
            cooldowns = self._cooldowns[name]
            for customer in [c for c, until in cooldowns.items() if until <= watermark_ms - offsets.get(c, 0)]:
                del cooldowns[customer]
        for customer in [c for c, t in self._clock.items() if t <= watermark_ms - offsets.get(c, 0)]:
            del self._clock[customer]
            offsets.pop(customer, None)

    @property
    def customers(self) -> int:
        """Customers holding any state."""
        return len(set().union(*self._state.values(), *self._cooldowns.values()))

    def snapshot(self) -> dict[str, Any]:
        customers: dict[str, dict[str, Any]] = defaultdict(dict)
        for name, states in self._state.items():
            rule = self._rules[name]
            if rule.group is not None:
                strides = {leaf.path: leaf.stride for leaf in rule.group.leaves()}
                for customer, state in states.items():
                    customers[customer][name] = self._group_state(rule, state).to_wire(strides)  # type: ignore[union-attr]
                continue
            assert rule.leaf is not None
            stride, cooldowns = rule.leaf.stride, self._cooldowns[name]
            for customer, window in states.items():
                times, refs, *values = window_to_wire(window, stride)  # type: ignore[arg-type]
                customers[customer][name] = [times, refs, cooldowns.get(customer), *values]
            for customer, until in cooldowns.items():
                if customer not in states:
                    customers[customer][name] = [[], [], until]
        return {
            "customers": dict(customers),
            "clocks": self._clock,
            "offsets": self._offset,
            "rules": {n: r.version for n, r in self._rules.items()},
            "shapes": {n: _wire_shape(r.shape) for n, r in self._rules.items()},
        }


_ROLES = bytes(range(3))  # pair_scan's roles when the events' codes are their roles


def _is_pair(plain: PlainSequence | None) -> bool:
    """Whether a plain sequence is two steps of two types (``PartitionEngine._pair``)."""
    return plain is not None and plain[3] == 1 and sorted(plain[0].values()) == [(0,), (1,)]


def _batch_where(rule: CompiledRule) -> Callable[[EventColumns, Iterable[int]], Iterable[int]] | None:
    """A kernel rule's ``where`` (on ``data`` alone) over a batch: which of the events at
    ``indices`` pass. It reads the one field of ``data`` it tests when it tests one (the field
    decoded alone), else the ``data`` column. None without a ``where``."""
    if rule.where is None:
        return None
    if rule.where.data_field_select is not None:
        name, on_field = rule.where.data_field_select
        return lambda events, indices: on_field(events.field(name, MISSING), indices)
    select: Any = rule.where.data_select
    return lambda events, indices: select(events.data, indices)


def _one_at_a_time(kernel: Kernel) -> Handler:
    """A kernel as a handler (for the batches in which a backfill may start)."""

    def on_event(event: Event, outputs: list[Output]) -> None:
        fired: list[tuple[int, list[Output]]] = []
        kernel(EventColumns.of((event,)), fired)
        for _, out in fired:
            outputs += out

    return on_event


def _wire_shape(shape: tuple[Any, ...]) -> list[Any]:
    """A rule's shape as it reads back from a checkpoint (nested lists)."""
    return orjson.loads(orjson.dumps(shape))
