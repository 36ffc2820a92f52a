"""One part's customers: who they are (segment, age, gender, wealth, tier), their latent
preferences (each in 0..1, correlated with age, gender and wealth), where they live and work,
their habits, and the customers table's columns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from runtime.batch.draws import inverse_cdf, labels, member_of, preference_weights, sigmoid
from runtime.batch.world import CAR, FAMILY, KIND, MUSIC, SPORTS, TIMEZONE, TRAVEL, VIDEO, World

TIERS = ("bronze", "silver", "gold", "platinum")
_ARPU_BY_TIER = np.array([45.0, 88.0, 158.0, 298.0])
PLANS = ("prepaid", "4g-basic", "5g-basic", "5g-plus")
BRANDS = ("huawei", "apple", "xiaomi", "oppo", "vivo", "honor", "samsung")
BANKS = ("icbc", "ccb", "boc", "abc", "bocom", "cmb", "spdb")
STUDENT, WORKER, RETIREE, AT_HOME = range(4)
_BIJECTION = 2_654_435_761  # coprime with 7e9 and 1e12: i -> i * m + c mod M never repeats

# Where people go when free: place kind, base weight, weight per unit of a preference.
LEISURE = (
    ("shopping-mall", 1.0, {FAMILY: 0.5}),
    ("outlet", 0.15, {}),
    ("fitness-centre", 0.1, {SPORTS: 1.6}),
    ("football", 0.02, {SPORTS: 0.8}),
    ("park", 0.3, {FAMILY: 0.8, TRAVEL: 0.3}),
    ("museum", 0.08, {TRAVEL: 0.5}),
    ("cinema", 0.2, {VIDEO: 1.2}),
    ("ktv", 0.08, {MUSIC: 1.2}),
    ("car-dealership", 0.01, {CAR: 0.5}),
    ("general-hospital", 0.04, {}),  # and more for retirees
)


@dataclass
class People:
    """One part's customers, as columns (row ``i`` is the part's ``i``-th customer)."""

    index: np.ndarray  # global, 0-based: the customer_id is c{index + 1:07d}
    segment: np.ndarray  # STUDENT, WORKER, RETIREE, AT_HOME
    age: np.ndarray
    male: np.ndarray
    wealth: np.ndarray  # about standard normal
    tier: np.ndarray  # index into TIERS
    prefs: np.ndarray  # (n, len(PREFERENCES)), each in 0..1
    home_place: np.ndarray
    home_cell: np.ndarray
    work_place: np.ndarray  # -1: no regular workplace
    work_cell: np.ndarray
    leave_min: np.ndarray  # habits: when they leave for work, leave work, how long the commute is
    off_min: np.ndarray
    commute_min: np.ndarray
    leisure: np.ndarray  # (n, len(LEISURE)) weights
    favourite: np.ndarray  # (n, len(LEISURE)) in [0, 1): the place of a kind one usually goes to
    trip_day: np.ndarray  # the day one flies abroad, -1: not in this period
    trip_days: np.ndarray  # days away after it


def build_people(rng: np.random.Generator, world: World, lo: int, hi: int) -> People:
    """Customers ``lo`` to ``hi`` (global, 0-based): who they are, their preferences, their home
    and workplace, their habits and whether and when they fly abroad in the period."""
    n = hi - lo
    segment = rng.choice(4, n, p=[0.08, 0.70, 0.17, 0.05])
    age = np.select(
        [segment == STUDENT, segment == WORKER, segment == RETIREE],
        [rng.integers(18, 24, n), 23 + rng.beta(2, 3, n) * 37, rng.integers(60, 86, n)],
        rng.integers(25, 56, n),
    ).astype(np.int64)
    male = rng.random(n) < 0.5
    wealth = rng.normal(0, 1, n) + 0.5 * np.exp(-(((age - 42) / 12) ** 2)) - 0.8 * (segment == STUDENT)
    tier = np.searchsorted([0.1, 0.95, 1.75], wealth)  # about 45 / 30 / 18 / 7 %
    prefs = _preferences(rng, age, male, wealth)
    band = np.clip(np.rint(3 + wealth + rng.normal(0, 0.7, n)), 1, 5).astype(np.int64)
    home_place = member_of(world.kind_first, world.kind_count, KIND["estate-1"] + band - 1, rng.random(n))
    grade_a = rng.random(n) < sigmoid(-0.8 + 1.2 * wealth)
    work_kind = np.where(grade_a, KIND["grade-a-tower"], KIND["grade-b-tower"])
    work_kind = np.where(segment == STUDENT, KIND["university"], work_kind)
    works = (segment == STUDENT) | ((segment == WORKER) & (rng.random(n) < 0.92))
    work_place = np.where(works, member_of(world.kind_first, world.kind_count, work_kind, rng.random(n)), -1)
    work_cell = member_of(world.place_first_cell, world.place_cell_count, np.maximum(work_place, 0), rng.random(n))
    leisure = preference_weights(LEISURE, prefs)
    leisure[:, -1] += 0.25 * (segment == RETIREE)
    trip_p = (0.02 + 0.6 * prefs[:, TRAVEL] ** 2) * (0.6 + 0.3 * tier) * world.days / 30
    travels = (rng.random(n) < np.minimum(0.95, trip_p)) & (segment != STUDENT)
    return People(
        index=np.arange(lo, hi),
        segment=segment,
        age=age,
        male=male,
        wealth=wealth,
        tier=tier,
        prefs=prefs,
        home_place=home_place,
        home_cell=member_of(world.place_first_cell, world.place_cell_count, home_place, rng.random(n)),
        work_place=work_place,
        work_cell=np.where(works, work_cell, -1),
        leave_min=420 + rng.uniform(0, 90, n),
        off_min=1050 + rng.uniform(0, 90, n),
        commute_min=rng.uniform(15, 70, n),
        leisure=leisure,
        favourite=rng.random((n, len(LEISURE))),
        trip_day=np.where(travels, rng.integers(0, world.days, n), -1),
        trip_days=rng.integers(1, 6, n),
    )


def _preferences(rng: np.random.Generator, age: np.ndarray, male: np.ndarray, wealth: np.ndarray) -> np.ndarray:
    """Logit-normal, each shifted by demographics: the young like sports, music and video, the
    well-off travel, invest and drive, people in their thirties and forties have families."""
    young, mid = (35 - age) / 12, np.exp(-(((age - 40) / 10) ** 2))
    logits = np.stack(
        [
            -1.0 + 0.7 * male + 0.4 * young,
            -1.0 + 0.5 * young + 0.2 * ~male,
            -1.3 + 0.6 * wealth + 0.5 * mid,
            -1.3 + 0.6 * wealth + 0.3 * (age - 40) / 15,
            -0.8 + 0.6 * young,
            -1.5 + 1.5 * np.exp(-(((age - 38) / 8) ** 2)),
            -1.6 + 0.5 * wealth + 0.4 * male + 0.6 * mid,
        ],
        axis=1,
    )
    return sigmoid(logits + rng.normal(0, 1, logits.shape))


def customer_ids(index: np.ndarray) -> pa.Array:
    """``c0000001`` for index 0: seven digits, more when there are more customers."""
    digits = pc.utf8_lpad(pc.cast(pa.array(index + 1), pa.string()), 7, "0")
    return pc.binary_join_element_wise("c", digits, "")


def _phones_and_imeis(index: np.ndarray) -> tuple[pa.Array, pa.Array]:
    """Unique by construction: both are bijections of the global customer index. IMEIs are 86
    plus twelve digits plus the Luhn check digit."""
    phone = 13_000_000_000 + (index * _BIJECTION + 12_345_678_901) % 7_000_000_000
    body = 86 * 10**12 + (index * _BIJECTION + 987_654_321_987) % 10**12
    digits = (body[:, None] // 10 ** np.arange(14)) % 10  # rightmost first: Luhn doubles those
    doubled = np.where(np.arange(14) % 2 == 0, digits * 2 - 9 * (digits >= 5), digits)
    imei = body * 10 + (10 - doubled.sum(axis=1) % 10) % 10
    return pc.cast(pa.array(phone), pa.string()), pc.cast(pa.array(imei), pa.string())


def customer_columns(rng: np.random.Generator, world: World, people: People, ids: pa.Array) -> dict[str, Any]:
    """The customers table's columns by name (``layout.CUSTOMERS``), plus ``_trend`` and ``_plan``
    for the tables drawn after it."""
    n, tier, prefs = people.index.size, people.tier, people.prefs
    trend = rng.choice([-1, 0, 1], n, p=[0.25, 0.5, 0.25]) * rng.uniform(0.03, 0.08, n)
    last = _ARPU_BY_TIER[tier] * rng.lognormal(0, 0.25, n)
    arpu = last[:, None] * (1 + trend[:, None]) ** (np.arange(6) - 5) * rng.lognormal(0, 0.04, (n, 6))
    plan = np.rint(0.6 + 0.7 * tier + 1.5 * prefs[:, VIDEO] + rng.normal(0, 0.6, n) - (people.segment == STUDENT))
    plan = np.clip(plan, 0, len(PLANS) - 1).astype(np.int64)
    apple = 0.15 + 0.15 * tier + 0.1 * (people.age < 30)
    brands = np.column_stack([np.full(n, 0.3), apple, *(np.full(n, w) for w in (0.2, 0.12, 0.12, 0.1, 0.04))])
    banks = np.tile([0.25, 0.2, 0.15, 0.12, 0.08, 0.1, 0.1], (n, 1))
    banks[:, BANKS.index("cmb")] += 0.15 * tier
    phone, imei = _phones_and_imeis(people.index.astype(np.int64))
    working = (people.segment == WORKER) & (people.work_place >= 0)
    return {
        "customer_id": ids,
        "phone": phone,
        "imei": imei,
        "age": people.age,
        "gender": labels(("f", "m"), people.male.astype(np.int8)),
        "tier": labels(TIERS, tier),
        "plan": labels(PLANS, plan),
        "arpu": pa.ListArray.from_arrays(
            pa.array(np.arange(0, 6 * n + 1, 6, dtype=np.int32)), pa.array(np.round(arpu, 2).ravel(), pa.float32())
        ),
        "data_gb": np.round(
            (3 + 30 * prefs[:, VIDEO] + 4 * tier + 8 * (people.age < 30)) * rng.lognormal(0, 0.3, n), 2
        ),
        "voice_min": np.round(rng.gamma(3, 80 + 20 * tier, n), 1),
        "sms_count": rng.poisson(15 + 5 * tier, n),
        "device_brand": labels(BRANDS, inverse_cdf(brands, rng.random(n))),
        "car_owner": rng.random(n) < sigmoid(-1.2 + 3 * (prefs[:, CAR] - 0.3) + 0.7 * people.wealth),
        "housing_fund": rng.random(n) < np.where(working, 0.8, 0.03),
        "main_bank": labels(BANKS, inverse_cdf(banks, rng.random(n))),
        "has_card": rng.random(n) < 0.08 + 0.05 * tier,  # held before the adoption history
        "home_cell": labels(world.cell_ids, people.home_cell),
        "work_cell": pc.take(world.cell_ids, pa.array(people.work_cell, mask=people.work_cell < 0)),
        "timezone": pa.array(np.full(n, TIMEZONE)),
        "_trend": np.sign(trend),  # not columns: for the tables that follow
        "_plan": plan,
    }
