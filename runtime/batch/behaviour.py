"""What one part's customers did over the period, driven by their preferences: signalling stays,
app and web sessions, hotline calls, the products they were offered and took, and the past
campaigns that contacted them.

A customer-day of stays follows one of five plans, as eight slots (absent slots are dropped)::

    slot       0     1        2          3          4        5         6        7
    work       home  commute  work       work       commute  evening   commute  home
    leisure    home  commute  place 1    place 2    commute  evening   commute  home
    domestic   home  commute  hub        (away)     -        hub       commute  home
    abroad     home  commute  intl hall  (no stays until the trip ends)
    away       (no stays)

Evenings are optional: a leisure place or, for attendees, the event's venue from before the
event starts until after it ends. Weekdays are Monday to Friday; public holidays (the period
starts on National Day by default) are not modelled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from runtime.batch.draws import inverse_cdf, labels, member_of, preference_weights, sigmoid
from runtime.batch.people import LEISURE, PLANS, People
from runtime.batch.world import (
    CAR,
    DAY_MS,
    FAMILY,
    FINANCE,
    KIND,
    MUSIC,
    PRODUCT,
    PRODUCTS,
    SPORTS,
    TRAVEL,
    VIDEO,
    World,
)

# campaign, product, channel, days before the period starts
_CAMPAIGNS = (
    ("2026-07-5g-sms", "5g-upgrade", "sms", 80),
    ("2026-08-roaming-push", "roaming-pack", "app-push", 50),
    ("2026-09-wealth-sms", "wealth-beginner", "sms", 25),
    ("2026-09-video-outbound", "video-pack", "outbound-call", 20),
    ("2026-09-card-app", "credit-card", "app-push", 12),
)

# site, base weight, weight per unit of a preference, median duration (s)
_SITES = (
    ("official", 0.3, {FINANCE: 0.6}, 120),
    ("video", 0.5, {VIDEO: 2.0}, 900),
    ("shopping", 0.6, {FAMILY: 0.3}, 300),
    ("sports", 0.1, {SPORTS: 1.5}, 240),
    ("music", 0.1, {MUSIC: 1.5}, 600),
    ("finance", 0.05, {FINANCE: 1.5}, 180),
    ("travel", 0.05, {TRAVEL: 1.2}, 240),
    ("news", 0.5, {}, 180),
    ("social", 1.0, {}, 300),
    ("car", 0.02, {CAR: 1.0}, 200),
    ("education", 0.05, {FAMILY: 1.0}, 300),
)
_MONEY_SITES = (0, 5)  # official and finance: those interested in money stay longer
_HOURLY = np.array([1, 0.5, 0.3, 0.2, 0.2, 0.4, 1, 3, 5, 5, 5, 5, 6, 5, 5, 5, 5, 5, 6, 7, 8, 8, 6, 3])
_SLOTS = 8
_LEISURE_KIND = np.array([KIND[k] for k, _, _ in LEISURE])


# --- stays --------------------------------------------------------------------------------------


class _Picker:
    """Random choices for one part's customers on one day, one value per customer each call."""

    def __init__(self, rng: np.random.Generator, world: World, people: People) -> None:
        self.rng, self.world, self.people, self.n = rng, world, people, people.index.size

    def uniform(self, lo: float, hi: float) -> np.ndarray:
        return self.rng.uniform(lo, hi, self.n)

    def chance(self, p: float | np.ndarray) -> np.ndarray:
        return self.rng.random(self.n) < p

    def cell(self, place: np.ndarray) -> np.ndarray:
        return member_of(self.world.place_first_cell, self.world.place_cell_count, place, self.rng.random(self.n))

    def home(self) -> np.ndarray:
        """Mostly the home cell; sometimes a neighbouring cell of the estate."""
        return np.where(self.chance(0.9), self.people.home_cell, self.cell(self.people.home_place))

    def work(self) -> np.ndarray:
        return np.where(self.chance(0.7), self.people.work_cell, self.cell(np.maximum(self.people.work_place, 0)))

    def road(self) -> np.ndarray:
        """A road cell of the home district: on the way somewhere."""
        district = self.world.place_district[self.people.home_place]
        return member_of(self.world.road_first, self.world.road_count, district, self.rng.random(self.n))

    def leisure_place(self) -> np.ndarray:
        """A kind by preference, then, two times in three, one's usual place of that kind."""
        choice = inverse_cdf(self.people.leisure, self.rng.random(self.n))
        usual = self.people.favourite[np.arange(self.n), choice]
        u = np.where(self.chance(0.65), usual, self.rng.random(self.n))
        return member_of(self.world.kind_first, self.world.kind_count, _LEISURE_KIND[choice], u)

    def place(self, kind: str) -> np.ndarray:
        """A place of the kind (the venue, for kinds with one)."""
        group = np.full(self.n, KIND[kind])
        return member_of(self.world.kind_first, self.world.kind_count, group, self.rng.random(self.n))


@dataclass
class _Plan:
    """One day of every customer: slot ``s`` is ``bounds[:, s]`` to ``bounds[:, s + 1]`` (local
    minutes) at ``cells[:, s]``, where ``valid[:, s]``."""

    bounds: np.ndarray  # (n, _SLOTS + 1)
    cells: np.ndarray  # (n, _SLOTS)
    valid: np.ndarray  # (n, _SLOTS)

    def use(self, rows: np.ndarray, other: _Plan) -> None:
        self.bounds[rows], self.cells[rows], self.valid[rows] = other.bounds[rows], other.cells[rows], other.valid[rows]


def _plan(bounds: list[np.ndarray], cells: list[np.ndarray], valid: tuple[bool, ...] = (True,) * _SLOTS) -> _Plan:
    n = cells[0].size
    columns = [np.broadcast_to(np.asarray(b, float), (n,)) for b in bounds]
    return _Plan(np.column_stack(columns), np.column_stack(cells), np.tile(valid, (n, 1)))


def _leisure_plan(pick: _Picker) -> _Plan:
    leave = 540 + pick.uniform(0, 240)
    arrive = leave + pick.uniform(15, 50)
    end_1 = arrive + pick.uniform(90, 240)
    end_2 = end_1 + pick.chance(0.5) * pick.uniform(60, 150)
    back = end_2 + pick.uniform(15, 50)
    cells = [pick.home(), pick.road(), pick.cell(pick.leisure_place()), pick.cell(pick.leisure_place())]
    return _plan(
        [0, leave, arrive, end_1, end_2, end_2, end_2, back, 1440],
        [*cells, pick.road(), pick.road(), pick.road(), pick.home()],
    )


def _work_plan(pick: _Picker) -> _Plan:
    people = pick.people
    leave = people.leave_min + pick.uniform(-15, 15)
    arrive = leave + people.commute_min * pick.uniform(0.8, 1.3)
    off = people.off_min + pick.uniform(-30, 40)
    back = off + people.commute_min * pick.uniform(0.8, 1.4)
    cells = [pick.home(), pick.road(), pick.work(), pick.work(), pick.road(), pick.road(), pick.road(), pick.home()]
    return _plan([0, leave, arrive, 720 + pick.uniform(-30, 60), off, off, off, back, 1440], cells)


def _domestic_plan(pick: _Picker) -> _Plan:
    """A day trip by plane or train: the hub in the morning and again in the evening."""
    hub = np.where(pick.chance(0.6), pick.place("domestic-hall"), pick.place("railway"))
    leave, back = 360 + pick.uniform(0, 120), 1080 + pick.uniform(0, 180)
    bounds = [0, leave, leave + pick.uniform(30, 70), leave + pick.uniform(100, 170)]
    bounds += [back, back, back + pick.uniform(20, 45), back + pick.uniform(60, 120), 1440]
    cells = [pick.home(), pick.road(), pick.cell(hub), pick.road(), pick.road(), pick.cell(hub)]
    cells += [pick.road(), pick.home()]
    return _plan(bounds, cells, (True, True, True, False, False, True, True, True))


def _abroad_plan(pick: _Picker) -> _Plan:
    leave = 360 + pick.uniform(0, 600)
    arrive = leave + pick.uniform(40, 80)
    gone = arrive + pick.uniform(100, 180)
    cells = [pick.home(), pick.road(), pick.cell(pick.place("intl-hall")), *(pick.home() for _ in range(5))]
    return _plan([0, leave, arrive, *(gone for _ in range(6))], cells, (True, True, True) + (False,) * 5)


def _evenings(pick: _Picker, day: int, plan: _Plan, eligible: np.ndarray) -> None:
    """Some go out after work or their afternoon (slots 4 and 5); event attendees are at the venue
    from before the event starts until after it ends, and leave earlier to get there."""
    world, people, b = pick.world, pick.people, plan.bounds
    start = b[:, 4] + pick.uniform(10, 40)
    end = start + pick.uniform(60, 180)
    place = pick.leisure_place()
    attending = np.zeros(pick.n, bool)
    for e in np.flatnonzero(world.event_day == day):
        fan = people.prefs[:, SPORTS if world.event_sports[e] else MUSIC]
        here = eligible & ~attending & pick.chance(0.004 + 0.25 * fan**3)
        attending |= here
        place[here] = world.event_place[e]
        start[here] = world.event_start_min[e] - pick.uniform(15, 50)[here]
        end[here] = world.event_end_min[e] + pick.uniform(5, 30)[here]
    going = eligible & (attending | pick.chance(0.18))
    b[attending, 4] = np.minimum(b[attending, 4], start[attending] - pick.uniform(15, 40)[attending])
    b[attending, :5] = np.minimum.accumulate(b[attending, :5][:, ::-1], axis=1)[:, ::-1]
    b[going, 5], b[going, 6], b[going, 7] = start[going], end[going], end[going] + pick.uniform(15, 50)[going]
    plan.cells[:, 5] = np.where(going, pick.cell(place), plan.cells[:, 5])
    plan.valid[:, 4:6] &= (going | ~eligible)[:, None]


def _day(pick: _Picker, day: int) -> _Plan:
    people, world = pick.people, pick.world
    weekday = (world.first_weekday + day) % 7 < 5
    trip = people.trip_day >= 0
    away = trip & (people.trip_day < day) & (day <= people.trip_day + people.trip_days)
    abroad = people.trip_day == day
    works = weekday & (people.work_place >= 0) & ~away & ~abroad
    domestic = works & pick.chance(0.004 + 0.04 * people.prefs[:, TRAVEL])
    plan = _leisure_plan(pick)
    plan.use(works & ~domestic, _work_plan(pick))
    plan.use(domestic, _domestic_plan(pick))
    plan.use(abroad, _abroad_plan(pick))
    plan.valid[away] = False
    _evenings(pick, day, plan, ~(domestic | away | abroad))
    plan.bounds = np.maximum.accumulate(np.clip(plan.bounds, 0, 1440), axis=1)
    return plan


def draw_stays(rng: np.random.Generator, world: World, people: People) -> tuple[np.ndarray, ...]:
    """(customer, cell, start_ms, end_ms) of every stay, by customer then time. Slots shorter
    than a minute are dropped, so an absent slot leaves no row and no gap."""
    n, days = people.index.size, world.days
    seconds = np.empty((n, days, _SLOTS + 1), np.int32)
    cells = np.empty((n, days, _SLOTS), np.int32)
    keep = np.empty((n, days, _SLOTS), bool)
    pick = _Picker(rng, world, people)
    for d in range(days):
        plan = _day(pick, d)
        seconds[:, d] = plan.bounds * 60
        cells[:, d] = plan.cells
        keep[:, d] = plan.valid & (np.diff(seconds[:, d], axis=1) >= 60)
    who = np.broadcast_to(np.arange(n, dtype=np.int32)[:, None, None], keep.shape)[keep]
    day_ms = world.start_ms + np.arange(days, dtype=np.int64) * DAY_MS
    day_ms = np.broadcast_to(day_ms[None, :, None], keep.shape)[keep]
    start = day_ms + seconds[:, :, :-1][keep].astype(np.int64) * 1000
    return who, cells[keep], start, day_ms + seconds[:, :, 1:][keep].astype(np.int64) * 1000


# --- sessions, calls, adoption, contacts --------------------------------------------------------


def draw_sessions(rng: np.random.Generator, world: World, people: People, data_gb: np.ndarray) -> dict[str, Any]:
    """App and web sessions: heavier data users have more; sites follow preferences."""
    n, days = people.index.size, world.days
    per_day = rng.poisson(np.clip(0.8 + data_gb / 12, 0.5, 6)[:, None], (n, days))
    slot = np.repeat(np.arange(n * days, dtype=np.int64), per_day.ravel())
    who, day, m = slot // days, slot % days, slot.size
    site = inverse_cdf(preference_weights(_SITES, people.prefs), rng.random(m), who)
    hour = np.searchsorted(np.cumsum(_HOURLY) / _HOURLY.sum(), rng.random(m), side="right")
    start = world.start_ms + day * DAY_MS + (hour * 3600 + rng.integers(0, 3600, m)) * 1000
    median = np.array([s[3] for s in _SITES], float)[site]
    money = np.isin(site, _MONEY_SITES)
    median[money] *= 0.6 + 2.0 * people.prefs[who[money], FINANCE]
    duration = np.maximum(5, median * rng.lognormal(0, 0.8, m)).astype(np.int32)
    order = np.lexsort((start, who))
    return {
        "who": who[order],
        "kind": labels(("web", "app"), (rng.random(m) < 0.7)[order].astype(np.int8)),
        "site": labels([s[0] for s in _SITES], site[order]),
        "start_ms": start[order],
        "duration_s": duration[order],
    }


def draw_calls(rng: np.random.Generator, world: World, people: People, trend: np.ndarray) -> dict[str, Any]:
    """Hotline calls: to the service line (more when ARPU falls) and to the sales line (those
    interested in money ask about products)."""
    scale = world.days / 30
    service = rng.poisson(scale * (0.12 + 0.25 * (trend < 0)))
    sales = rng.poisson(scale * (0.02 + 0.6 * people.prefs[:, FINANCE] ** 2))
    who = np.repeat(np.tile(np.arange(people.index.size), 2), np.concatenate([service, sales]))
    line = np.repeat([0, 1], [service.sum(), sales.sum()])
    m = who.size
    start = world.start_ms + rng.integers(0, world.days, m) * DAY_MS + rng.integers(9 * 3600, 21 * 3600, m) * 1000
    duration = (np.where(line == 1, 300, 180) * rng.lognormal(0, 0.6, m)).astype(np.int32)
    order = np.lexsort((start, who))
    line = labels(("service", "sales"), line[order])
    return {"who": who[order], "line": line, "start_ms": start[order], "duration_s": duration[order]}


def draw_adoption(
    rng: np.random.Generator, world: World, people: People, customers: dict[str, Any]
) -> tuple[dict[str, Any], np.ndarray]:
    """The products each customer was offered in the half year before the period, and whether they
    took them: logistic in the product's preference and the tier. Also (n, products): who took what."""
    n, k = people.index.size, len(PRODUCTS)
    offered = rng.random((n, k)) < 0.45
    basic = customers["_plan"] < PLANS.index("5g-basic")
    offered[:, PRODUCT["5g-upgrade"]] = rng.random(n) < np.where(basic, 0.8, 0.05)
    offered[:, PRODUCT["car-insurance"]] = rng.random(n) < np.where(customers["car_owner"], 0.8, 0.03)
    prefs = people.prefs[:, [p[3] for p in PRODUCTS]]
    logit = np.array([p[4] for p in PRODUCTS]) + np.array([p[5] for p in PRODUCTS]) * prefs
    logit[:, PRODUCT["credit-card"]] += 3.0 * people.prefs[:, TRAVEL]
    logit += 0.25 * people.tier[:, None] + rng.normal(0, 0.5, (n, k))
    adopted = offered & (rng.random((n, k)) < sigmoid(logit))
    who, product = np.nonzero(offered)
    at = world.start_ms - rng.integers(86_400, 180 * 86_400, who.size) * 1000
    table = {
        "who": who,
        "product": labels([p[0] for p in PRODUCTS], product),
        "adopted": adopted[who, product],
        "at_ms": at,
    }
    return table, adopted


def draw_contacts(rng: np.random.Generator, world: World, people: People) -> dict[str, Any]:
    """Past campaigns, each aimed at about a third of the customers with a tenth held out as
    control (not contacted). The contacted respond and convert with their preference; controls
    convert at a quarter of that rate, on their own: the campaigns had real uplift."""
    n, rows = people.index.size, []
    for c, (_, product, _, before) in enumerate(_CAMPAIGNS):
        pref = people.prefs[:, PRODUCTS[PRODUCT[product]][3]]
        who = np.flatnonzero(rng.random(n) < 0.3)
        control = rng.random(who.size) < 0.1
        p_respond = sigmoid(-2.2 + 3.5 * pref[who])
        p_convert = p_respond * sigmoid(-1.2 + 3.0 * pref[who])
        responded = ~control & (rng.random(who.size) < p_respond)
        converted = rng.random(who.size) < np.where(control, 0.25 * p_convert, p_convert / p_respond)
        converted &= control | responded
        at = world.start_ms - before * DAY_MS + rng.integers(9 * 3600, 20 * 3600, who.size) * 1000
        rows.append((who, np.full(who.size, c), at, responded, converted, control))
    who, campaign, at, responded, converted, control = (np.concatenate(col) for col in zip(*rows, strict=True))
    order = np.lexsort((at, who))
    campaign = campaign[order]
    columns = {
        name: labels([c[i] for c in _CAMPAIGNS], campaign) for i, name in enumerate(("campaign", "product", "channel"))
    }
    return {
        "who": who[order],
        **columns,
        "at_ms": at[order],
        "responded": responded[order],
        "converted": converted[order],
        "control": control[order],
    }
