"""Contact allocation: a hand-computed optimum greedy misses, brute force on tiny random
instances, constraints on larger ones, and the job on a hand-written data directory."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.batch import allocate, layout
from runtime.batch.allocate import Problem
from runtime.errors import InputError, NotFound

SETTINGS = settings(max_examples=150, deadline=None)


def _pairs(plan: allocate.Allocation) -> set[tuple[int, int]]:
    return set(zip(plan.customer.tolist(), plan.campaign.tolist(), strict=True))


def _feasible(problem: Problem, plan: allocate.Allocation) -> bool:
    return not any(allocate.violations(problem, plan).values())


# --- a hand-computed instance -------------------------------------------------------------------
#
#            A    B        one contact per customer, quota 1 per campaign, one channel of 5
#   c0      10    9        greedy: c0-A (10), then c0-B c1-A c2-A are blocked, c2-B (2) = 12
#   c1       8    1        best:   c0-B (9) + c1-A (8) = 17; every other pair of pairs is less
#   c2       7    2

TINY = Problem.of([[10, 9], [8, 1], [7, 2]], limits=[1, 1, 1], quotas=[1, 1], channel=[0, 0], capacities=[5])


def test_greedy_takes_the_best_pair_first_and_loses():
    plan = allocate.greedy(TINY)
    assert _pairs(plan) == {(0, 0), (2, 1)} and plan.total == 12


@pytest.mark.parametrize("method", ["auto", "lp", "lagrangian"])
def test_optimiser_finds_the_hand_computed_optimum(method: str):
    plan = allocate.optimise(TINY, method=method)
    assert _pairs(plan) == {(1, 0), (0, 1)}
    assert plan.total == pytest.approx(17)
    assert plan.bound == pytest.approx(17)
    assert _feasible(TINY, plan)


def test_channel_capacity_binds_across_campaigns():
    # A and B share a channel of 2; C has its own. Greedy fills the channel with c0's A and B.
    problem = Problem.of(
        [[9, 8, 7], [6, 0, 0], [5, 0, 0]], limits=[2, 1, 1], quotas=[2, 1, 1], channel=[0, 0, 1], capacities=[2, 1]
    )
    assert allocate.greedy(problem).total == 9 + 8  # c0-A, c0-B; c0 is then at its limit, C unused
    plan = allocate.optimise(problem)
    assert _pairs(plan) == {(0, 0), (1, 0), (0, 2)} and plan.total == 9 + 6 + 7


def test_pruning_keeps_each_campaigns_top_customers():
    rng = np.random.default_rng(1)
    problem = Problem.of(rng.random((50, 2)), limits=np.ones(50), quotas=[3, 2], channel=[0, 1], capacities=[10, 1])
    pairs = allocate.candidates(problem)
    assert problem.most_contacts() == 3 + 1
    for j in range(2):
        mine = pairs.customer[pairs.campaign == j]
        assert sorted(mine) == sorted(np.argsort(-problem.scores[:, j])[:4])


def test_nan_zero_and_closed_are_never_candidates():
    problem = Problem.of(
        [[np.nan, 5, 1], [0, -1, 2], [3, 4, 5]], limits=[1, 1, 0], quotas=[1, 1, 0], channel=[0, 0, 0], capacities=[9]
    )
    pairs = allocate.candidates(problem)
    assert set(zip(pairs.customer.tolist(), pairs.campaign.tolist(), strict=True)) == {(0, 1)}
    assert allocate.optimise(problem).total == 5


def test_problem_shapes_are_checked():
    with pytest.raises(InputError, match="expected 2 limits"):
        Problem.of([[1], [2]], limits=[1], quotas=[1], channel=[0], capacities=[1])
    with pytest.raises(InputError, match="channel indices"):
        Problem.of([[1]], limits=[1], quotas=[1], channel=[1], capacities=[1])
    with pytest.raises(InputError, match=">= 0"):
        Problem.of([[1]], limits=[1], quotas=[-1], channel=[0], capacities=[1])
    with pytest.raises(InputError, match="method"):
        allocate.optimise(TINY, method="magic")


def test_violations_are_counted():
    plan = allocate.Allocation(np.array([0, 0, 1, 1]), np.array([0, 1, 0, 0]), 0.0, "made up")
    assert allocate.violations(TINY, plan) == {
        "customer_limit": 2,
        "campaign_quota": 1,
        "channel_capacity": 0,
        "one_per_group": 1,
        "duplicate_pairs": 1,
        "not_positive": 0,
    }


# --- random instances ---------------------------------------------------------------------------


@st.composite
def problems(draw: st.DrawFn, max_customers: int, max_campaigns: int) -> Problem:
    n = draw(st.integers(1, max_customers))
    k = draw(st.integers(1, max_campaigns))
    channels = draw(st.integers(1, min(k, 2)))
    groups = draw(st.lists(st.integers(0, k - 1), min_size=k, max_size=k))
    score = st.one_of(st.integers(0, 20).map(float), st.floats(0.01, 100), st.just(float("nan")))
    scores = draw(st.lists(st.lists(score, min_size=k, max_size=k), min_size=n, max_size=n))
    return Problem.of(
        scores,
        limits=draw(st.lists(st.integers(0, 2), min_size=n, max_size=n)),
        quotas=draw(st.lists(st.integers(0, 4), min_size=k, max_size=k)),
        channel=draw(st.lists(st.integers(0, channels - 1), min_size=k, max_size=k)),
        capacities=draw(st.lists(st.integers(0, 5), min_size=channels, max_size=channels)),
        group=groups,
    )


def brute_force(problem: Problem) -> float:
    """The best total over every subset of the positive pairs that keeps every constraint."""
    n, k = problem.shape
    cust, camp = np.nonzero(np.nan_to_num(problem.scores, nan=0.0) > 0)
    subsets = ((np.arange(2 ** len(cust))[:, None] >> np.arange(len(cust))) & 1).astype(np.int64)
    ok = np.all(subsets @ np.eye(n, dtype=np.int64)[cust] <= problem.limits, axis=1)
    ok &= np.all(subsets @ np.eye(k, dtype=np.int64)[camp] <= problem.quotas, axis=1)
    channels = np.eye(len(problem.capacities), dtype=np.int64)[problem.channel[camp]]
    ok &= np.all(subsets @ channels <= problem.capacities, axis=1)
    offers = cust * k + problem.group[camp]
    ok &= np.all(subsets @ (offers[:, None] == np.unique(offers)[None, :]) <= 1, axis=1)
    return float((subsets[ok] @ problem.scores[cust, camp]).max())


@SETTINGS
@given(problems(max_customers=5, max_campaigns=3))
def test_exact_optimum_equals_brute_force(problem: Problem):
    best = brute_force(problem)
    plan = allocate.optimise(problem, method="lp")
    assert _feasible(problem, plan)
    assert plan.total == pytest.approx(best, abs=1e-6)
    assert plan.total >= allocate.greedy(problem).total - 1e-9


@SETTINGS
@given(problems(max_customers=5, max_campaigns=3))
def test_lagrangian_is_feasible_between_greedy_and_the_optimum(problem: Problem):
    best = brute_force(problem)
    plan = allocate.lagrangian(problem)
    assert _feasible(problem, plan)
    assert allocate.greedy(problem).total - 1e-9 <= plan.total <= best + 1e-6
    assert plan.bound >= best - 1e-6


@SETTINGS
@given(problems(max_customers=60, max_campaigns=5))
def test_constraints_hold_and_optimiser_beats_greedy(problem: Problem):
    base = allocate.greedy(problem)
    exact = allocate.optimise(problem, method="lp")
    near = allocate.optimise(problem, method="lagrangian")
    for plan in (base, exact, near):
        assert _feasible(problem, plan)
        assert plan.total == pytest.approx(float(problem.scores[plan.customer, plan.campaign].sum()))
    assert exact.total >= base.total - 1e-9
    assert base.total - 1e-9 <= near.total <= exact.total + 1e-6
    assert near.bound >= exact.total - 1e-6


def test_one_campaign_per_group_and_customer():
    # A and B offer the same product: c0 gets one of them, c1 the other (not c0 both)
    problem = Problem.of(
        [[9, 8], [1, 2]], limits=[2, 2], quotas=[1, 1], channel=[0, 1], capacities=[1, 1], group=[0, 0]
    )
    for plan in (allocate.greedy(problem), allocate.optimise(problem), allocate.lagrangian(problem)):
        assert _pairs(plan) == {(0, 0), (1, 1)} and plan.total == 11
    both = allocate.Allocation(np.array([0, 0]), np.array([0, 1]), 17.0, "made up")
    assert allocate.violations(problem, both)["one_per_group"] == 1


def test_lagrangian_is_close_on_a_larger_instance():
    rng = np.random.default_rng(7)
    n = 30_000
    scores = 100 * (0.6 * rng.random((n, 1)) + 0.4 * rng.random((n, 4)))  # everyone wants the same people
    problem = Problem.of(
        scores, rng.integers(1, 3, n), [4_000, 3_000, 6_000, 2_000], [0, 0, 1, 1], [6_000, 6_000], group=[0, 1, 2, 0]
    )
    exact = allocate.optimise(problem, method="lp")
    near = allocate.optimise(problem, method="lagrangian")
    assert exact.method == "lp" and near.method == "lagrangian"
    assert _feasible(problem, near) and _feasible(problem, exact)
    assert near.total >= 0.999 * exact.total
    assert exact.total > allocate.greedy(problem).total


# --- the job ------------------------------------------------------------------------------------


def _write(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


def _customers(ids: list[str], tiers: list[str]) -> pa.Table:
    n = len(ids)
    columns = {field.name: pa.nulls(n, field.type) for field in layout.CUSTOMERS}
    columns |= {"customer_id": pa.array(ids, pa.string()), "tier": pa.array(tiers, pa.string())}
    return pa.table(columns, schema=layout.CUSTOMERS)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """Two parts of three customers; match scores for products x and y (c5 has none)."""
    rows = {
        "part-00000.parquet": [("c0", "gold", 90, 80), ("c1", "bronze", 70, 10), ("c2", "silver", 60, 50)],
        "part-00001.parquet": [("c3", "gold", 50, 95), ("c4", "bronze", 40, 30), ("c5", "bronze", None, None)],
    }
    for name, customers in rows.items():
        _write(_customers([c[0] for c in customers], [c[1] for c in customers]), tmp_path / "customers" / name)
        scored = [(c[0], p, c[2 + k]) for c in customers for k, p in enumerate("xy") if c[2 + k] is not None]
        scores = pa.table(
            {
                "customer_id": [r[0] for r in scored],
                "product": [r[1] for r in scored],
                "score": pa.array([r[2] for r in scored], pa.float32()),
            },
            schema=layout.SCORES,
        )
        _write(scores, layout.job_dir(tmp_path, "matrix") / name)
    return tmp_path


CAMPAIGNS = [
    {"name": "x-sms", "product": "x", "channel": "sms", "quota": 3},
    {"name": "y-push", "product": "y", "channel": "push", "quota": 2},
    {"name": "y-call", "product": "y", "channel": "call", "quota": 1},
]


def test_run_writes_a_feasible_plan(data_dir: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("ESP_PROGRESS", "0")
    summary = allocate.run(
        data_dir,
        CAMPAIGNS,
        limits_by_tier={"gold": 2},
        default_limit=1,
        channel_capacity={"sms": 2, "push": 5, "email": 9},
    )
    plan = pq.read_table(layout.job_dir(data_dir, "allocate") / "plan.parquet")
    assert plan.schema == layout.PLAN
    rows = plan.to_pylist()
    # the optimum, by hand: sms holds two x contacts (c0 90, c1 70); y-push and y-call three y
    # contacts to distinct customers (one offer of a product each): c3 95, c0 80 (gold: two), c2 50
    got = {(r["customer_id"], r["product"]) for r in rows}
    assert got == {("c0", "x"), ("c1", "x"), ("c3", "y"), ("c0", "y"), ("c2", "y")}
    assert all(r["channel"] == "sms" for r in rows if r["campaign"] == "x-sms")
    assert [r["score"] for r in rows if r["campaign"] == "x-sms"] == [90, 70]  # by score within campaign
    assert summary["optimised"]["total_score"] == pytest.approx(90 + 70 + 95 + 80 + 50)
    assert summary["optimised"]["per_channel"]["sms"] == {"contacts": 2, "capacity": 2}
    assert summary["optimised"]["per_campaign"]["y-push"]["contacts"] == 2
    assert summary["feasible"] and not any(summary["optimised"]["violations"].values())
    assert summary["gain_pct"] >= 0
    assert summary["uncapped_channels"] == ["call"] and summary["unused_channels"] == ["email"]
    assert summary["channel_capacity"]["call"] == 1  # uncapped: the sum of its quotas
    assert json.loads((layout.job_dir(data_dir, "allocate") / "summary.json").read_text())["customers"] == 6


def test_run_rejects_bad_campaigns(data_dir: Path):
    with pytest.raises(InputError, match="expected the keys"):
        allocate.run(data_dir, [{"name": "a"}], limits_by_tier={}, default_limit=1, channel_capacity={})
    with pytest.raises(InputError, match="quota must be an integer"):
        bad = [{**CAMPAIGNS[0], "quota": -1}]
        allocate.run(data_dir, bad, limits_by_tier={}, default_limit=1, channel_capacity={})
    with pytest.raises(InputError, match="unique"):
        allocate.run(data_dir, CAMPAIGNS[:1] * 2, limits_by_tier={}, default_limit=1, channel_capacity={})
    with pytest.raises(InputError, match=r"no match scores for product\(s\) \['z'\]"):
        bad = [{**CAMPAIGNS[0], "product": "z"}]
        allocate.run(data_dir, bad, limits_by_tier={}, default_limit=1, channel_capacity={})
    with pytest.raises(InputError, match="default_limit"):
        allocate.run(data_dir, CAMPAIGNS, limits_by_tier={}, default_limit=-1, channel_capacity={})


def test_run_needs_the_matrix(data_dir: Path):
    (layout.job_dir(data_dir, "matrix") / "part-00001.parquet").unlink()
    with pytest.raises(NotFound, match="run esp job matrix"):
        allocate.run(data_dir, CAMPAIGNS, limits_by_tier={}, default_limit=1, channel_capacity={})


def test_lp_out_of_time_falls_back_to_lagrangian(monkeypatch: pytest.MonkeyPatch):
    real = allocate.solve_lp
    calls: list[int] = []

    def give_up_on_the_full_problem(problem: Problem, pairs: allocate.Pairs) -> allocate.LpSolution | None:
        calls.append(len(pairs))
        return None if len(calls) == 1 else real(problem, pairs)

    monkeypatch.setattr(allocate, "solve_lp", give_up_on_the_full_problem)
    plan = allocate.optimise(TINY)
    assert plan.method == "lagrangian" and plan.total == 17 and len(calls) == 2
