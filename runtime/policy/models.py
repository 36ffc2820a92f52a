"""Config documents of the contact policy: ``policy`` (caps, quiet hours, arbitration, channel
capacity) and ``campaign`` (priority, product, de-dup days, quiet-hours handling)."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from runtime.config.types import NAME_PATTERN, Doc, DurationMs

CLOCK = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"


class Cap(BaseModel):
    """At most ``max`` contacts in any rolling ``window`` (not calendar buckets), counted per
    customer over everything (scope customer), one channel, each campaign or each rule."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=NAME_PATTERN, description="Named in decisions: suppressed:cap:<name>.")
    scope: Literal["customer", "channel", "campaign", "rule"] = "customer"
    channel: str | None = Field(None, pattern=NAME_PATTERN, description="scope channel: which channel.")
    window: DurationMs = Field(description="Rolling window, e.g. 7d.")
    max: int = Field(ge=0, le=100_000, description="Contacts allowed in the window.")
    max_by_tier: dict[str, Annotated[int, Field(ge=0, le=100_000)]] = Field(
        default_factory=dict, description="Per customer tier (profile attribute 'tier_attribute'), e.g. {gold: 2}."
    )
    tier_attribute: str = Field("tier", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    kinds: list[Literal["notify", "task"]] = Field(["notify"], min_length=1, description="What the cap counts.")

    @model_validator(mode="after")
    def _channel(self) -> Cap:
        if (self.scope == "channel") != (self.channel is not None):
            raise ValueError("a cap of scope channel names its 'channel' (and only such a cap does)")
        if self.window <= 0:
            raise ValueError("a cap needs a window above zero")
        return self


class QuietHours(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    start: str = Field(pattern=CLOCK, description="Local time quiet hours begin, e.g. 21:00.")
    end: str = Field(pattern=CLOCK, description="Local time they end, e.g. 08:00 (may be the next day).")
    timezone: str = Field("UTC", description="Default IANA zone; a profile's 'timezone' attribute overrides it.")
    action: Literal["hold", "drop"] = Field("hold", description="hold: send when they end; drop: do not send.")
    channels: list[str] | None = Field(None, description="Only these channels (default: all but task).")

    @model_validator(mode="after")
    def _not_empty(self) -> QuietHours:
        if self.start == self.end:
            raise ValueError("quiet hours need start and end to differ (equal would be quiet all day)")
        return self

    @field_validator("timezone")
    @classmethod
    def _zone(cls, zone: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {zone!r} (an IANA name like Asia/Shanghai)") from None
        return zone


class Capacity(BaseModel):
    """A gateway's limits: excess is held and released in priority order, or dropped once it
    has waited ``deadline``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    per_minute: int | None = Field(None, ge=1, le=1_000_000_000)
    per_hour: int | None = Field(None, ge=1, le=1_000_000_000)
    per_day: int | None = Field(None, ge=1, le=1_000_000_000)
    deadline: DurationMs = Field(3_600_000, description="Held longer than this: dropped.")


class Policy(Doc):
    """The contact policy. Every document of this kind applies; caps of all of them combine and
    the most restrictive wins."""

    kind: Literal["policy"] = "policy"
    caps: list[Cap] = Field(default_factory=list, max_length=100)
    quiet_hours: QuietHours | None = None
    arbitration_window: DurationMs = Field(2000, description="Requests for one customer this close compete.")
    capacity: dict[str, Capacity] = Field(default_factory=dict, description="Per channel.")
    dedupe_days: int = Field(0, ge=0, le=365, description="Default de-dup window of campaigns without their own.")
    enabled: bool = True

    @field_validator("capacity")
    @classmethod
    def _channels(cls, capacity: dict[str, Capacity]) -> dict[str, Capacity]:
        for channel in capacity:
            if not re.match(NAME_PATTERN, channel):
                raise ValueError(f"channel name {channel!r} does not match {NAME_PATTERN}")
        return capacity


class Campaign(Doc):
    """What rules' notify actions name as ``campaign``: how it competes and how often it may
    repeat itself."""

    kind: Literal["campaign"] = "campaign"
    priority: int = Field(50, ge=0, le=100, description="Higher wins arbitration.")
    product: str | None = Field(
        None, pattern=NAME_PATTERN, description="Its product: the customer's match score breaks priority ties."
    )
    dedupe_days: int | None = Field(
        None, ge=0, le=365, description="Not the same content to the same customer within this many days (3/7/15/30)."
    )
    dedupe_scope: Literal["channel", "all"] = Field("all", description="Per channel, or across channels.")
    quiet_hours: Literal["policy", "hold", "drop", "ignore"] = Field(
        "policy", description="Quiet-hours handling: the policy's, or its own."
    )
    enabled: bool = True
    # --- a batch campaign (esp job campaign): who, on which channel, when ---------------------
    segment: str | None = Field(None, pattern=NAME_PATTERN, description="Batch audience: this segment's members.")
    plan: bool = Field(False, description="Batch audience: this campaign's rows of the allocation plan.")
    channel: str | None = Field(None, pattern=NAME_PATTERN, description="Batch sends: the channel.")
    template: str | None = Field(None, pattern=NAME_PATTERN, description="Batch sends: the channel's template.")
    start: str | None = Field(None, description="Batch sends: not before this time (RFC 3339).")
    period: DurationMs = Field(0, description="Batch sends: spread evenly over this long (0: at once).")
    control_share: float = Field(0.1, ge=0, le=0.5, description="Share of the audience held out as control group.")

    @model_validator(mode="after")
    def _batch(self) -> Campaign:
        if self.segment is not None and self.plan:
            raise ValueError("a batch campaign takes its audience from a segment or from the plan, not both")
        if (self.segment is not None or self.plan) and (self.channel is None or self.template is None):
            raise ValueError("a batch campaign (segment or plan) needs a channel and a template")
        if self.start is not None:
            from runtime.events.envelope import parse_time_ms

            if parse_time_ms(self.start) is None:
                raise ValueError(f"start must be RFC 3339, got {self.start!r}")
        return self


class Segment(Doc):
    """Customers for whom ``where`` holds, over their batch tags and profile: e.g.
    ``'circle:behaviour:business-traveller' in tags && profile.tier in ['gold', 'platinum']``.
    Materialised by ``esp job segments``; members get the segment in their profile's
    ``segments``, which rules' ``audience: {segment: ...}`` read."""

    kind: Literal["segment"] = "segment"
    where: str = Field(max_length=4000, description="Expression over 'tags' (a list) and 'profile' (a map).")

    @field_validator("where")
    @classmethod
    def _compiles(cls, source: str) -> str:
        from runtime.expr import compile_expr

        compile_expr(source)
        return source
