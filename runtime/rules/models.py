"""Rule documents: ``when`` a condition tree holds for a customer, ``then`` actions.

The ``when`` tree is a discriminated union of event conditions, correlation groups, sequences,
absences, durations and geofences; :mod:`runtime.rules.compiled` turns a validated tree into
the engine's specs. Models are frozen and forbid unknown fields, so a typo is an error, not a
silently ignored setting.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator, model_validator

from runtime.config.types import NAME_PATTERN, Doc, DurationMs


class Threshold(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    gte: int = Field(ge=1, le=100_000, description="Fire when the count reaches this value.")


class Aggregate(BaseModel):
    """A threshold on an aggregate of ``of`` (a ``data.<path>``) over the window's events."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    of: str = Field(pattern=r"^data(\.[A-Za-z0-9_-]+)+$", description="The attribute aggregated, e.g. data.amount.")
    gte: float | None = None
    gt: float | None = None
    lte: float | None = None
    lt: float | None = None

    @model_validator(mode="after")
    def _one_bound(self) -> Aggregate:
        bounds = [k for k in ("gte", "gt", "lte", "lt") if getattr(self, k) is not None]
        if len(bounds) != 1:
            raise ValueError(f"an aggregate needs exactly one of gte, gt, lte, lt; got {bounds or 'none'}")
        return self


AGGREGATES = ("sum", "min", "max", "avg", "distinct")


class Condition(BaseModel):
    """Events of one type, filtered, counted (or aggregated) over an event-time window."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event: str = Field(pattern=NAME_PATTERN, description="Atomic event type.")
    where: str | None = Field(None, max_length=2000, description="Filter expression (CEL syntax).")
    count: Threshold = Field(Threshold(gte=1), description="How many matching events fire the rule.")
    within: DurationMs = Field(0, description="Window length (event time); required when count > 1.")
    window: Literal["sliding", "tumbling"] = Field(
        "sliding", description="sliding: the last 'within'; tumbling: fixed 'within' buckets from the epoch."
    )
    sum: Aggregate | None = Field(None, description="Fire when the sum of 'of' passes the bound.")
    min: Aggregate | None = Field(None, description="Fire when the smallest 'of' passes the bound.")
    max: Aggregate | None = Field(None, description="Fire when the largest 'of' passes the bound.")
    avg: Aggregate | None = Field(None, description="Fire when the mean of 'of' passes the bound.")
    distinct: Aggregate | None = Field(None, description="Fire when the number of distinct 'of' passes the bound.")
    group_by: str | None = Field(
        None,
        pattern=r"^data(\.[A-Za-z0-9_-]+)+$",
        description="Count or aggregate separately per value of this attribute, e.g. data.merchant.",
    )

    @property
    def aggregate(self) -> tuple[str, Aggregate] | None:
        return next(((name, getattr(self, name)) for name in AGGREGATES if getattr(self, name) is not None), None)

    @field_validator("count", mode="before")
    @classmethod
    def _count_shorthand(cls, value: Any) -> Any:
        return {"gte": value} if isinstance(value, int) and not isinstance(value, bool) else value

    @model_validator(mode="after")
    def _window_needed(self) -> Condition:
        if self.count.gte > 1 and self.within <= 0:
            raise ValueError(f"count.gte is {self.count.gte} but 'within' is not set: a count needs a window")
        aggregates = [name for name in AGGREGATES if getattr(self, name) is not None]
        if len(aggregates) > 1:
            raise ValueError(f"a condition takes one aggregate, got {aggregates}")
        if aggregates and self.count.gte > 1:
            raise ValueError(f"use either count or {aggregates[0]}, not both")
        if (aggregates or self.window == "tumbling") and self.within <= 0:
            raise ValueError("an aggregate or a tumbling window needs 'within'")
        if self.group_by is not None and not aggregates and self.count.gte == 1:
            raise ValueError("group_by needs a count above 1 or an aggregate to group")
        return self

    @property
    def single(self) -> bool:
        """One event, no count, aggregate or grouping: what sequences, absences and durations take."""
        return self.count.gte == 1 and self.aggregate is None and self.group_by is None


class Group(BaseModel):
    """Correlation: ``all`` of the conditions (each at least once) within ``within``, or ``any``
    of them. Conditions may be events or groups again."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    all_: list[When] | None = Field(None, alias="all", min_length=1, max_length=20)
    any_: list[When] | None = Field(None, alias="any", min_length=1, max_length=20)
    within: DurationMs = Field(0, description="Every condition of an 'all' must hold within this span (event time).")

    @model_validator(mode="after")
    def _one_kind(self) -> Group:
        if (self.all_ is None) == (self.any_ is None):
            raise ValueError("a group needs exactly one of 'all' or 'any'")
        if self.all_ is not None and len(self.all_) > 1 and self.within <= 0:
            raise ValueError("'all' of several conditions needs 'within': the span they must fall in")
        return self

    @property
    def kind(self) -> str:
        return "all" if self.all_ is not None else "any"

    @property
    def children(self) -> list[When]:
        return self.all_ if self.all_ is not None else self.any_ or []


class NotStep(BaseModel):
    """Inside a sequence: no such event between the steps around it."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    not_: Condition = Field(alias="not")


class Sequence(BaseModel):
    """Followed-by: the steps in this order, the first to the last within ``within``; a ``not``
    step forbids an event between its neighbours; ``strict`` forbids any other event of the
    steps' types in between. A step is a single event or a timed condition (geofence, absence,
    duration), which occurs at its own time (the entry; entry + dwell; the absence's deadline;
    start + gte)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sequence: list[Step] = Field(min_length=2, max_length=20)
    within: DurationMs = Field(description="From the first step's event to the last one's.")
    strict: bool = Field(False, description="Steps must follow each other with no other event of their types.")

    @model_validator(mode="after")
    def _shape(self) -> Sequence:
        steps = [s for s in self.sequence if not isinstance(s, NotStep)]
        if len(steps) < 2:
            raise ValueError("a sequence needs at least two event steps")
        if isinstance(self.sequence[0], NotStep) or isinstance(self.sequence[-1], NotStep):
            raise ValueError("a 'not' step must stand between two event steps")
        for a, b in zip(self.sequence, self.sequence[1:], strict=False):
            if isinstance(a, NotStep) and isinstance(b, NotStep):
                raise ValueError("put one 'not' step between two event steps")
        if not all(s.single for s in steps if isinstance(s, Condition)):
            raise ValueError("sequence steps are single events: no count, aggregate or group_by")
        if self.within <= 0:
            raise ValueError("a sequence needs 'within'")
        return self

    @property
    def kind(self) -> str:
        return "sequence"

    @property
    def children(self) -> list[Any]:
        return [s.not_ if isinstance(s, NotStep) else s for s in self.sequence]


class AbsenceSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    after: Condition = Field(description="The event that starts the wait.")
    missing: Condition = Field(description="The event that must not follow it in time.")
    within: DurationMs = Field(description="How long to wait (event time of 'after' + within).")

    @model_validator(mode="after")
    def _single_events(self) -> AbsenceSpec:
        if self.within <= 0:
            raise ValueError("an absence needs 'within'")
        if not (self.after.single and self.missing.single):
            raise ValueError("absence conditions are single events: no count, aggregate or group_by")
        return self


class Absence(BaseModel):
    """``after`` not followed by ``missing`` within ``within``: fired by a timer."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    absence: AbsenceSpec

    @property
    def kind(self) -> str:
        return "absence"

    @property
    def children(self) -> list[Any]:
        return [self.absence.after, self.absence.missing]


class DurationSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    start: Condition = Field(description="The event that opens the state, e.g. call.start.")
    stop: Condition = Field(description="The event that closes it, e.g. call.end.")
    gte: DurationMs = Field(description="Fire once the state has lasted this long (event time).")

    @model_validator(mode="after")
    def _single_events(self) -> DurationSpec:
        if self.gte <= 0:
            raise ValueError("a duration needs 'gte' above zero")
        if not (self.start.single and self.stop.single):
            raise ValueError("duration conditions are single events: no count, aggregate or group_by")
        return self


class Duration(BaseModel):
    """A state opened by ``start`` and closed by ``stop`` that lasts at least ``gte``: fired by a
    timer while it is still open, or by a late enough ``stop``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    duration: DurationSpec

    @property
    def kind(self) -> str:
        return "duration"

    @property
    def children(self) -> list[Any]:
        return [self.duration.start, self.duration.stop]


class Zone(BaseModel):
    """A place: a set of cell ids, a polygon of [lat, lon] points, or a set of H3 cells."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cells: list[str] | None = Field(None, min_length=1, max_length=100_000)
    polygon: list[tuple[float, float]] | None = Field(None, min_length=3, max_length=10_000)
    h3: list[str] | None = Field(None, min_length=1, max_length=100_000, description="H3 cell indexes, any resolution.")

    @model_validator(mode="after")
    def _one(self) -> Zone:
        given = [k for k in ("cells", "polygon", "h3") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"a zone needs exactly one of cells, polygon, h3; got {given or 'none'}")
        if self.h3 is not None:
            import h3

            bad = [c for c in self.h3 if not h3.is_valid_cell(c)]
            if bad:
                raise ValueError(f"not H3 cell indexes: {bad[:5]}")
        return self


class GeofenceSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    event: str = Field("location.update", pattern=NAME_PATTERN, description="The location event type.")
    where: str | None = Field(None, max_length=2000)
    zone: Zone
    enter: bool = Field(False, description="Fire when the customer enters the zone.")
    dwell: DurationMs = Field(0, description="Fire when the customer has stayed in the zone this long.")
    cell_field: str = Field("cell", description="data attribute holding the cell id.")
    lat_field: str = Field("lat", description="data attribute holding the latitude.")
    lon_field: str = Field("lon", description="data attribute holding the longitude.")

    @model_validator(mode="after")
    def _what(self) -> GeofenceSpec:
        if self.enter == bool(self.dwell):
            raise ValueError("a geofence needs exactly one of enter: true or dwell: <duration>")
        return self


class Geofence(BaseModel):
    """Entering a zone, or staying in it for a time (fired by a timer)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    geofence: GeofenceSpec

    @property
    def kind(self) -> str:
        return "geofence"

    @property
    def children(self) -> list[Any]:
        spec = self.geofence
        return [Condition(event=spec.event, where=spec.where)]


def _when_kind(value: Any) -> str:
    # tags start with '_' so error paths can leave them out (documents.validation_errors)
    if isinstance(value, dict):
        if "geofence" in value:
            return "_geofence"
        if "absence" in value:
            return "_absence"
        if "duration" in value:
            return "_duration"
        if "sequence" in value:
            return "_sequence"
        return "_group" if ("all" in value or "any" in value) else "_condition"
    if isinstance(value, Sequence):
        return "_sequence"
    if isinstance(value, Absence):
        return "_absence"
    if isinstance(value, Duration):
        return "_duration"
    if isinstance(value, Geofence):
        return "_geofence"
    return "_group" if isinstance(value, Group) else "_condition"


When = Annotated[
    Annotated[Condition, Tag("_condition")]
    | Annotated[Group, Tag("_group")]
    | Annotated[Sequence, Tag("_sequence")]
    | Annotated[Absence, Tag("_absence")]
    | Annotated[Duration, Tag("_duration")]
    | Annotated[Geofence, Tag("_geofence")],
    Discriminator(_when_kind),
]


def _step_kind(value: Any) -> str:
    if isinstance(value, NotStep) or (isinstance(value, dict) and "not" in value):
        return "_not"
    return _when_kind(value)


Step = Annotated[
    Annotated[Condition, Tag("_condition")]
    | Annotated[NotStep, Tag("_not")]
    | Annotated[Absence, Tag("_absence")]
    | Annotated[Duration, Tag("_duration")]
    | Annotated[Geofence, Tag("_geofence")],
    Discriminator(_step_kind),
]
Sequence.model_rebuild()
Group.model_rebuild()


class Notify(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    channel: str = Field(pattern=NAME_PATTERN)
    template: str = Field(pattern=NAME_PATTERN)
    campaign: str | None = Field(None, pattern=NAME_PATTERN)
    priority: int = Field(50, ge=0, le=100)


class Task(BaseModel):
    """A task for an account manager or agent queue."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    queue: str = Field(pattern=NAME_PATTERN, description="Queue of the team that works it, e.g. vip-agents.")
    title: str = Field("", max_length=200)
    sla: DurationMs = Field(86_400_000, description="Time to act; the task's due time is fire time + sla.")
    priority: int = Field(50, ge=0, le=100)


class TagChange(BaseModel):
    """Set or clear a real-time tag on the customer's profile (``tags``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    set: str | None = Field(None, min_length=1, max_length=128)
    clear: str | None = Field(None, min_length=1, max_length=128)

    @model_validator(mode="after")
    def _one(self) -> TagChange:
        if (self.set is None) == (self.clear is None):
            raise ValueError("a tag action needs exactly one of set, clear")
        return self


ACTIONS = ("emit", "notify", "task", "tag")


class Action(BaseModel):
    """One step of a rule's ``then``: exactly one of ``emit``, ``notify``, ``task`` or ``tag``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    emit: str | None = Field(None, pattern=NAME_PATTERN, description="Business event name (topic business.<name>).")
    notify: Notify | None = None
    task: Task | None = None
    tag: TagChange | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Action:
        chosen = [k for k in ACTIONS if getattr(self, k) is not None]
        if len(chosen) != 1:
            raise ValueError(f"an action needs exactly one of {', '.join(ACTIONS)}; got {chosen or 'none'}")
        return self

    @property
    def topic(self) -> str:
        if self.emit is not None:
            return self.emit if self.emit.startswith("business.") else f"business.{self.emit}"
        if self.notify is not None:
            return f"notifications.{self.notify.channel}"
        if self.task is not None:
            return f"tasks.{self.task.queue}"
        assert self.tag is not None  # guaranteed by _exactly_one
        return "tags.set" if self.tag.set is not None else "tags.clear"

    def details(self) -> tuple[str, dict[str, Any]] | None:
        """The data key and body an output of this action carries besides the match."""
        for key in ("notify", "task", "tag"):
            value = getattr(self, key)
            if value is not None:
                return key, value.model_dump(mode="json", exclude_none=True)
        return None


class Score(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    product: str = Field(pattern=NAME_PATTERN, description="Product of the customer x product match matrix.")
    gte: float = Field(ge=0, le=100, description="Lowest propensity score (0-100) in the audience.")


class Audience(BaseModel):
    """Who a rule is for, read from the customer's profile (``segments``, ``tags`` and ``scores``
    attributes, written by the batch jobs or ``PUT /v1/profiles``). All given parts must hold."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    segment: str | None = Field(None, pattern=NAME_PATTERN, description="Member of this segment.")
    tag: str | None = Field(None, min_length=1, max_length=128, description="Carries this tag.")
    score: Score | None = Field(None, description="Match score for a product at least this high.")
    where: str | None = Field(None, max_length=2000, description="Expression over 'profile'.")


def leaves(when: Any, path: str = "when") -> list[tuple[str, Condition]]:
    """Every event condition of a ``when`` tree with its field path (``when.all.0.any.1``)."""
    if isinstance(when, Condition):
        return [(path, when)]
    return [leaf for i, child in enumerate(when.children) for leaf in leaves(child, f"{path}.{when.kind}.{i}")]


class Rule(Doc):
    """``when`` a condition holds for a customer, ``then`` run the actions."""

    kind: Literal["rule"] = "rule"
    priority: int = Field(50, ge=0, le=100)
    enabled: bool = True
    audience: Audience | None = Field(None, description="Only customers whose profile matches.")
    valid_from: str | int | None = Field(None, description="Events before this time are ignored (RFC 3339 or ms).")
    valid_until: str | int | None = Field(None, description="Events at or after this time are ignored.")
    when: When
    then: list[Action] = Field(min_length=1, max_length=20)
    cooldown: DurationMs = Field(0, description="After firing, the rule is silent for this customer this long.")

    @model_validator(mode="after")
    def _validity(self) -> Rule:
        start = _validity_time(self.valid_from, "valid_from")
        end = _validity_time(self.valid_until, "valid_until")
        if start is not None and end is not None and start >= end:
            raise ValueError(f"valid_from {self.valid_from!r} is not before valid_until {self.valid_until!r}")
        return self

    @property
    def validity_ms(self) -> tuple[int | None, int | None]:
        return _validity_time(self.valid_from, "valid_from"), _validity_time(self.valid_until, "valid_until")


def _validity_time(value: str | int | None, name: str) -> int | None:
    from runtime.events.envelope import parse_time_ms

    if value is None:
        return None
    parsed = parse_time_ms(value)
    if parsed is None:
        raise ValueError(f"{name} must be RFC 3339 or epoch milliseconds, got {value!r}")
    return parsed
