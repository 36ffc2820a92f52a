"""The contact-policy decision, as a pure function of the requests, the customer's contact
ledger, the opt-outs and the policy: ``decide(group, view, rules, now_ms)``.

A *group* is the requests for one customer that arrived within the arbitration window. Under a
policy with an arbitration window, its notify requests compete: candidates are tried best
first — campaign priority, then the customer's match score for the campaign's product, then the
request id (a stable tie-break) — and the first one that the policy lets through is sent; those
after it lose to it (``lost_arbitration:<winner>``). Tasks (for staff, not the customer) never
compete, and without a policy nothing does: each request is checked on its own, in that order.
Each candidate is checked in this order, and the first check that fails is its reason:

1. opted out, globally or for the channel              -> ``suppressed:opt_out``
2. quiet hours in the customer's time zone              -> ``held:quiet_hours`` (until they end)
                                                           or ``suppressed:quiet_hours`` (drop)
3. the same campaign and content within its de-dup days -> ``suppressed:dedupe``
4. every cap (rolling windows; the tier's limit if any) -> ``suppressed:cap:<cap>``
5. the channel's capacity (per minute / hour / day)     -> ``held:capacity`` (next minute), or
                                                           ``suppressed:capacity`` past its deadline
6. otherwise                                            -> ``sent``

Nothing here reads a clock, Redis or the network (``ledger.py`` does, atomically).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from runtime.policy.models import Campaign, Cap, Capacity, Policy, QuietHours

DAY_MS = 86_400_000
MINUTE_MS = 60_000
CAPACITY_WINDOWS = (("per_minute", MINUTE_MS), ("per_hour", 3_600_000), ("per_day", DAY_MS))


@dataclass(frozen=True, slots=True)
class ContactRequest:
    """A notify or task action on its way to a customer."""

    id: str  # the output's deterministic id
    customer: str
    kind: str  # notify | task
    channel: str  # notify: the channel; task: "task:<queue>"
    content: str  # template (notify) or queue + title (task): what "the same message" means
    campaign: str | None = None
    rule: str | None = None
    priority: int = 50
    requested_at: int = 0  # ms, when it first reached the policy (capacity deadlines count from it)
    event: dict[str, Any] = field(default_factory=dict, compare=False)  # the output CloudEvent


# Contact, Decision and CustomerView are built several times per decision: slotted, not frozen (a
# frozen dataclass sets each field through object.__setattr__, 2-3x the cost of building one)


@dataclass(slots=True)
class Contact:
    """One entry of a customer's ledger: a contact that was sent."""

    id: str
    at: int
    kind: str
    channel: str
    campaign: str | None
    rule: str | None
    content: str


@dataclass(slots=True)
class Decision:
    id: str
    customer: str
    outcome: str  # sent | held:<why> | suppressed:<why> | lost_arbitration:<winner id>
    at: int
    release_at: int | None = None  # held: when to decide again

    @property
    def final(self) -> bool:
        return not self.outcome.startswith("held:")


@dataclass(slots=True)
class CustomerView:
    """What the ledger knows of one customer (and the channels' recent sends)."""

    contacts: tuple[Contact, ...] = ()
    profile: dict[str, Any] = field(default_factory=dict)
    opted_out: frozenset[str] = frozenset()  # channels, and "*" for all
    decided: dict[str, Decision] = field(default_factory=dict)  # earlier final decisions by request id
    channel_sends: dict[str, tuple[int, ...]] = field(default_factory=dict)  # channel -> send times (ms)


@dataclass(frozen=True, slots=True)
class PolicyRules:
    """Every ``policy`` and ``campaign`` document, combined."""

    caps: tuple[Cap, ...] = ()
    quiet_hours: QuietHours | None = None
    capacity: dict[str, Capacity] = field(default_factory=dict)
    campaigns: dict[str, Campaign] = field(default_factory=dict)
    dedupe_days: int = 0
    arbitration_window_ms: int = 0
    arbitrate: bool = False  # only under a policy that asks for it: without one, everything is checked alone

    @classmethod
    def combine(cls, policies: list[Policy], campaigns: list[Campaign]) -> PolicyRules:
        active = [p for p in policies if p.enabled]
        capacity: dict[str, Capacity] = {}
        for policy in active:
            capacity.update(policy.capacity)
        return cls(
            caps=tuple(cap for p in active for cap in p.caps),
            quiet_hours=next((p.quiet_hours for p in active if p.quiet_hours), None),
            capacity=capacity,
            campaigns={c.name: c for c in campaigns if c.enabled},
            dedupe_days=max((p.dedupe_days for p in active), default=0),
            arbitration_window_ms=max((p.arbitration_window for p in active), default=0),
            arbitrate=any(p.arbitration_window > 0 for p in active),
        )

    @property
    def longest_window_ms(self) -> int:
        windows = [cap.window for cap in self.caps] + [DAY_MS]
        days = [self.dedupe_days] + [c.dedupe_days or 0 for c in self.campaigns.values()]
        return max(windows + [d * DAY_MS for d in days])


def rank(request: ContactRequest, rules: PolicyRules, profile: dict[str, Any]) -> tuple[Any, ...]:
    """Sort key, best first: campaign priority (else the action's), match score, id."""
    campaign = rules.campaigns.get(request.campaign or "")
    priority = campaign.priority if campaign else request.priority
    return (-priority, -match_score(profile, campaign.product if campaign else None), request.id)


def match_score(profile: dict[str, Any], product: str | None) -> float:
    scores = profile.get("scores")
    value = scores.get(product) if product and isinstance(scores, dict) else None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else -1.0


def decide(
    group: list[ContactRequest], view: CustomerView, rules: PolicyRules, now_ms: int
) -> tuple[list[Decision], list[Contact]]:
    """Decisions for one customer's competing requests, and the contacts to add to the ledger."""
    contacts = list(view.contacts)
    decisions: list[Decision] = []
    winner: str | None = None
    ranked = group if len(group) == 1 else sorted(group, key=lambda r: rank(r, rules, view.profile))
    for request in ranked:
        competes = rules.arbitrate and request.kind == "notify"  # tasks go to staff: they never compete
        earlier = view.decided.get(request.id)
        if earlier is not None:  # a replay: the first decision stands, nothing is counted twice
            decisions.append(earlier)
            if competes and earlier.outcome == "sent":
                winner = winner or request.id
            continue
        if competes and winner is not None:
            decisions.append(Decision(request.id, request.customer, f"lost_arbitration:{winner}", now_ms))
            continue
        outcome, release_at = _check(request, view, rules, contacts, now_ms)
        decisions.append(Decision(request.id, request.customer, outcome, now_ms, release_at))
        if outcome == "sent":
            winner = request.id if competes else winner
            contacts.append(contact_of(request, now_ms))
    return decisions, contacts[len(view.contacts) :]


def contact_of(request: ContactRequest, at: int) -> Contact:
    return Contact(request.id, at, request.kind, request.channel, request.campaign, request.rule, request.content)


def _check(
    request: ContactRequest, view: CustomerView, rules: PolicyRules, contacts: list[Contact], now_ms: int
) -> tuple[str, int | None]:
    if "*" in view.opted_out or request.channel in view.opted_out:
        return "suppressed:opt_out", None
    campaign = rules.campaigns.get(request.campaign or "")
    quiet = _quiet_until(request, view.profile, rules, campaign, now_ms)
    if quiet is not None:
        action = campaign.quiet_hours if campaign and campaign.quiet_hours in ("hold", "drop") else None
        action = action or (rules.quiet_hours.action if rules.quiet_hours else "hold")
        return ("held:quiet_hours", quiet) if action == "hold" else ("suppressed:quiet_hours", None)
    days = campaign.dedupe_days if campaign and campaign.dedupe_days is not None else rules.dedupe_days
    if days and request.campaign is not None:
        since = now_ms - days * DAY_MS
        per_channel = campaign is not None and campaign.dedupe_scope == "channel"
        for c in contacts:
            same = c.campaign == request.campaign and c.content == request.content
            if same and c.at > since and (not per_channel or c.channel == request.channel):
                return "suppressed:dedupe", None
    for cap in rules.caps:
        if request.kind not in cap.kinds or (cap.scope == "channel" and cap.channel != request.channel):
            continue
        if (cap.scope == "campaign" and request.campaign is None) or (cap.scope == "rule" and request.rule is None):
            continue  # a per-campaign (per-rule) cap counts nothing for a request without one
        limit = cap.max_by_tier.get(str(view.profile.get(cap.tier_attribute)), cap.max) if cap.max_by_tier else cap.max
        if len(contacts) < limit:
            continue  # fewer contacts in the ledger than the cap allows: none of its windows can be full
        since = now_ms - cap.window
        used = sum(1 for c in contacts if c.at > since and c.kind in cap.kinds and _same_scope(cap, c, request))
        if used >= limit:
            return f"suppressed:cap:{cap.name}", None
    capacity = rules.capacity.get(request.channel)
    if capacity is not None:
        sends = view.channel_sends.get(request.channel, ())
        for attribute, window in CAPACITY_WINDOWS:
            limit = getattr(capacity, attribute)
            if limit is not None and sum(1 for t in sends if t > now_ms - window) >= limit:
                if now_ms - (request.requested_at or now_ms) >= capacity.deadline:
                    return "suppressed:capacity", None
                return "held:capacity", now_ms + MINUTE_MS
    return "sent", None


def _same_scope(cap: Cap, contact: Contact, request: ContactRequest) -> bool:
    if cap.scope == "channel":
        return contact.channel == request.channel
    if cap.scope == "campaign":
        return request.campaign is not None and contact.campaign == request.campaign
    if cap.scope == "rule":
        return request.rule is not None and contact.rule == request.rule
    return True


def _quiet_until(
    request: ContactRequest, profile: dict[str, Any], rules: PolicyRules, campaign: Campaign | None, now_ms: int
) -> int | None:
    """When the quiet hours that ``now_ms`` falls in end (ms), or None outside them."""
    quiet = rules.quiet_hours
    if quiet is None or (campaign is not None and campaign.quiet_hours == "ignore") or request.kind == "task":
        return None
    if quiet.channels is not None and request.channel not in quiet.channels:
        return None
    zone = _zone(profile.get("timezone"), quiet.timezone)
    local = datetime.fromtimestamp(now_ms / 1000, zone)
    start, end = _minutes(quiet.start), _minutes(quiet.end)
    minute = local.hour * 60 + local.minute
    inside = start <= minute < end if start < end else (minute >= start or minute < end)
    if not inside:
        return None
    ends = local.replace(hour=end // 60, minute=end % 60, second=0, microsecond=0)
    if ends <= local:
        ends += timedelta(days=1)
    at = int(ends.timestamp() * 1000)
    back = datetime.fromtimestamp(at / 1000, zone)
    if (back.hour, back.minute) != (ends.hour, ends.minute):
        # that wall time does not exist that day (the clock skipped it for daylight saving): the
        # hold ends when the clock jumps past it, found by bisection over the hours before
        low, high = at - 3 * 3_600_000, at
        while high - low > MINUTE_MS:
            middle = (low + high) // 2
            moment = datetime.fromtimestamp(middle / 1000, zone)
            past = moment.date() == ends.date() and moment.hour * 60 + moment.minute >= end
            low, high = (low, middle) if past else (middle, high)
        at = high - high % MINUTE_MS
    return at


def _minutes(clock: str) -> int:
    hours, minutes = clock.split(":")
    return int(hours) * 60 + int(minutes)


def _zone(name: Any, default: str) -> ZoneInfo:
    if isinstance(name, str):
        try:
            return ZoneInfo(name)
        except (KeyError, ValueError):
            pass
    return ZoneInfo(default)
