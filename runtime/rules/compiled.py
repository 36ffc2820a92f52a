"""A rule document compiled once into what evaluation needs: predicate closures and ms units."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from runtime.config.types import document_body
from runtime.expr import Expr, compile_expr
from runtime.rules.aggregates import AggregateSpec
from runtime.rules.models import (
    Absence,
    Action,
    Audience,
    Condition,
    Duration,
    Geofence,
    NotStep,
    Rule,
    Sequence,
)
from runtime.windows import WindowDef, window_def


@dataclass(frozen=True, slots=True)
class LeafSpec:
    """An event condition inside a group: its path names its state."""

    path: str
    event_type: str
    where: Expr | None
    threshold: int
    window_ms: int
    aggregate: AggregateSpec | None = None
    tumbling: bool = False
    group_by: tuple[str, ...] | None = None  # inside data: one window per value
    window: WindowDef = field(init=False, repr=False, compare=False)  # from window_ms and tumbling
    insert: Callable[[list[Any], tuple[Any, ...], int], bool] = field(init=False, repr=False, compare=False)
    single: bool = field(init=False, repr=False, compare=False)  # one matching event is the occurrence

    def __post_init__(self) -> None:
        window = window_def("tumbling" if self.tumbling else "sliding", self.window_ms)
        object.__setattr__(self, "window", window)
        object.__setattr__(self, "insert", window.insert)  # bound once: accumulate calls it per event
        single = self.threshold == 1 and self.aggregate is None and not self.tumbling and not self.group_by
        object.__setattr__(self, "single", single)

    @property
    def shape(self) -> tuple[Any, ...]:
        where = self.where.source if self.where else None
        shape: tuple[Any, ...] = ("event", self.event_type, where, self.threshold, self.window_ms)
        if self.aggregate is not None or self.tumbling or self.group_by:
            shape += (self.aggregate.shape if self.aggregate else None, self.tumbling)
        if self.group_by:
            shape += (".".join(self.group_by),)
        return shape

    @classmethod
    def build(cls, path: str, condition: Condition) -> LeafSpec:
        where = compile_expr(condition.where) if condition.where else None
        named = condition.aggregate
        aggregate = AggregateSpec.build(*named) if named else None
        tumbling = condition.window == "tumbling"
        group_by = tuple(condition.group_by.split(".")[1:]) if condition.group_by else None
        return cls(path, condition.event, where, condition.count.gte, condition.within, aggregate, tumbling, group_by)

    def leaves(self) -> list[LeafSpec]:
        return [self]

    @property
    def stride(self) -> int:
        """Entries per event in this condition's window: time, ref (and the value aggregated)."""
        return 3 if self.aggregate is not None else 2

    def window_key(self, data: dict[str, Any]) -> str | None:
        """Where this event counts: the condition's path, or ``path#value`` when grouped (None
        when the event has no usable value for ``group_by``)."""
        if self.group_by is None:
            return self.path
        value: Any = data
        for key in self.group_by:
            if not isinstance(value, dict) or key not in value:
                return None
            value = value[key]
        if not isinstance(value, (str, int, float, bool)):
            return None
        return f"{self.path}#{value}"


@dataclass(frozen=True, slots=True)
class SequenceSpec:
    """Followed-by: ``steps`` in order; ``guards[k]`` (or None) must not occur between step k-1
    and step k; all within ``within_ms`` of the first step. A step is an event condition or a
    timed one (geofence, absence, duration), which occurs when it completes."""

    path: str
    steps: tuple[Any, ...]  # LeafSpec | GeofenceSpec | AbsenceSpec | DurationSpec
    guards: tuple[LeafSpec | None, ...]
    within_ms: int
    strict: bool
    guarded: bool = field(init=False, compare=False, repr=False)  # whether any step has a guard

    def __post_init__(self) -> None:
        object.__setattr__(self, "guarded", any(g is not None for g in self.guards))  # read per event

    @property
    def shape(self) -> tuple[Any, ...]:
        guards = tuple(g.shape if g else None for g in self.guards)
        return ("sequence", self.within_ms, self.strict, tuple(s.shape for s in self.steps), guards)

    def leaves(self) -> list[LeafSpec]:
        return [leaf for step in self.steps for leaf in step.leaves()] + [g for g in self.guards if g is not None]

    @property
    def step_types(self) -> frozenset[str]:
        """The event types of the single-event steps (what ``strict`` watches)."""
        return frozenset(s.event_type for s in self.steps if isinstance(s, LeafSpec))


@dataclass(frozen=True, slots=True)
class AbsenceSpec:
    """``after`` not followed by ``missing`` within ``within_ms``: a timer fires the rule."""

    path: str
    after: LeafSpec
    missing: LeafSpec
    within_ms: int

    @property
    def shape(self) -> tuple[Any, ...]:
        return ("absence", self.within_ms, self.after.shape, self.missing.shape)

    def leaves(self) -> list[LeafSpec]:
        return [self.after, self.missing]


@dataclass(frozen=True, slots=True)
class DurationSpec:
    """A state from a ``start`` to a ``stop`` event lasting ``min_ms``: a timer at start +
    ``min_ms`` fires it while it is open; a ``stop`` at or after that time fires it too (when
    the timer has not yet run). Either way the output's events are the start event alone, so
    which one fires first never changes the output id."""

    path: str
    start: LeafSpec
    stop: LeafSpec
    min_ms: int

    @property
    def shape(self) -> tuple[Any, ...]:
        return ("duration", self.min_ms, self.start.shape, self.stop.shape)

    def leaves(self) -> list[LeafSpec]:
        return [self.start, self.stop]


@dataclass(frozen=True, slots=True)
class GeofenceSpec:
    """Entering a zone (``dwell_ms`` 0) or staying in it ``dwell_ms`` (a timer fires)."""

    path: str
    event: LeafSpec
    cells: frozenset[str] | None
    polygon: tuple[tuple[float, float], ...] | None
    dwell_ms: int
    fields: tuple[str, str, str]  # cell, lat, lon attributes of data
    h3_cells: frozenset[str] | None = None
    h3_resolutions: tuple[int, ...] = ()  # of the zone's H3 cells, finest first

    @property
    def shape(self) -> tuple[Any, ...]:
        if self.cells is not None:
            zone: Any = sorted(self.cells)
        elif self.h3_cells is not None:
            zone = ["h3", *sorted(self.h3_cells)]
        else:
            zone = self.polygon
        return ("geofence", self.dwell_ms, self.event.shape, zone, self.fields)

    def leaves(self) -> list[LeafSpec]:
        return [self.event]

    def contains(self, data: dict[str, Any]) -> bool | None:
        """Whether the event's location is in the zone; None when it carries no location."""
        cell_field, lat_field, lon_field = self.fields
        if self.cells is not None:
            cell = data.get(cell_field)
            return None if cell is None else str(cell) in self.cells
        lat, lon = data.get(lat_field), data.get(lon_field)
        if not isinstance(lat, (int, float)) or not isinstance(lon, (int, float)):
            return None
        if self.h3_cells is not None:
            return _in_h3(float(lat), float(lon), self.h3_cells, self.h3_resolutions)
        return _in_polygon(float(lat), float(lon), self.polygon or ())


def _in_h3(lat: float, lon: float, cells: frozenset[str], resolutions: tuple[int, ...]) -> bool:
    """Whether the point's cell at any of the zone's resolutions is one of the zone's cells."""
    import h3

    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
        return False
    finest = h3.latlng_to_cell(lat, lon, resolutions[0])
    return any(h3.cell_to_parent(finest, r) in cells for r in resolutions)


def _in_polygon(lat: float, lon: float, polygon: tuple[tuple[float, float], ...]) -> bool:
    """Ray casting over [lat, lon] vertices (planar; fine for city-sized zones)."""
    inside = False
    j = len(polygon) - 1
    for i, (lat_i, lon_i) in enumerate(polygon):
        lat_j, lon_j = polygon[j]
        if (lat_i > lat) != (lat_j > lat) and lon < (lon_j - lon_i) * (lat - lat_i) / (lat_j - lat_i) + lon_i:
            inside = not inside
        j = i
    return inside


@dataclass(frozen=True, slots=True)
class GroupSpec:
    path: str
    kind: str  # all | any
    children: tuple[Any, ...]  # any Node
    within_ms: int

    @property
    def shape(self) -> tuple[Any, ...]:
        return (self.kind, self.within_ms, tuple(c.shape for c in self.children))

    def leaves(self) -> list[LeafSpec]:
        found: list[LeafSpec] = []
        for child in self.children:
            found += [child] if isinstance(child, LeafSpec) else child.leaves()
        return found


Node = GroupSpec | SequenceSpec | AbsenceSpec | DurationSpec | GeofenceSpec | LeafSpec


@dataclass(frozen=True, slots=True)
class CompiledRule:
    name: str
    version: int
    priority: int
    event_type: str
    where: Expr | None
    threshold: int
    window_ms: int
    cooldown_ms: int
    actions: tuple[Action, ...]
    action_topics: tuple[str, ...] = ()
    action_details: tuple[tuple[str, dict[str, Any]] | None, ...] = ()  # (data key, body) per action
    group: Node | None = None  # when 'when' is not one plain event condition
    audience: Callable[[dict[str, Any]], bool] | None = None  # profile -> in the audience
    leaf: LeafSpec | None = None  # the condition when 'when' is a single event condition
    valid_from_ms: int | None = None
    valid_until_ms: int | None = None
    record: dict[str, Any] | None = field(default=None, compare=False, repr=False)  # the stored document

    def valid_at(self, time_ms: int) -> bool:
        return (self.valid_from_ms is None or time_ms >= self.valid_from_ms) and (
            self.valid_until_ms is None or time_ms < self.valid_until_ms
        )

    @property
    def shape(self) -> tuple[Any, ...]:
        """What the state depends on: state survives a reload when this is unchanged."""
        if self.group is not None:
            return self.group.shape
        if self.leaf is not None and (self.leaf.aggregate is not None or self.leaf.tumbling or self.leaf.group_by):
            return self.leaf.shape
        return (self.event_type, self.where.source if self.where else None, self.threshold, self.window_ms)

    @property
    def event_types(self) -> frozenset[str]:
        if self.group is not None:
            return frozenset(leaf.event_type for leaf in self.group.leaves())
        return frozenset([self.event_type])

    @property
    def expressions(self) -> list[Expr]:
        if self.group is not None:
            return [leaf.where for leaf in self.group.leaves() if leaf.where is not None]
        return [self.where] if self.where is not None else []

    @property
    def reads_profiles(self) -> bool:
        fields = {f for expr in self.expressions for f in expr.fields}
        return self.audience is not None or any(f == "profile" or f.startswith("profile.") for f in fields)


PlainSequence = tuple[dict[str, tuple[int, ...]], str, int, int]  # steps by event type, path, within, last step


def plain_steps(rule: CompiledRule) -> PlainSequence | None:
    """For the most common sequence, plain steps (each one event of a type, no ``where``, no
    'not' between them, not ``strict``) and no cooldown: event type -> the steps it is (in
    order), with the sequence's path, ``within`` and last step, which is all the engine needs
    to advance it (``PartitionEngine._plain_sequence``). None for any other rule."""
    node = rule.group
    if not isinstance(node, SequenceSpec) or node.strict or node.guarded or rule.cooldown_ms:
        return None
    if not all(isinstance(s, LeafSpec) and s.single and s.where is None for s in node.steps):
        return None
    steps: dict[str, tuple[int, ...]] = {}
    for k, step in enumerate(node.steps):
        steps[step.event_type] = (*steps.get(step.event_type, ()), k)
    return steps, node.path, node.within_ms, len(node.steps) - 1


def compile_rule(doc: Rule | dict[str, Any], version: int = 0) -> CompiledRule:
    """Compile a validated rule (or its stored JSON form, whose ``version`` is used)."""
    record = None
    if isinstance(doc, dict):
        record, version = doc, int(doc.get("version", version))
        doc = Rule.model_validate(document_body(doc))
    when = doc.when
    leaf = when if isinstance(when, Condition) else None
    group = _compile_node(when, "when") if leaf is None or leaf.group_by else None  # grouped: one window per value
    return CompiledRule(
        name=doc.name,
        version=version,
        priority=doc.priority,
        event_type=leaf.event if leaf else "",
        where=compile_expr(leaf.where) if leaf and leaf.where else None,
        threshold=leaf.count.gte if leaf else 0,
        window_ms=leaf.within if leaf else 0,
        group=group,
        leaf=LeafSpec.build("when", leaf) if leaf else None,
        valid_from_ms=doc.validity_ms[0],
        valid_until_ms=doc.validity_ms[1],
        audience=compile_audience(doc.audience) if doc.audience else None,
        cooldown_ms=doc.cooldown,
        actions=tuple(doc.then),
        action_topics=tuple(a.topic for a in doc.then),
        action_details=tuple(a.details() for a in doc.then),
        record=record,
    )


def _compile_node(node: Any, path: str) -> Any:
    if isinstance(node, Condition):
        return LeafSpec.build(path, node)
    if isinstance(node, Geofence):
        geo = node.geofence
        leaf = LeafSpec.build(f"{path}.geofence", Condition(event=geo.event, where=geo.where))
        cells = frozenset(geo.zone.cells) if geo.zone.cells is not None else None
        polygon = tuple(geo.zone.polygon) if geo.zone.polygon is not None else None
        fields = (geo.cell_field, geo.lat_field, geo.lon_field)
        h3_cells = frozenset(geo.zone.h3) if geo.zone.h3 is not None else None
        resolutions = _h3_resolutions(h3_cells) if h3_cells else ()
        return GeofenceSpec(path, leaf, cells, polygon, geo.dwell, fields, h3_cells, resolutions)
    if isinstance(node, Duration):
        spec = node.duration
        start = LeafSpec.build(f"{path}.duration.start", spec.start)
        return DurationSpec(path, start, LeafSpec.build(f"{path}.duration.stop", spec.stop), spec.gte)
    if isinstance(node, Absence):
        spec = node.absence
        after = LeafSpec.build(f"{path}.absence.after", spec.after)
        return AbsenceSpec(path, after, LeafSpec.build(f"{path}.absence.missing", spec.missing), spec.within)
    if isinstance(node, Sequence):
        steps: list[Any] = []
        guards: list[LeafSpec | None] = []
        pending: LeafSpec | None = None
        for i, item in enumerate(node.sequence):
            if isinstance(item, NotStep):
                pending = LeafSpec.build(f"{path}.sequence.{i}.not", item.not_)
                continue
            steps.append(_compile_node(item, f"{path}.sequence.{i}"))
            guards.append(pending)
            pending = None
        return SequenceSpec(path, tuple(steps), tuple(guards), node.within, node.strict)
    children = tuple(_compile_node(child, f"{path}.{node.kind}.{i}") for i, child in enumerate(node.children))
    return GroupSpec(path, node.kind, children, node.within)


def _h3_resolutions(cells: frozenset[str]) -> tuple[int, ...]:
    import h3

    return tuple(sorted({h3.get_resolution(c) for c in cells}, reverse=True))


def compile_audience(audience: Audience) -> Callable[[dict[str, Any]], bool]:
    """One predicate over a profile: segment membership, a tag, a score floor, an expression."""
    checks: list[Callable[[dict[str, Any]], bool]] = []
    if audience.segment is not None:
        segment = audience.segment
        checks.append(lambda p: segment in (p.get("segments") or ()))
    if audience.tag is not None:
        tag = audience.tag
        checks.append(lambda p: tag in (p.get("tags") or ()))
    if audience.score is not None:
        product, floor = audience.score.product, audience.score.gte
        checks.append(lambda p: _score(p, product) >= floor)
    if audience.where is not None:
        expr = compile_expr(audience.where)
        checks.append(lambda p: expr.predicate({"profile": p}))
    return lambda profile: all(check(profile) for check in checks)


def _score(profile: dict[str, Any], product: str) -> float:
    scores = profile.get("scores")
    value = scores.get(product) if isinstance(scores, dict) else None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else -1.0
