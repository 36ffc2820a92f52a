"""``decide`` (runtime/policy/decide.py) against a brute-force model of its specification.

The model is written from the module docstring (and the config documents' descriptions), not
from the code: it keeps every contact ever sent in one plain list and, for each request,
recomputes everything from scratch — the ranking (campaign priority else the action's, then
the customer's match score for the campaign's product, then the id), opt-outs, quiet hours
(the end found by walking forward minute by minute in the customer's zone), de-dup, every cap
(rolling windows: a contact counts while ``at > now - window``), channel capacity (sends of
every customer on the channel) and arbitration (the first candidate let through is sent, the
rest lose to it). The engine is driven group by group, its own returned contacts fed back
into the next view as the ledger would, and held requests are offered again once due.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.policy.decide import Contact, ContactRequest, CustomerView, Decision, PolicyRules, decide
from runtime.policy.models import Campaign, Cap, Capacity, Policy, QuietHours

MINUTE = 60_000
HOUR = 3_600_000
DAY = 86_400_000

CUSTOMERS = ["c0", "c1", "c2"]
CHANNELS = ["sms", "email", "push"]
PRODUCTS = ["card", "loan"]
CAMPAIGNS = ["alpha", "beta", "gamma"]
# Zones without daylight saving time: the DST gap is a separate test (see below).
ZONES = ["UTC", "Asia/Shanghai", "Asia/Kolkata", "America/Bogota", "Pacific/Kiritimati"]
START_MIN = int(datetime(2024, 1, 1, tzinfo=timezone.utc).timestamp() * 1000)
START_MAX = int(datetime(2026, 12, 31, tzinfo=timezone.utc).timestamp() * 1000)


def clock(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


# -- strategies ------------------------------------------------------------------------------


@st.composite
def caps(draw: Any) -> list[Cap]:
    out = []
    for i in range(draw(st.integers(0, 3))):
        scope = draw(st.sampled_from(["customer", "channel", "campaign", "rule"]))
        # a limit of 0 on a campaign or rule cap is a separate test (see below)
        low = 1 if scope in ("campaign", "rule") else 0
        out.append(
            Cap(
                name=f"cap{i}",
                scope=scope,
                channel=draw(st.sampled_from(CHANNELS)) if scope == "channel" else None,
                window=draw(st.sampled_from(["30m", "1h", "1d", "3d", "7d"])),
                max=draw(st.integers(low, 3)),
                max_by_tier=draw(st.dictionaries(st.sampled_from(["gold", "silver"]), st.integers(low, 3), max_size=2)),
                tier_attribute=draw(st.sampled_from(["tier", "segment"])),
                kinds=draw(st.sampled_from([["notify"], ["task"], ["notify", "task"]])),
            )
        )
    return out


@st.composite
def quiet_hours(draw: Any) -> QuietHours | None:
    if draw(st.integers(0, 3)) == 0:
        return None
    start = draw(st.one_of(st.integers(0, 1439), st.sampled_from([0, 21 * 60, 22 * 60, 23 * 60 + 30])))
    end = draw(st.one_of(st.integers(0, 1439), st.sampled_from([0, 6 * 60, 8 * 60, 30])).filter(lambda e: e != start))
    return QuietHours(
        start=clock(start),
        end=clock(end),
        timezone=draw(st.sampled_from(ZONES)),
        action=draw(st.sampled_from(["hold", "drop"])),
        channels=draw(st.sampled_from([None, None, None, ["sms"], ["sms", "email"], []])),
    )


@st.composite
def capacities(draw: Any) -> dict[str, Capacity]:
    out = {}
    for channel in draw(st.lists(st.sampled_from(CHANNELS[:2]), unique=True, max_size=2)):
        limits = {
            "per_minute": draw(st.one_of(st.none(), st.integers(1, 3))),
            "per_hour": draw(st.one_of(st.none(), st.integers(1, 5))),
            "per_day": draw(st.one_of(st.none(), st.integers(1, 8))),
        }
        out[channel] = Capacity(**limits, deadline=draw(st.sampled_from(["1m", "3m", "10m", "1h"])))
    return out


@st.composite
def campaign_docs(draw: Any) -> list[Campaign]:
    out = []
    for name in draw(st.lists(st.sampled_from(CAMPAIGNS), unique=True, max_size=3)):
        out.append(
            Campaign(
                name=name,
                priority=draw(st.sampled_from([10, 50, 50, 90])),
                product=draw(st.one_of(st.none(), st.sampled_from(PRODUCTS))),
                dedupe_days=draw(st.one_of(st.none(), st.integers(0, 3))),
                dedupe_scope=draw(st.sampled_from(["channel", "all"])),
                quiet_hours=draw(st.sampled_from(["policy", "hold", "drop", "ignore"])),
                enabled=draw(st.sampled_from([True, True, True, False])),
            )
        )
    return out


@st.composite
def profiles(draw: Any) -> dict[str, dict[str, Any]]:
    out = {}
    for customer in CUSTOMERS:
        profile: dict[str, Any] = {}
        for attribute in ("tier", "segment"):
            value = draw(st.sampled_from([None, "gold", "silver", "bronze"]))
            if value is not None:
                profile[attribute] = value
        zone = draw(st.sampled_from([None, *ZONES, "Nowhere/Land", "", 8]))
        if zone is not None:
            profile["timezone"] = zone
        scores = draw(st.dictionaries(st.sampled_from(PRODUCTS), st.sampled_from([0.1, 0.5, 0.9, 1]), max_size=2))
        if scores or draw(st.booleans()):
            profile["scores"] = scores
        out[customer] = profile
    return out


REQUEST = st.tuples(
    st.sampled_from(["notify"] * 4 + ["task"]),
    st.sampled_from(CHANNELS),
    st.sampled_from([None, *CAMPAIGNS, "ghost"]),  # ghost: a campaign without a document
    st.sampled_from(["t1", "t2"]),
    st.sampled_from([None, "r1", "r2"]),
    st.sampled_from([10, 50, 90]),
)
NEXT_RELEASE = -1
STEP = st.tuples(
    st.sampled_from(CUSTOMERS),
    # bursts, minutes, hours, days (round steps land contacts exactly on window edges), or
    # exactly to the next held request's release (for that customer), as the stage would
    st.one_of(
        st.sampled_from([0, 1, 30_000, MINUTE, MINUTE, 10 * MINUTE, HOUR, 6 * HOUR, DAY, 3 * DAY]),
        st.just(NEXT_RELEASE),
        st.integers(0, 2 * DAY),
    ),
    # new requests (none: only held ones that are due), mostly one or two
    st.sampled_from([0, 1, 1, 1, 2, 2, 3, 4]).flatmap(lambda n: st.lists(REQUEST, min_size=n, max_size=n)),
)


@dataclass
class World:
    policy: Policy
    campaigns: list[Campaign]
    profiles: dict[str, dict[str, Any]]
    optouts: dict[str, frozenset[str]]
    start: int
    steps: list[Any]


@st.composite
def worlds(draw: Any) -> World:
    policy = Policy(
        name="p",
        caps=draw(caps()),
        quiet_hours=draw(quiet_hours()),
        capacity=draw(capacities()),
        dedupe_days=draw(st.integers(0, 3)),
    )
    optouts = {c: frozenset(draw(st.sampled_from([()] * 8 + [("*",), ("sms",), ("email", "push")]))) for c in CUSTOMERS}
    size = draw(st.integers(1, 30))
    return World(
        policy=policy,
        campaigns=draw(campaign_docs()),
        profiles=draw(profiles()),
        optouts=optouts,
        start=draw(st.integers(START_MIN, START_MAX)),
        steps=draw(st.lists(STEP, min_size=size, max_size=size)),
    )


# -- the model -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sent:
    customer: str
    id: str
    at: int
    kind: str
    channel: str
    campaign: str | None
    rule: str | None
    content: str


class Model:
    """Brute force over the full contact history."""

    def __init__(self, policy: Policy, campaigns: list[Campaign], profiles: dict, optouts: dict) -> None:
        self.policy = policy
        self.arbitrate = policy.enabled and policy.arbitration_window > 0
        self.campaigns = {c.name: c for c in campaigns if c.enabled}
        self.profiles = profiles
        self.optouts = optouts
        self.history: list[Sent] = []

    def decide(self, customer: str, group: list[ContactRequest], now: int) -> dict[str, tuple[str, int | None]]:
        profile = self.profiles[customer]

        def priority(r: ContactRequest) -> int:
            campaign = self.campaigns.get(r.campaign) if r.campaign else None
            return campaign.priority if campaign else r.priority

        def score(r: ContactRequest) -> float:
            campaign = self.campaigns.get(r.campaign) if r.campaign else None
            scores = profile.get("scores", {})
            if campaign is None or campaign.product is None or campaign.product not in scores:
                return -1.0
            return float(scores[campaign.product])

        ordered = sorted(group, key=lambda r: (-priority(r), -score(r), r.id))
        out: dict[str, tuple[str, int | None]] = {}
        winner = None
        for r in ordered:
            competes = self.arbitrate and r.kind == "notify"  # tasks, and everything without a window, go alone
            if competes and winner is not None:
                out[r.id] = (f"lost_arbitration:{winner}", None)
                continue
            out[r.id] = self.check(customer, r, now)
            if out[r.id][0] == "sent":
                winner = r.id if competes else winner
                self.history.append(Sent(customer, r.id, now, r.kind, r.channel, r.campaign, r.rule, r.content))
        return out

    def check(self, customer: str, r: ContactRequest, now: int) -> tuple[str, int | None]:
        profile = self.profiles[customer]
        campaign = self.campaigns.get(r.campaign) if r.campaign else None
        mine = [s for s in self.history if s.customer == customer]
        # 1. opt-outs
        if "*" in self.optouts[customer] or r.channel in self.optouts[customer]:
            return "suppressed:opt_out", None
        # 2. quiet hours
        release = self.quiet_release(r, profile, campaign, now)
        if release is not None:
            if campaign is not None and campaign.quiet_hours in ("hold", "drop"):
                action = campaign.quiet_hours
            else:
                action = self.policy.quiet_hours.action  # type: ignore[union-attr]
            return ("held:quiet_hours", release) if action == "hold" else ("suppressed:quiet_hours", None)
        # 3. de-dup
        if campaign is not None and campaign.dedupe_days is not None:
            days = campaign.dedupe_days
        else:
            days = self.policy.dedupe_days
        if r.campaign is not None and days > 0:
            for s in mine:
                if s.campaign != r.campaign or s.content != r.content or s.at <= now - days * DAY:
                    continue
                if campaign is not None and campaign.dedupe_scope == "channel" and s.channel != r.channel:
                    continue
                return "suppressed:dedupe", None
        # 4. caps, in order
        for cap in self.policy.caps:
            if r.kind not in cap.kinds:
                continue
            if cap.scope == "channel" and r.channel != cap.channel:
                continue
            if cap.scope == "campaign" and r.campaign is None:
                continue
            if cap.scope == "rule" and r.rule is None:
                continue
            tier = profile.get(cap.tier_attribute)
            limit = cap.max_by_tier[tier] if tier in cap.max_by_tier else cap.max
            used = 0
            for s in mine:
                if s.at <= now - cap.window or s.kind not in cap.kinds:
                    continue
                if cap.scope == "channel" and s.channel != cap.channel:
                    continue
                if cap.scope == "campaign" and s.campaign != r.campaign:
                    continue
                if cap.scope == "rule" and s.rule != r.rule:
                    continue
                used += 1
            if used >= limit:
                return f"suppressed:cap:{cap.name}", None
        # 5. capacity (every customer's sends on the channel)
        capacity = self.policy.capacity.get(r.channel)
        if capacity is not None:
            full = False
            for limit, window in ((capacity.per_minute, MINUTE), (capacity.per_hour, HOUR), (capacity.per_day, DAY)):
                sends = [s for s in self.history if s.channel == r.channel and s.at > now - window]
                if limit is not None and len(sends) >= limit:
                    full = True
            if full:
                if now - r.requested_at >= capacity.deadline:
                    return "suppressed:capacity", None
                return "held:capacity", now + MINUTE
        return "sent", None

    def quiet_release(self, r: ContactRequest, profile: dict, campaign: Campaign | None, now: int) -> int | None:
        quiet = self.policy.quiet_hours
        if quiet is None or r.kind == "task":
            return None
        if campaign is not None and campaign.quiet_hours == "ignore":
            return None
        if quiet.channels is not None and r.channel not in quiet.channels:
            return None
        name = profile.get("timezone")
        try:
            zone = ZoneInfo(name) if isinstance(name, str) else ZoneInfo(quiet.timezone)
        except (KeyError, ValueError):
            zone = ZoneInfo(quiet.timezone)
        start, end = (int(x[:2]) * 60 + int(x[3:]) for x in (quiet.start, quiet.end))
        minutes = set(range(start, end)) if start < end else set(range(start, 1440)) | set(range(0, end))

        def quiet_at(t: int) -> bool:
            local = datetime.fromtimestamp(t / 1000, zone)
            return local.hour * 60 + local.minute in minutes

        if not quiet_at(now):
            return None
        t = (now // MINUTE + 1) * MINUTE
        while quiet_at(t):  # walk forward to the first minute outside them
            t += MINUTE
        return t


# -- the property ----------------------------------------------------------------------------


@settings(max_examples=250, deadline=None)
@given(worlds())
def test_decide_matches_the_brute_force_model(world: World) -> None:
    rules = PolicyRules.combine([world.policy], world.campaigns)
    model = Model(world.policy, world.campaigns, world.profiles, world.optouts)
    ledger: dict[str, list[Contact]] = defaultdict(list)  # what the engine returned, fed back
    held: dict[str, list[tuple[int, ContactRequest]]] = defaultdict(list)
    now = world.start
    n = 0
    for customer, advance, specs in world.steps:
        pending = [(at, r.customer) for rs in held.values() for at, r in rs]
        if advance == NEXT_RELEASE and pending:
            at, customer = min(pending)
            now = max(now, at)
        elif advance != NEXT_RELEASE:
            now += advance
        group = []
        for kind, channel, campaign, content, rule, priority in specs:
            n += 1
            if kind == "task":
                channel, content = f"task:{channel}", f"{channel}/{content}"
            group.append(ContactRequest(f"q{n:03d}", customer, kind, channel, content, campaign, rule, priority, now))
        due = [r for at, r in held[customer] if at <= now]
        held[customer] = [(at, r) for at, r in held[customer] if at > now]
        group += due  # held requests are offered again once due (requested_at unchanged)
        if not group:
            continue

        since = now - rules.longest_window_ms  # what the ledger reads
        sends = {
            ch: tuple(c.at for cs in ledger.values() for c in cs if c.channel == ch and c.at >= now - DAY)
            for ch in rules.capacity
        }
        view = CustomerView(
            contacts=tuple(c for c in ledger[customer] if c.at >= since),
            profile=world.profiles[customer],
            opted_out=world.optouts[customer],
            channel_sends=sends,
        )
        decisions, contacts = decide(group, view, rules, now)
        expected = model.decide(customer, group, now)

        got = {d.id: (d.outcome, d.release_at) for d in decisions}
        assert got == expected, f"at {now} for {customer}: {group}"
        assert all(d.at == now and d.customer == customer for d in decisions)
        sent = [d.id for d in decisions if d.outcome == "sent"]
        assert [c.id for c in contacts] == sent and all(c.at == now for c in contacts)
        by_id = {r.id: r for r in group}
        for c in contacts:
            r = by_id[c.id]
            assert (c.kind, c.channel, c.campaign, c.rule, c.content) == (
                r.kind,
                r.channel,
                r.campaign,
                r.rule,
                r.content,
            )
        ledger[customer] += contacts
        for d in decisions:
            if not d.final:
                assert d.release_at is not None and d.release_at > now
                held[customer].append((d.release_at, by_id[d.id]))


# -- quiet hours -----------------------------------------------------------------------------


def ms(*args: int) -> int:
    return int(datetime(*args, tzinfo=timezone.utc).timestamp() * 1000)


def note(i: str, customer: str = "c", **kw: Any) -> ContactRequest:
    return ContactRequest(i, customer, kw.pop("kind", "notify"), kw.pop("channel", "sms"), kw.pop("content", "t"), **kw)


# 21:00-08:00 in New York by default; the customer in Shanghai. At 14:00 UTC on 10 March
# 2025 it is 22:00 in Shanghai (inside) and 10:00 in New York (outside).
NIGHT = QuietHours(start="21:00", end="08:00", timezone="America/New_York")
SHANGHAI = {"timezone": "Asia/Shanghai"}
AT = ms(2025, 3, 10, 14, 0)
SHANGHAI_8AM = ms(2025, 3, 11, 0, 0)


def test_quiet_hours_across_midnight_follow_the_profile_zone_over_the_default() -> None:
    rules = PolicyRules(quiet_hours=NIGHT)
    [held], contacts = decide([note("a")], CustomerView(profile=SHANGHAI), rules, AT)
    assert (held.outcome, held.release_at, contacts) == ("held:quiet_hours", SHANGHAI_8AM, [])
    # the same moment for a customer without a zone: 10:00 in New York, outside
    [sent], contacts = decide([note("a")], CustomerView(), rules, AT)
    assert sent.outcome == "sent" and len(contacts) == 1
    # an unknown zone falls back to the policy's
    [sent], _ = decide([note("a")], CustomerView(profile={"timezone": "Nowhere/Land"}), rules, AT)
    assert sent.outcome == "sent"
    # after midnight in Shanghai (02:00, 18:00 UTC) still quiet, still until 08:00
    [held], _ = decide([note("a")], CustomerView(profile=SHANGHAI), rules, ms(2025, 3, 10, 18, 0))
    assert (held.outcome, held.release_at) == ("held:quiet_hours", SHANGHAI_8AM)
    # one millisecond before the end: quiet; at the end: sent
    [held], _ = decide([note("a")], CustomerView(profile=SHANGHAI), rules, SHANGHAI_8AM - 1)
    assert (held.outcome, held.release_at) == ("held:quiet_hours", SHANGHAI_8AM)
    [sent], _ = decide([note("a")], CustomerView(profile=SHANGHAI), rules, SHANGHAI_8AM)
    assert sent.outcome == "sent"
    # the start is inclusive: 21:00 Shanghai is 13:00 UTC
    assert decide([note("a")], CustomerView(profile=SHANGHAI), rules, ms(2025, 3, 10, 13, 0))[0][0].outcome == (
        "held:quiet_hours"
    )
    assert decide([note("a")], CustomerView(profile=SHANGHAI), rules, ms(2025, 3, 10, 12, 59))[0][0].outcome == "sent"


def test_quiet_hours_drop_ignore_tasks_and_channels() -> None:
    drop = PolicyRules(quiet_hours=NIGHT.model_copy(update={"action": "drop"}))
    [d], contacts = decide([note("a")], CustomerView(profile=SHANGHAI), drop, AT)
    assert (d.outcome, d.release_at, contacts) == ("suppressed:quiet_hours", None, [])

    campaigns = {
        "loud": Campaign(name="loud", quiet_hours="ignore"),
        "held": Campaign(name="held", quiet_hours="hold"),
        "dropped": Campaign(name="dropped", quiet_hours="drop"),
    }
    hold = PolicyRules(quiet_hours=NIGHT, campaigns=campaigns)
    drop = PolicyRules(quiet_hours=drop.quiet_hours, campaigns=campaigns)
    view = CustomerView(profile=SHANGHAI)
    assert decide([note("a", campaign="loud")], view, hold, AT)[0][0].outcome == "sent"
    assert decide([note("a", campaign="loud")], view, drop, AT)[0][0].outcome == "sent"
    assert decide([note("a", campaign="held")], view, drop, AT)[0][0].outcome == "held:quiet_hours"
    assert decide([note("a", campaign="dropped")], view, hold, AT)[0][0].outcome == "suppressed:quiet_hours"
    # tasks are never quiet
    task = note("t", kind="task", channel="task:callback", content="callback/call")
    assert decide([task], view, hold, AT)[0][0].outcome == "sent"
    assert decide([task], view, drop, AT)[0][0].outcome == "sent"
    # only the listed channels
    sms_only = PolicyRules(quiet_hours=NIGHT.model_copy(update={"channels": ["sms"]}))
    assert decide([note("a", channel="email")], view, sms_only, AT)[0][0].outcome == "sent"
    assert decide([note("a", channel="sms")], view, sms_only, AT)[0][0].outcome == "held:quiet_hours"


def test_a_held_candidate_does_not_win_the_next_one_is_tried() -> None:
    campaigns = {"night": Campaign(name="night", priority=90, quiet_hours="policy"), "day": Campaign(name="day")}
    rules = PolicyRules(quiet_hours=NIGHT.model_copy(update={"channels": ["sms"]}), campaigns=campaigns)
    group = [note("a", campaign="night"), note("b", campaign="day", channel="email")]
    decisions, contacts = decide(group, CustomerView(profile=SHANGHAI), rules, AT)
    assert [(d.id, d.outcome) for d in decisions] == [("a", "held:quiet_hours"), ("b", "sent")]
    assert [c.id for c in contacts] == ["b"]


def test_quiet_hours_ending_in_a_daylight_saving_gap_release_at_the_first_minute_outside() -> None:
    rules = PolicyRules(quiet_hours=QuietHours(start="01:00", end="02:30", timezone="America/New_York"))
    now = ms(2025, 3, 9, 6, 30)  # 01:30 EST; at 07:00 UTC the clocks jump from 02:00 EST to 03:00 EDT
    [held], _ = decide([note("a")], CustomerView(), rules, now)
    assert held.outcome == "held:quiet_hours"
    assert decide([note("a")], CustomerView(), rules, ms(2025, 3, 9, 7, 0))[0][0].outcome == "sent"  # 03:00 EDT
    assert held.release_at == ms(2025, 3, 9, 7, 0)


def test_quiet_hours_with_start_equal_to_end_never_hold_forever() -> None:
    try:
        quiet = QuietHours(start="08:00", end="08:00")
    except ValueError:
        return  # rejected by the document: fine
    rules = PolicyRules(quiet_hours=quiet)
    now = ms(2025, 3, 10, 12, 0)
    for _ in range(3):
        [d], _ = decide([note("a")], CustomerView(), rules, now)
        if d.outcome == "sent":
            return
        assert d.release_at is not None
        now = d.release_at
    raise AssertionError(f"still {d.outcome} after three releases")


# -- caps ------------------------------------------------------------------------------------


def sent_at(i: str, at: int, **kw: Any) -> Contact:
    r = note(i, **kw)
    return Contact(r.id, at, r.kind, r.channel, r.campaign, r.rule, r.content)


def test_rolling_cap_windows_and_tiers() -> None:
    cap = Cap(name="weekly", window="7d", max=2, max_by_tier={"gold": 1})
    rules = PolicyRules(caps=(cap,))
    now = ms(2025, 3, 10, 12, 0)
    view = CustomerView(contacts=(sent_at("x", now - 7 * DAY + 1), sent_at("y", now - DAY)))
    assert decide([note("a")], view, rules, now)[0][0].outcome == "suppressed:cap:weekly"
    # one millisecond later the oldest has left the rolling window
    assert decide([note("a")], view, rules, now + 1)[0][0].outcome == "sent"
    gold = CustomerView(contacts=(sent_at("y", now - DAY),), profile={"tier": "gold"})
    assert decide([note("a")], gold, rules, now)[0][0].outcome == "suppressed:cap:weekly"
    # tasks are not counted nor capped by a notify cap
    tasks = CustomerView(contacts=(sent_at("t1", now - 1, kind="task"), sent_at("t2", now - 1, kind="task")))
    assert decide([note("a")], tasks, rules, now)[0][0].outcome == "sent"


def test_a_campaign_cap_does_not_apply_to_requests_without_a_campaign() -> None:
    now = ms(2025, 3, 10, 12, 0)
    for scope in ("campaign", "rule"):
        rules = PolicyRules(caps=(Cap(name="none", scope=scope, window="1d", max=0),))
        assert decide([note("a")], CustomerView(), rules, now)[0][0].outcome == "sent"


# -- capacity --------------------------------------------------------------------------------


def test_capacity_holds_for_a_minute_then_drops_past_the_deadline() -> None:
    rules = PolicyRules(capacity={"sms": Capacity(per_minute=2, per_day=5, deadline="10m")})
    now = ms(2025, 3, 10, 12, 0)

    def busy_at(t: int) -> CustomerView:
        return CustomerView(channel_sends={"sms": (t - 59_999, t - 1_000)})

    busy = busy_at(now)
    request = note("a", requested_at=now - 5 * MINUTE)
    [d], contacts = decide([request], busy, rules, now)
    assert (d.outcome, d.release_at, contacts) == ("held:capacity", now + MINUTE, [])
    # other channels are not limited
    assert decide([note("e", channel="email")], busy, rules, now)[0][0].outcome == "sent"
    # the deadline (10m) counts from when the request first reached the policy
    later = now + 5 * MINUTE
    [d], _ = decide([request], busy_at(later), rules, later)
    assert (d.outcome, d.release_at) == ("suppressed:capacity", None)
    [d], _ = decide([request], busy_at(later - 1), rules, later - 1)
    assert (d.outcome, d.release_at) == ("held:capacity", later - 1 + MINUTE)
    # once a send leaves the minute it goes
    calm = CustomerView(channel_sends={"sms": (now - MINUTE, now - 1_000)})
    assert decide([request], calm, rules, now)[0][0].outcome == "sent"
    # the day's limit
    day = CustomerView(channel_sends={"sms": tuple(now - h * HOUR for h in range(1, 6))})
    assert decide([request], day, rules, now)[0][0].outcome == "held:capacity"
    # a request without requested_at counts from now: never past its deadline on the first try
    assert decide([note("b")], busy, rules, now)[0][0].outcome == "held:capacity"


# -- arbitration -----------------------------------------------------------------------------

ARBITRATION_RULES = PolicyRules(
    arbitrate=True,
    caps=(Cap(name="daily", scope="channel", channel="sms", window="1d", max=1),),
    campaigns={
        "hi": Campaign(name="hi", priority=90, product="card"),
        "hi2": Campaign(name="hi2", priority=90, product="loan"),
        "lo": Campaign(name="lo", priority=10),
    },
)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["hi", "hi2", "lo", None]), st.sampled_from(["sms", "email"]), st.integers(0, 99)),
        min_size=1,
        max_size=6,
    ),
    st.booleans(),
    st.randoms(use_true_random=False),
)
def test_arbitration_does_not_depend_on_arrival_order(specs: list, capped: bool, rnd: Any) -> None:
    group = [note(f"r{i}", campaign=c, channel=ch, priority=p) for i, (c, ch, p) in enumerate(specs)]
    now = ms(2025, 3, 10, 12, 0)
    view = CustomerView(
        contacts=(sent_at("old", now - HOUR, channel="sms"),) if capped else (),
        profile={"scores": {"card": 0.2, "loan": 0.7}},
    )
    first = decide(group, view, ARBITRATION_RULES, now)
    orders = list(itertools.permutations(group)) if len(group) <= 4 else [rnd.sample(group, len(group))] * 30
    for order in orders:
        assert decide(list(order), view, ARBITRATION_RULES, now) == first
    assert sum(d.outcome == "sent" for d in first[0]) <= 1


def test_arbitration_order_priority_then_score_then_id() -> None:
    now = ms(2025, 3, 10, 12, 0)
    view = CustomerView(profile={"scores": {"card": 0.2, "loan": 0.7}})
    group = [note("a", campaign="lo"), note("b", campaign="hi"), note("c", campaign="hi2"), note("d", priority=95)]
    decisions, _ = decide(group, view, ARBITRATION_RULES, now)
    assert [(d.id, d.outcome) for d in decisions] == [
        ("d", "sent"),  # no campaign: the action's own priority, 95
        ("c", "lost_arbitration:d"),  # 90, loan scores 0.7
        ("b", "lost_arbitration:d"),  # 90, card scores 0.2
        ("a", "lost_arbitration:d"),
    ]
    tied = [note("z", campaign="hi"), note("y", campaign="hi")]
    assert [d.id for d in decide(tied, view, ARBITRATION_RULES, now)[0]] == ["y", "z"]


# -- replays ---------------------------------------------------------------------------------


def test_a_replay_returns_the_recorded_decision_and_counts_nothing_twice() -> None:
    rules = PolicyRules(caps=(Cap(name="daily", window="1d", max=1),))
    then, now = ms(2025, 3, 10, 12, 0), ms(2025, 3, 10, 12, 5)
    [first], contacts = decide([note("a")], CustomerView(), rules, then)
    assert first.outcome == "sent"
    replayed = CustomerView(contacts=tuple(contacts), decided={"a": first})
    decisions, added = decide([note("a")], replayed, rules, now)
    assert decisions == [first] and decisions[0] is first and added == []
    # recorded suppressions too, even if the policy would now let it through
    lost = Decision("b", "c", "suppressed:cap:daily", then)
    decisions, added = decide([note("b")], CustomerView(decided={"b": lost}), rules, now)
    assert decisions == [lost] and added == []
