"""Contact allocation: which customers each campaign contacts, maximising the total match score.

``run(data, campaigns, ...)`` reads the match matrix (``jobs/matrix``) and the customers' tiers,
and writes ``DATA/jobs/allocate/plan.parquet`` (``layout.PLAN``) and ``summary.json``. A campaign
is ``{name, product, channel, quota}``; its score for a customer is the matrix score of its product.

The problem (:class:`Problem`, plain numpy arrays, so it is tested without data files)::

    maximise   sum s[i, j] x[i, j]            x[i, j] in {0, 1}; only pairs with s > 0 count
    subject to sum_j x[i, j] <= limit[i]       contacts per customer (by tier)
               sum_{j in g} x[i, j] <= 1        one campaign per customer and product group g
               sum_i x[i, j] <= quota[j]        per campaign
               sum_{i, j in c} x[i, j] <= capacity[c]   per channel

It is a max-weight flow (source -> customer -> (customer, group) -> campaign -> channel -> sink,
capacities limit, 1, 1, quota, capacity), so its LP relaxation has integral vertices:
:func:`optimise` solves that LP with HiGHS (interior point with crossover): the exact optimum.
The job groups campaigns by product: nobody gets the same product offered twice in one plan.

Beyond ``LP_MAX_PAIRS`` candidate pairs (or past ``LP_TIME_LIMIT_S``) it uses a Lagrangian
relaxation of the quotas and capacities instead (:func:`lagrangian`): multipliers from the LP of
a customer sample, refined by subgradient steps on all customers, each customer then choosing its
best reduced-score campaigns (one per group); the choice is repaired to feasibility and topped up
greedily, and the dual value bounds the optimum from above.

Pruning (:func:`candidates`) keeps, per campaign, the customers ranked in the top ``T`` by score,
``T`` = the most contacts any feasible plan makes. Exact: if an optimal plan gave campaign j to a
customer outside its top ``T``, some customer in it would be free for j (not given j or another
campaign of its group, not at its limit): each one that is not holds a contact, and there are
fewer than ``T`` contacts besides that one. Moving the contact there keeps every constraint and
does not lower the total. Greedy never takes such a pair either.

:func:`greedy` is the baseline: all pairs by score, highest first, taken while the constraints
allow. :func:`optimise` never returns less than greedy.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import scipy.sparse as sp
from scipy.optimize import linprog

from runtime.batch import layout
from runtime.batch.runner import JobTimer, run_parts, write_summary, write_table
from runtime.errors import InputError, NotFound

JOB = "allocate"
LP_MAX_PAIRS = 1_000_000  # candidate pairs the exact LP takes (100k x 5, 400k pairs: ~7 s)
LP_TIME_LIMIT_S = 120.0  # past it the LP gives up and the Lagrangian method answers
SAMPLE_CUSTOMERS = 20_000  # customers in the LP that seeds the Lagrange multipliers
SUBGRADIENT_STEPS = 60
INTEGRAL_TOLERANCE = 1e-6


@dataclass(frozen=True)
class Problem:
    """An allocation instance. ``scores[i, j]``: customer i for campaign j (NaN or <= 0: never)."""

    scores: np.ndarray  # (customers, campaigns) float
    limits: np.ndarray  # (customers,) contacts per customer
    quotas: np.ndarray  # (campaigns,) contacts per campaign
    channel: np.ndarray  # (campaigns,) index into capacities
    capacities: np.ndarray  # (channels,) contacts per channel
    group: np.ndarray  # (campaigns,) at most one campaign of a group per customer

    @classmethod
    def of(cls, scores: Any, limits: Any, quotas: Any, channel: Any, capacities: Any, group: Any = None) -> Problem:
        """Validated, as arrays (``group`` None: every campaign its own group); raises
        InputError naming what does not fit."""
        s = np.asarray(scores, dtype=np.float64).reshape(len(scores), -1)
        lim, quo = np.asarray(limits, dtype=np.int64), np.asarray(quotas, dtype=np.int64)
        ch, cap = np.asarray(channel, dtype=np.int64), np.asarray(capacities, dtype=np.int64)
        n, k = s.shape
        groups = np.arange(k) if group is None else np.unique(np.asarray(group), return_inverse=True)[1].ravel()
        if lim.shape != (n,) or quo.shape != (k,) or ch.shape != (k,) or groups.shape != (k,):
            raise InputError(
                f"allocation problem: scores are {n} x {k}, so expected {n} limits and {k} quotas, channels "
                f"and groups; got {lim.shape[0]} limits, {quo.shape[0]} quotas, {ch.shape[0]} channels, "
                f"{groups.shape[0]} groups"
            )
        if k and (ch.min() < 0 or ch.max() >= len(cap)):
            raise InputError(f"allocation problem: channel indices must be in 0..{len(cap) - 1}, got {sorted(set(ch))}")
        if min(lim.min(initial=0), quo.min(initial=0), cap.min(initial=0)) < 0:
            raise InputError("allocation problem: limits, quotas and capacities must be >= 0")
        return cls(s, lim, quo, ch, cap, groups.astype(np.int64))

    @property
    def shape(self) -> tuple[int, int]:
        return self.scores.shape  # type: ignore[return-value]

    def most_contacts(self) -> int:
        """An upper bound on the contacts of any feasible plan."""
        used = np.zeros(len(self.capacities), dtype=np.int64)
        np.add.at(used, self.channel, self.quotas)
        return int(min(np.minimum(used, self.capacities).sum(), self.limits.sum()))


@dataclass(frozen=True)
class Allocation:
    """The chosen (customer, campaign) pairs and how they were found."""

    customer: np.ndarray  # int64
    campaign: np.ndarray  # int64
    total: float
    method: str
    bound: float | None = None  # an upper bound on the optimum, when the method gives one
    seconds: float = 0.0

    def __len__(self) -> int:
        return len(self.customer)


@dataclass(frozen=True)
class Pairs:
    """Candidate (customer, campaign) pairs with their scores."""

    customer: np.ndarray
    campaign: np.ndarray
    score: np.ndarray

    def __len__(self) -> int:
        return len(self.customer)

    def take(self, rows: np.ndarray) -> Pairs:
        return Pairs(self.customer[rows], self.campaign[rows], self.score[rows])

    def by_score(self) -> np.ndarray:
        """Rows ordered by score, highest first (ties: customer, then campaign)."""
        return np.lexsort((self.campaign, self.customer, -self.score))


def candidates(problem: Problem) -> Pairs:
    """The pairs an optimal plan (and greedy) may use: positive score, customer limit > 0,
    campaign quota and channel capacity > 0, and the customer in the campaign's top ``T``."""
    s = problem.scores
    open_ = (problem.quotas > 0) & (problem.capacities[problem.channel] > 0)
    ok = np.isfinite(s) & (s > 0) & (problem.limits > 0)[:, None] & open_[None, :]
    top = problem.most_contacts()
    customers, campaigns = [], []
    for j in range(s.shape[1]):
        rows = np.flatnonzero(ok[:, j])
        if len(rows) > top:
            rows = rows[np.argpartition(-s[rows, j], top - 1)[:top]] if top else rows[:0]
        customers.append(rows)
        campaigns.append(np.full(len(rows), j, dtype=np.int64))
    customer = np.concatenate(customers) if customers else np.zeros(0, np.int64)
    campaign = np.concatenate(campaigns) if campaigns else np.zeros(0, np.int64)
    return Pairs(customer.astype(np.int64), campaign, s[customer, campaign])


class _Left:
    """What is left of every constraint while pairs are taken one by one."""

    def __init__(self, problem: Problem) -> None:
        self.customer = problem.limits.tolist()
        self.campaign = problem.quotas.tolist()
        self.channel = problem.capacities.tolist()
        self.channel_of = problem.channel.tolist()
        self.group_of = problem.group.tolist()
        self.groups = len(problem.group)
        self.offered: set[int] = set()  # customer * groups + group

    def any_open(self) -> bool:
        return any(q > 0 and self.channel[c] > 0 for q, c in zip(self.campaign, self.channel_of, strict=True))

    def take(self, pairs: Pairs, order: np.ndarray, taken: np.ndarray) -> None:
        """Takes the pairs of ``order`` in turn where every constraint allows (marks ``taken``)."""
        customers, campaigns = pairs.customer.tolist(), pairs.campaign.tolist()
        left_i, left_j, left_c, channel_of = self.customer, self.campaign, self.channel, self.channel_of
        group_of, groups, offered = self.group_of, self.groups, self.offered
        if not self.any_open():
            return
        for e in order.tolist():
            i, j = customers[e], campaigns[e]
            c, g = channel_of[j], i * groups + group_of[j]
            if left_i[i] > 0 and left_j[j] > 0 and left_c[c] > 0 and g not in offered and not taken[e]:
                taken[e] = True
                offered.add(g)
                left_i[i] -= 1
                left_j[j] -= 1
                left_c[c] -= 1
                if (left_j[j] == 0 or left_c[c] == 0) and not self.any_open():
                    return


def _allocation(pairs: Pairs, taken: np.ndarray, method: str, started: float, bound: float | None = None) -> Allocation:
    rows = np.flatnonzero(taken)
    total = float(pairs.score[rows].sum())
    return Allocation(pairs.customer[rows], pairs.campaign[rows], total, method, bound, time.perf_counter() - started)


def greedy(problem: Problem, pairs: Pairs | None = None) -> Allocation:
    """The baseline: every pair by score, highest first, taken while the constraints allow."""
    started = time.perf_counter()
    pairs = candidates(problem) if pairs is None else pairs
    taken = np.zeros(len(pairs), dtype=bool)
    _Left(problem).take(pairs, pairs.by_score(), taken)
    return _allocation(pairs, taken, "greedy", started)


def repair(problem: Problem, pairs: Pairs, chosen: np.ndarray, priority: np.ndarray) -> np.ndarray:
    """A feasible plan from a possibly infeasible choice: the chosen pairs by ``priority``
    (highest first) while the constraints allow, then the rest by score, greedily."""
    taken = np.zeros(len(pairs), dtype=bool)
    left = _Left(problem)
    rows = np.flatnonzero(chosen)
    left.take(pairs, rows[np.argsort(-priority[rows], kind="stable")], taken)
    left.take(pairs, pairs.by_score(), taken)
    return taken


def _constraints(problem: Problem, pairs: Pairs) -> tuple[sp.csr_matrix, np.ndarray]:
    """Rows: the customers of the pairs (<= limit), the (customer, group)s with two pairs or more
    (<= 1), then campaigns (<= quota), then channels (<= capacity)."""
    customers, customer_row = np.unique(pairs.customer, return_inverse=True)
    _, offer_row, offer_size = np.unique(
        pairs.customer * len(problem.group) + problem.group[pairs.campaign], return_inverse=True, return_counts=True
    )
    shared = np.flatnonzero(offer_size[offer_row] > 1)
    n, m, k, e = len(customers), int(np.sum(offer_size > 1)), problem.shape[1], len(pairs)
    shared_row = np.cumsum(offer_size > 1)[offer_row[shared]] - 1
    rows = [customer_row, n + shared_row, n + m + pairs.campaign, n + m + k + problem.channel[pairs.campaign]]
    cols = [np.arange(e), shared, np.arange(e), np.arange(e)]
    shape = (n + m + k + len(problem.capacities), e)
    a = sp.csr_matrix((np.ones(3 * e + len(shared)), (np.concatenate(rows), np.concatenate(cols))), shape=shape)
    bounds = [problem.limits[customers], np.ones(m), problem.quotas, problem.capacities]
    return a, np.concatenate(bounds).astype(np.float64)


@dataclass(frozen=True)
class LpSolution:
    x: np.ndarray  # per pair, in 0..1
    optimum: float
    prices: np.ndarray  # multipliers of the campaign rows, then the channel rows (>= 0)


def solve_lp(problem: Problem, pairs: Pairs) -> LpSolution | None:
    """The LP relaxation on ``pairs`` (HiGHS interior point and crossover: a vertex, integral
    here); None when HiGHS does not solve it within ``LP_TIME_LIMIT_S``."""
    rows = problem.shape[1] + len(problem.capacities)
    if not len(pairs):
        return LpSolution(np.zeros(0), 0.0, np.zeros(rows))
    a, b = _constraints(problem, pairs)
    options = {"time_limit": LP_TIME_LIMIT_S}
    result = linprog(-pairs.score, A_ub=a, b_ub=b, bounds=(0, 1), method="highs-ipm", options=options)
    if result.status != 0:
        return None
    prices = np.maximum(-np.asarray(result.ineqlin.marginals)[-rows:], 0.0)
    return LpSolution(np.asarray(result.x), float(-result.fun), prices)


def _exact(problem: Problem, pairs: Pairs, started: float) -> Allocation | None:
    solution = solve_lp(problem, pairs)
    if solution is None:
        return None
    x = solution.x
    integral = bool(np.all((x < INTEGRAL_TOLERANCE) | (x > 1 - INTEGRAL_TOLERANCE)))
    taken = x > 0.5 if integral else repair(problem, pairs, x > 0.5, x)  # not a vertex: should not happen
    return _allocation(pairs, taken, "lp" if integral else "lp-repaired", started, solution.optimum)


@dataclass(frozen=True)
class _Grid:
    """The pairs as a dense (customers with a pair, campaigns) table of pair rows, -1: none."""

    customer: np.ndarray
    pair: np.ndarray
    shared_groups: tuple[np.ndarray, ...]  # the campaign columns of each group of two or more

    @classmethod
    def of(cls, problem: Problem, pairs: Pairs) -> _Grid:
        customer, row = np.unique(pairs.customer, return_inverse=True)
        pair = np.full((len(customer), problem.shape[1]), -1, dtype=np.int64)
        pair[row, pairs.campaign] = np.arange(len(pairs))
        groups = [np.flatnonzero(problem.group == g) for g in np.unique(problem.group)]
        return cls(customer, pair, tuple(g for g in groups if len(g) > 1))


def _choose(problem: Problem, pairs: Pairs, grid: _Grid, prices: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Each customer's best positive reduced-score pairs, up to its limit, under the campaign
    and channel prices: (the dual value, chosen pairs, reduced scores)."""
    k = problem.shape[1]
    reduced = pairs.score - prices[pairs.campaign] - prices[k + problem.channel[pairs.campaign]]
    dense = np.where(grid.pair >= 0, reduced[grid.pair], -np.inf)
    rows = np.arange(len(dense))
    for columns in grid.shared_groups:  # only a group's best campaign competes for the customer
        block = dense[:, columns]
        best = np.argmax(block, axis=1)
        dense[:, columns] = -np.inf
        dense[rows, columns[best]] = block[rows, best]
    order = np.argsort(-dense, axis=1, kind="stable")
    take = (np.take_along_axis(dense, order, axis=1) > 0) & (np.arange(k) < problem.limits[grid.customer, None])
    chosen = np.zeros(len(pairs), dtype=bool)
    chosen[np.take_along_axis(grid.pair, order, axis=1)[take]] = True
    value = float(reduced[chosen].sum() + prices[:k] @ problem.quotas + prices[k:] @ problem.capacities)
    return value, chosen, reduced


def _sample_prices(problem: Problem, pairs: Pairs, seed: int) -> np.ndarray:
    """Multipliers from the LP of a customer sample with quotas and capacities scaled to it."""
    n = problem.shape[0]
    if n <= SAMPLE_CUSTOMERS:
        solution = solve_lp(problem, pairs)
        return np.zeros(problem.shape[1] + len(problem.capacities)) if solution is None else solution.prices
    keep = np.zeros(n, dtype=bool)
    keep[np.random.default_rng(seed).choice(n, SAMPLE_CUSTOMERS, replace=False)] = True
    share = SAMPLE_CUSTOMERS / n
    small = Problem(
        problem.scores,
        np.where(keep, problem.limits, 0),
        np.ceil(problem.quotas * share).astype(np.int64),
        problem.channel,
        np.ceil(problem.capacities * share).astype(np.int64),
        problem.group,
    )
    solution = solve_lp(small, pairs.take(np.flatnonzero(keep[pairs.customer])))
    return np.zeros(problem.shape[1] + len(problem.capacities)) if solution is None else solution.prices


def lagrangian(
    problem: Problem, pairs: Pairs | None = None, *, steps: int = SUBGRADIENT_STEPS, seed: int = 0
) -> Allocation:
    """Near-optimal at any size: Lagrange multipliers on quotas and capacities (seeded from a
    sample LP, then Polyak subgradient steps), the customers' choices repaired to feasibility;
    greedy when that is better. ``bound`` is the best dual value: no plan scores more."""
    started = time.perf_counter()
    pairs = candidates(problem) if pairs is None else pairs
    base = greedy(problem, pairs)
    seeded = _sample_prices(problem, pairs, seed)
    grid = _Grid.of(problem, pairs)
    best_prices, bound = _descend(problem, pairs, grid, seeded, base.total, steps)
    plans = [base]
    for prices in (seeded, best_prices):
        _, chosen, reduced = _choose(problem, pairs, grid, prices)
        plans.append(_allocation(pairs, repair(problem, pairs, chosen, reduced), "lagrangian", started, bound))
    best = max(plans, key=lambda plan: plan.total)  # greedy first: it wins ties
    return Allocation(best.customer, best.campaign, best.total, best.method, bound, time.perf_counter() - started)


def _descend(
    problem: Problem, pairs: Pairs, grid: _Grid, prices: np.ndarray, target: float, steps: int
) -> tuple[np.ndarray, float]:
    """Projected subgradient descent on the dual from ``prices`` with Polyak steps towards
    ``target`` (a feasible total); returns the prices of the lowest dual value and that value."""
    k, channels = problem.shape[1], len(problem.capacities)
    best, bound, theta, stale = prices, np.inf, 1.0, 0
    for _ in range(steps):
        value, chosen, _ = _choose(problem, pairs, grid, prices)
        if value < bound - 1e-9:
            best, bound, stale = prices, value, 0
        else:
            stale += 1
            if stale >= 5:  # no progress: shorter steps
                theta, stale = theta / 2, 0
        demand = np.bincount(pairs.campaign[chosen], minlength=k)
        gradient = np.r_[problem.quotas - demand, problem.capacities - np.bincount(problem.channel, demand, channels)]
        gradient = np.where((prices <= 0) & (gradient > 0), 0, gradient)  # prices stay >= 0
        if not gradient.any():  # complementary slackness: optimal prices
            break
        step = theta * max(value - target, 1e-9) / float(gradient @ gradient)
        prices = np.maximum(prices - step * gradient, 0.0)
    return best, bound


def optimise(problem: Problem, *, method: str = "auto", seed: int = 0) -> Allocation:
    """The best plan found: exact LP up to ``LP_MAX_PAIRS`` candidate pairs (``method="auto"``,
    or ``"lp"``), else - or when the LP runs out of time - Lagrangian (``"lagrangian"``).
    Never below greedy."""
    if method not in ("auto", "lp", "lagrangian"):
        raise InputError(f"allocation method must be auto, lp or lagrangian, got {method!r}")
    started = time.perf_counter()
    pairs = candidates(problem)
    if method == "lp" or (method == "auto" and len(pairs) <= LP_MAX_PAIRS):
        found = _exact(problem, pairs, started)
        if found is not None:
            base = greedy(problem, pairs)
            if base.total <= found.total:  # greedy is better only if the LP needed repair
                return found
            return Allocation(base.customer, base.campaign, base.total, "greedy", found.bound, found.seconds)
    return lagrangian(problem, pairs, seed=seed)


def violations(problem: Problem, plan: Allocation) -> dict[str, int]:
    """How many constraints the plan breaks, per kind (all zero: feasible)."""
    n, k = problem.shape
    per_customer = np.bincount(plan.customer, minlength=n)
    per_campaign = np.bincount(plan.campaign, minlength=k)
    per_channel = np.bincount(problem.channel[plan.campaign], minlength=len(problem.capacities))
    offers = plan.customer * len(problem.group) + problem.group[plan.campaign]
    score = problem.scores[plan.customer, plan.campaign]
    return {
        "customer_limit": int(np.sum(per_customer > problem.limits)),
        "campaign_quota": int(np.sum(per_campaign > problem.quotas)),
        "channel_capacity": int(np.sum(per_channel > problem.capacities)),
        "one_per_group": int(np.sum(np.unique(offers, return_counts=True)[1] > 1)),
        "duplicate_pairs": len(plan) - len(np.unique(plan.customer * max(k, 1) + plan.campaign)),
        "not_positive": int(np.sum(~(np.isfinite(score) & (score > 0)))),
    }


# --- the job ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Campaign:
    name: str
    product: str
    channel: str
    quota: int


def parse_campaigns(campaigns: Sequence[Mapping[str, Any]]) -> list[Campaign]:
    """Campaign dicts as :class:`Campaign`; raises InputError naming the campaign and the field."""
    out: list[Campaign] = []
    for n, raw in enumerate(campaigns):
        label = f"campaign {n} ({raw.get('name')!r})" if isinstance(raw, Mapping) else f"campaign {n}"
        if not isinstance(raw, Mapping) or not {"name", "product", "channel", "quota"} <= set(raw):
            got = sorted(raw) if isinstance(raw, Mapping) else type(raw).__name__
            raise InputError(f"{label}: expected the keys name, product, channel, quota; got {got}")
        quota = raw["quota"]
        if isinstance(quota, bool) or not isinstance(quota, int) or quota < 0:
            raise InputError(f"{label}: quota must be an integer >= 0, got {quota!r}")
        for key in ("name", "product", "channel"):
            if not isinstance(raw[key], str) or not raw[key]:
                raise InputError(f"{label}: {key} must be a non-empty string, got {raw[key]!r}")
        out.append(Campaign(raw["name"], raw["product"], raw["channel"], quota))
    names = [c.name for c in out]
    if len(set(names)) != len(names):
        raise InputError(f"campaign names must be unique, got {names}")
    return out


def _count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InputError(f"allocation: {name} must be an integer >= 0, got {value!r}")
    return value


@dataclass(frozen=True)
class LoadTask:
    data: Path
    part: str
    products: tuple[str, ...]
    limits_by_tier: tuple[tuple[str, int], ...]
    default_limit: int


def load_part(task: LoadTask) -> dict[str, Any]:
    """One customers part: ids, contact limits by tier, and its matrix scores of ``products``
    ((customers, products), NaN where the matrix has no score)."""
    customers = pq.read_table(layout.table_dir(task.data, "customers") / task.part, columns=["customer_id", "tier"])
    path = layout.job_dir(task.data, "matrix") / task.part
    if not path.exists():
        raise NotFound(f"allocation: no match scores for customers {task.part} at {path} (run esp job matrix first)")
    scores = pq.read_table(path, columns=["customer_id", "product", "score"])
    ids = customers.column("customer_id").combine_chunks()
    who = np.asarray(pc.index_in(scores.column("customer_id"), value_set=ids).fill_null(-1))
    what = np.asarray(pc.index_in(scores.column("product"), value_set=pa.array(task.products)).fill_null(-1))
    value = np.asarray(pc.cast(scores.column("score"), pa.float64()).to_numpy(zero_copy_only=False))
    matrix = np.full((len(ids), len(task.products)), np.nan)
    ok = (who >= 0) & (what >= 0)
    matrix[who[ok], what[ok]] = value[ok]
    by_tier = dict(task.limits_by_tier)
    tiers = customers.column("tier").to_pylist()
    return {
        "ids": ids,
        "limits": np.array([by_tier.get(t, task.default_limit) for t in tiers], dtype=np.int64),
        "tiers": tiers,
        "scores": matrix,
    }


def run(
    data: Path,
    campaigns: list[dict[str, Any]],
    *,
    limits_by_tier: dict[str, int],
    default_limit: int,
    channel_capacity: dict[str, int],
    method: str = "auto",
) -> dict[str, Any]:
    """Allocates contacts for ``campaigns`` over the matrix scores; writes
    ``jobs/allocate/plan.parquet`` (layout.PLAN) and the summary. A channel without a capacity
    is not capped (listed under ``uncapped_channels``); a tier without a limit has
    ``default_limit``."""
    timer, data = JobTimer(), Path(data)
    specs = parse_campaigns(campaigns)
    limits = tuple((str(t), _count(f"limits_by_tier[{t!r}]", v)) for t, v in limits_by_tier.items())
    capacity = {str(c): _count(f"channel_capacity[{c!r}]", v) for c, v in channel_capacity.items()}
    customer_parts = layout.parts(data, "customers")
    if not customer_parts:
        raise NotFound(f"data set {data}: no customers parts in {layout.table_dir(data, 'customers')}")
    products = tuple(dict.fromkeys(c.product for c in specs))
    tasks = [LoadTask(data, p.name, products, limits, _count("default_limit", default_limit)) for p in customer_parts]
    loaded = run_parts(load_part, tasks, label="allocate load")
    by_product = np.vstack([part["scores"] for part in loaded]) if loaded else np.zeros((0, len(products)))
    missing = [p for j, p in enumerate(products) if not np.isfinite(by_product[:, j]).any()]
    if missing:
        raise InputError(f"allocation: no match scores for product(s) {missing} (campaigns: {[c.name for c in specs]})")
    channels = tuple(dict.fromkeys(c.channel for c in specs))
    quotas = np.array([c.quota for c in specs], dtype=np.int64)
    channel = np.array([channels.index(c.channel) for c in specs], dtype=np.int64)
    caps = [capacity.get(ch, int(quotas[channel == i].sum())) for i, ch in enumerate(channels)]
    problem = Problem.of(
        by_product[:, [products.index(c.product) for c in specs]],
        np.concatenate([part["limits"] for part in loaded]),
        quotas,
        channel,
        caps,
        group=[products.index(c.product) for c in specs],
    )
    base, plan = greedy(problem), optimise(problem, method=method)
    ids = pa.concat_arrays([part["ids"] for part in loaded])
    write_table(plan_table(problem, plan, ids, specs), layout.job_dir(data, JOB) / "plan.parquet")
    tiers = np.array([t for part in loaded for t in part["tiers"]], dtype=object)
    summary = {
        "job": JOB,
        "customers": problem.shape[0],
        "campaigns": [c.__dict__ for c in specs],
        "channel_capacity": dict(zip(channels, caps, strict=True)),
        "uncapped_channels": [ch for ch in channels if ch not in capacity],
        "unused_channels": sorted(set(capacity) - set(channels)),
        "limits_by_tier": dict(limits),
        "default_limit": default_limit,
        "candidate_pairs": len(candidates(problem)),
        "optimised": figures(problem, plan, specs, channels, tiers),
        "greedy": figures(problem, base, specs, channels, tiers),
        "gain_pct": round(100 * (plan.total - base.total) / base.total, 3) if base.total else 0.0,
        "upper_bound": None if plan.bound is None else round(plan.bound, 2),
        "gap_to_bound_pct": None if not plan.bound else round(100 * (plan.bound - plan.total) / plan.bound, 4),
        "feasible": not any(violations(problem, plan).values()) and not any(violations(problem, base).values()),
        **timer.figures(),
    }
    write_summary(layout.job_dir(data, JOB), summary)
    return summary


def run_spec(data: Path, spec_file: Path) -> dict[str, Any]:
    """``run`` with an allocation spec file (JSON or YAML): ``campaigns``, ``limits_by_tier``,
    ``default_limit``, ``channel_capacity`` (see configs/batch/allocation.json)."""
    import yaml

    spec = yaml.safe_load(Path(spec_file).read_text())
    return run(
        data,
        spec["campaigns"],
        limits_by_tier=spec.get("limits_by_tier", {}),
        default_limit=int(spec.get("default_limit", 1)),
        channel_capacity=spec.get("channel_capacity", {}),
    )


def plan_table(problem: Problem, plan: Allocation, ids: pa.Array, specs: Sequence[Campaign]) -> pa.Table:
    """The plan in layout.PLAN, by campaign then score (highest first)."""
    order = np.lexsort((plan.customer, -problem.scores[plan.customer, plan.campaign], plan.campaign))
    customer, campaign = plan.customer[order], plan.campaign[order]
    columns = [
        pc.take(ids, pa.array(customer, pa.int64())),
        pa.array([specs[j].name for j in campaign.tolist()], pa.string()),
        pa.array([specs[j].product for j in campaign.tolist()], pa.string()),
        pa.array([specs[j].channel for j in campaign.tolist()], pa.string()),
        pa.array(problem.scores[customer, campaign], pa.float32()),
    ]
    return pa.table(columns, schema=layout.PLAN)


def figures(
    problem: Problem, plan: Allocation, specs: Sequence[Campaign], channels: Sequence[str], tiers: np.ndarray
) -> dict[str, Any]:
    """Total score, contacts per campaign, channel and tier, and the constraint check."""
    score = problem.scores[plan.customer, plan.campaign]
    per_campaign = {}
    for j, spec in enumerate(specs):
        mine = plan.campaign == j
        per_campaign[spec.name] = {
            "contacts": int(mine.sum()),
            "quota": spec.quota,
            "score": round(float(score[mine].sum()), 2),
            "mean_score": round(float(score[mine].mean()), 2) if mine.any() else None,
        }
    per_channel = np.bincount(problem.channel[plan.campaign], minlength=len(channels))
    contacted, times = np.unique(plan.customer, return_counts=True)
    tier, per_tier = np.unique(tiers[plan.customer].astype(str), return_counts=True)
    return {
        "method": plan.method,
        "total_score": round(plan.total, 2),
        "contacts": len(plan),
        "customers_contacted": len(contacted),
        "customers_contacted_twice_or_more": int(np.sum(times > 1)),
        "per_campaign": per_campaign,
        "per_channel": {
            ch: {"contacts": int(per_channel[i]), "capacity": int(problem.capacities[i])}
            for i, ch in enumerate(channels)
        },
        "per_tier": dict(zip(tier.tolist(), per_tier.tolist(), strict=True)),
        "violations": violations(problem, plan),
        "seconds": round(plan.seconds, 3),
    }
