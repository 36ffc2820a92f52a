"""The match matrix: features from hand-made tables, a model per product on synthetic data with a
known logistic truth, and a tiny end-to-end job run in this process (no Ray)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scipy.stats import spearmanr

from runtime.batch import features, layout, matrix
from runtime.errors import NotFound


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


# --- features -----------------------------------------------------------------------------------


def _customers(n: int, rng: np.random.Generator, prefix: str = "c") -> pa.Table:
    tiers = rng.choice(features.TIERS, n)
    arpu = [list(np.round(50 + 10 * rng.random(6), 2)) for _ in range(n)]
    columns = {
        "customer_id": [f"{prefix}{i:05d}" for i in range(n)],
        "phone": [f"138{i:08d}" for i in range(n)],
        "imei": ["0" * 15] * n,
        "age": rng.integers(18, 80, n).astype(np.int16),
        "gender": rng.choice(["f", "m"], n),
        "tier": tiers,
        "plan": rng.choice(features.PLANS, n),
        "arpu": arpu,
        "data_gb": rng.gamma(2, 5, n).astype(np.float32),
        "voice_min": rng.gamma(2, 100, n).astype(np.float32),
        "sms_count": rng.poisson(20, n).astype(np.float32),
        "device_brand": rng.choice(["apple", "huawei", "nokia"], n),
        "car_owner": rng.random(n) < 0.3,
        "housing_fund": rng.random(n) < 0.5,
        "main_bank": rng.choice(["icbc", "cmb"], n),
        "has_card": rng.random(n) < 0.2,
        "home_cell": ["cell-1"] * n,
        "work_cell": [None if i % 3 == 0 else "cell-2" for i in range(n)],
        "timezone": ["Asia/Shanghai"] * n,
    }
    return pa.table(columns, schema=layout.CUSTOMERS)


def test_customer_features_follow_the_declared_columns():
    customers = _customers(3, np.random.default_rng(1))
    customers = customers.set_column(
        customers.schema.get_field_index("arpu"), "arpu", pa.array([[10, 20, 30], [], None], pa.list_(pa.float32()))
    )
    customers = customers.set_column(
        customers.schema.get_field_index("tier"), "tier", pa.array(["gold", "silver", None], pa.string())
    )
    x = features.customer_features(customers)
    assert x.shape == (3, len(features.CUSTOMER_FEATURES)) and x.dtype == np.float32
    col = {name: x[:, i] for i, name in enumerate(features.CUSTOMER_FEATURES)}
    assert col["arpu:mean"][0] == pytest.approx(20) and col["arpu:last"][0] == pytest.approx(30)
    assert col["arpu:trend"][0] == pytest.approx(10 / 20)  # slope 10 a month on a mean of 20
    assert np.isnan(col["arpu:mean"][1]) and np.isnan(col["arpu:mean"][2])
    assert col["tier:gold"].tolist() == [1, 0, 0] and col["tier:rank"][:2].tolist() == [2, 1]
    assert np.isnan(col["tier:rank"][2])
    assert col["has_workplace"].tolist() == [0, 1, 1]
    assert (col["brand:other"] + col["brand:apple"] + col["brand:huawei"]).tolist() == [1, 1, 1]


def test_tag_keys_cut_paths_at_l2_and_depth_at_three():
    assert features.tag_keys("value:5") == ["value", "value:5"]
    assert features.tag_keys("circle:demand:sports:stadium") == ["circle", "circle:demand", "circle:demand:sports"]
    assert features.tag_keys("stay:frequent:office>tower>grade-a-tower:day-weekday") == [
        "stay",
        "stay:frequent",
        "stay:frequent:office",
        "stay:frequent:office>tower",
    ]
    assert features.tag_keys("event:cba-game:e-17")[:2] == ["event", "event:cba-game"]


def test_tag_features_count_rows_per_vocabulary_key():
    tags = pa.table(
        {
            "customer_id": ["a", "a", "b", "b", "zz"],
            "tag": ["value:5", "circle:demand:sports", "value:5", "value:3", "value:5"],
        }
    )
    counts = features.tag_key_counts(tags)
    assert counts["value"] == 4 and counts["value:5"] == 3 and counts["circle:demand:sports"] == 1
    vocabulary = features.choose_vocabulary(counts, 3)
    assert vocabulary == ("circle", "value", "value:5")  # top 3 by count, ties by name
    x, stray = features.tag_features(tags, pa.array(["a", "b", "c"]), vocabulary)
    assert x.tolist() == [[1, 1, 1], [0, 2, 1], [0, 0, 0]]
    assert stray == 1  # zz is not a customer of this part


def test_adoption_labels_any_yes_wins_and_no_row_is_unlabelled():
    adoption = pa.table(
        {
            "customer_id": ["a", "a", "b", "c", "x"],
            "product": ["p", "p", "q", "unknown", "p"],
            "adopted": [False, True, False, True, True],
        }
    )
    labels, stray = matrix.adoption_labels(adoption, pa.array(["a", "b", "c"]), ["p", "q"])
    assert labels.tolist() == [[1, -1], [-1, 0], [-1, -1]]
    assert stray == 2


def test_activity_features_count_per_customer():
    ids = pa.array(["a", "b"])
    sessions = pa.table(
        {"customer_id": ["a", "a", "a", "b", "x"], "site": ["video", "video", "news", "other", "video"],
         "duration_s": pa.array([60, 120, 30, 10, 99], pa.int32())}
    )  # fmt: skip
    x = features.session_features(sessions, ids, ["news", "video"])
    # sessions, share news, share video, minutes news, minutes video
    np.testing.assert_allclose(x, [[3, 1 / 3, 2 / 3, 0.5, 3], [1, 0, 0, 0, 0]], rtol=1e-6)
    calls = pa.table({"customer_id": ["a", "b", "b"], "line": ["sales", "sales", "service"]})
    assert features.call_features(calls, ids, ["sales", "service"]).tolist() == [[1, 0], [1, 1]]
    contacts = pa.table(
        {"customer_id": ["a", "a", "b"], "product": ["p", "p", "q"], "control": [False, True, False],
         "responded": [True, False, False]}
    )  # fmt: skip
    # contacted p, contacted q, responded p, responded q (control rows are not contacts)
    assert features.contact_features(contacts, ids, ["p", "q"]).tolist() == [[1, 0, 1, 0], [0, 1, 0, 0]]


def test_vocabulary_names_every_column():
    vocabulary = features.Vocabulary(tags=("value",), sites=("video",), lines=("sales",), products=("p",))
    tables = {
        "customers": _customers(2, np.random.default_rng(0)),
        "tags": pa.table({"customer_id": ["c00001"], "tag": ["value:3"]}),
        "sessions": pa.table({"customer_id": ["c00000"], "site": ["video"], "duration_s": pa.array([60], pa.int32())}),
        "calls": pa.table({"customer_id": ["c00001"], "line": ["sales"]}),
        "contacts": pa.table({"customer_id": ["c00000"], "product": ["p"], "control": [False], "responded": [True]}),
    }
    x, stray = features.part_features(tables, vocabulary)
    names = vocabulary.names()
    assert x.shape == (2, len(names)) and stray == 0
    got = {name: x[:, i].tolist() for i, name in enumerate(names) if name not in features.CUSTOMER_FEATURES}
    assert got == {
        "tag:value": [0, 1],
        "sessions": [1, 0],
        "site:video:share": [1, 0],
        "site:video:minutes": [1, 0],
        "calls:sales": [0, 1],
        "contacted:p": [1, 0],
        "responded:p": [1, 0],
    }


# --- the model ----------------------------------------------------------------------------------


def synthetic(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Adoption through a known logistic function of features, tier and age barely mattering."""
    rng = np.random.default_rng(seed)
    tier = rng.integers(0, 4, n)
    age = rng.normal(40, 12, n)
    f = rng.normal(size=(n, 5))
    logit = -1.2 + 1.4 * f[:, 0] - 1.0 * f[:, 1] + 1.0 * f[:, 2] * f[:, 3] + 1.2 * (f[:, 4] > 0.5) + 0.15 * tier
    y = (rng.random(n) < _sigmoid(logit)).astype(np.int8)
    x = np.column_stack([age, np.eye(4)[tier], f]).astype(np.float32)
    return x, y, ["age", *(f"tier:{t}" for t in features.TIERS), "f0", "f1", "f2", "f3", "f4"]


@pytest.fixture(scope="module")
def fitted() -> tuple[matrix.ProductModel, dict, np.ndarray, np.ndarray]:
    x, y, names = synthetic(8_000, seed=3)
    model, report = matrix.fit_product("p", x, y, names, baseline_columns=[0, 1, 2, 3, 4], seed=0)
    return model, report, x, y


def test_model_beats_the_tier_and_age_baseline(fitted):
    _, report, _, _ = fitted
    assert report["auc"] > 0.75
    assert report["auc"] > report["baseline_auc"] + 0.1
    assert report["auc_scores"] == pytest.approx(report["auc"], abs=0.01)  # calibration keeps the ranking
    assert report["brier"] < report["brier_prior"]


def test_scores_are_within_0_and_100(fitted):
    model, _, x, _ = fitted
    scores = model.score(x)
    assert scores.dtype == np.float32 and scores.min() >= 0 and scores.max() <= 100
    extreme = np.vstack([x.min(axis=0) - 100, x.max(axis=0) + 100])
    assert np.all((model.score(extreme) >= 0) & (model.score(extreme) <= 100))


def test_calibration_is_roughly_monotone_and_close(fitted):
    model, report, _, _ = fitted
    bins = report["calibration"]
    scores, observed = [b["score"] for b in bins], [b["observed"] for b in bins]
    assert spearmanr(scores, observed).statistic > 0.9
    assert observed[-1] > observed[0] + 40
    assert np.mean(np.abs(np.subtract(scores, observed))) < 8  # points, on ~320 rows per bin
    # fresh data from the same truth: the mean score is the adoption rate
    x, y, _ = synthetic(8_000, seed=4)
    assert model.score(x).mean() == pytest.approx(100 * y.mean(), abs=2.5)


def test_top_features_are_the_ones_the_truth_uses(fitted):
    _, report, _, _ = fitted
    top = [f["feature"] for f in report["top_features"][:3]]
    assert set(top) <= {"f0", "f1", "f2", "f3", "f4"}
    assert report["top_features"][0]["feature"] == "f0"


def test_calibration_map_is_strictly_increasing_and_anchored():
    rng = np.random.default_rng(0)
    raw = rng.random(2_000)
    y = rng.random(2_000) < raw**2
    xs, ys = matrix.fit_calibration(raw, y)
    assert xs[0] == 0 and xs[-1] == 1 and ys[0] == 0 and ys[-1] == 1
    assert np.all(np.diff(xs) > 0) and np.all(np.diff(ys) >= 0)
    probe = np.linspace(0.05, 0.95, 10)
    assert np.interp(probe, xs, ys) == pytest.approx(probe**2, abs=0.1)


def test_outcome_features_are_dropped():
    x, y, names = synthetic(3_000, seed=5)
    leak = y.astype(np.float32)[:, None]  # a column that is the label
    model, report = matrix.fit_product(
        "p", np.hstack([x, leak]), y, [*names, "has_card"], baseline_columns=[0], drop=("has_card",), seed=0
    )
    assert len(names) not in model.columns.tolist()
    assert report["auc"] < 0.95 and report["dropped_features"] == ["has_card"]


def test_too_few_labels_scores_the_prior():
    x, _, names = synthetic(200, seed=6)
    y = np.zeros(200, np.int8)
    y[:3] = 1
    model, report = matrix.fit_product("p", x, y, names, baseline_columns=[0])
    assert "auc" not in report and report["model"].startswith("none")
    assert np.allclose(model.score(x), 1.5)


# --- the job, end to end, in this process ---------------------------------------------------------


def _write(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """Two parts of 200 customers; products p (car owners with a demand tag) and q (noise)."""
    rng = np.random.default_rng(11)
    _write(
        pa.table({"product": ["p", "q"], "domain": ["bank", "telecom"], "name": ["P", "Q"]}, schema=layout.PRODUCTS),
        layout.table_dir(tmp_path, "products") / "products.parquet",
    )
    for part in range(2):
        customers = _customers(200, rng, prefix=f"c{part}-")
        ids = customers.column("customer_id").to_pylist()
        car = np.asarray(customers.column("car_owner").to_pylist())
        sporty = rng.random(200) < 0.5
        tag_rows = [(c, "circle:demand:sports") for c, s in zip(ids, sporty, strict=True) if s]
        tag_rows += [(c, f"value:{1 + i % 5}") for i, c in enumerate(ids)]
        tags = pa.table(
            {
                "customer_id": [c for c, _ in tag_rows],
                "tag": [t for _, t in tag_rows],
                "value": pa.array([1.0] * len(tag_rows), pa.float32()),
                "place_id": pa.array([None] * len(tag_rows), pa.string()),
            },
            schema=layout.TAGS,
        )
        took_p = rng.random(200) < _sigmoid(-2 + 2.5 * car + 2 * sporty)
        offered = rng.random(200) < 0.8
        rows = [(c, "p", bool(t)) for c, t, o in zip(ids, took_p, offered, strict=True) if o]
        rows += [(c, "q", bool(rng.random() < 0.3)) for c in ids[:150]]
        adoption = pa.table(
            {
                "customer_id": [r[0] for r in rows],
                "product": [r[1] for r in rows],
                "adopted": [r[2] for r in rows],
                "at_ms": pa.array([0] * len(rows), pa.int64()),
            },
            schema=layout.ADOPTION,
        )
        name = f"part-{part:05d}.parquet"
        _write(customers, layout.table_dir(tmp_path, "customers") / name)
        _write(adoption, layout.table_dir(tmp_path, "adoption") / name)
        _write(tags, layout.job_dir(tmp_path, "tags") / name)
    return tmp_path


def test_run_writes_scores_for_every_customer_and_product(data_dir: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("ESP_PROGRESS", "0")
    stale = layout.job_dir(data_dir, "matrix") / "part-00009.parquet"
    _write(pa.table({"x": [1]}), stale)
    summary = matrix.run(data_dir, top_n=2, max_train_rows=250)
    out = layout.job_dir(data_dir, "matrix")
    assert not stale.exists()
    parts = sorted(out.glob("part-*.parquet"))
    assert [p.name for p in parts] == ["part-00000.parquet", "part-00001.parquet"]
    scores = pa.concat_tables(pq.read_table(p) for p in parts)
    assert scores.schema == layout.SCORES
    assert scores.num_rows == 400 * 2
    pairs = Counter(zip(scores["customer_id"].to_pylist(), scores["product"].to_pylist(), strict=True))
    assert len(pairs) == 800 and set(pairs.values()) == {1}
    values = np.asarray(scores["score"])
    assert values.min() >= 0 and values.max() <= 100

    top_products = pq.read_table(out / "top_products.parquet")
    assert top_products.num_rows == 400 * 2 and set(top_products["rank"].to_pylist()) == {1, 2}
    top_customers = pq.read_table(out / "top_customers.parquet")
    assert top_customers.column_names == ["product", "rank", "customer_id", "score"]
    assert top_customers.num_rows == 4
    best_p = top_customers.filter(pa.compute.equal(top_customers["product"], "p"))["score"].to_pylist()
    assert best_p == sorted(best_p, reverse=True) and best_p[0] == pytest.approx(values[::2].max())

    assert summary["customers"] == 400 and summary["products"] == ["p", "q"]
    assert "circle:demand:sports" in summary["features"]["tags"]
    assert summary["features"]["count"] == len(features.CUSTOMER_FEATURES) + len(summary["features"]["tags"]) + 1
    p = summary["models"]["p"]
    assert p["sampled"] and p["labelled"] <= 250 < p["labelled_total"]
    assert p["auc"] > 0.6 and {"baseline_auc", "top_features", "calibration"} <= set(p)
    assert summary["adoption_rows_unmatched"] == 0 and summary["tag_rows_unmatched"] == 0
    assert json.loads((out / "summary.json").read_text())["customers"] == 400


def test_run_without_tags_or_activity_uses_customer_features(data_dir: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("ESP_PROGRESS", "0")
    for f in layout.job_dir(data_dir, "tags").glob("*.parquet"):
        f.unlink()
    summary = matrix.run(data_dir)
    assert summary["features"]["tags"] == [] and summary["features"]["count"] == len(features.CUSTOMER_FEATURES) + 1
    assert set(summary["models"]) == {"p", "q"}


def test_run_needs_customers(tmp_path: Path):
    with pytest.raises(NotFound, match="no customers parts"):
        matrix.run(tmp_path)
