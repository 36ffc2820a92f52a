"""The customer x product match matrix: a model per product, scores 0-100 for every customer.

``run(data)`` reads ``customers``, ``products``, ``adoption`` and the tags job's output
(``jobs/tags/part-*.parquet``, optional) and writes to ``DATA/jobs/matrix/``::

    part-XXXXX.parquet     layout.SCORES, one row per customer and product, one part per
                           customers part (same file name)
    top_products.parquet   (customer_id, rank, product, score): each customer's top-N products
    top_customers.parquet  (product, rank, customer_id, score): each product's top-N customers
    summary.json           per product: holdout AUC against a baseline, calibration, top features

Features: ``features.py`` builds them (the customers table, counts of the most frequent tag keys,
sessions, hotline calls, past campaign contacts) and :class:`~runtime.batch.features.Vocabulary`
names them.

Model: per product, a ``HistGradientBoostingClassifier`` fitted on the labelled rows of
``adoption`` (a customer offered the product: took it or not) - a uniform sample of at most
``max_train_rows`` per product - split 60/20/20 (stratified) into train, calibration and holdout.
Calibration is centred isotonic regression (:func:`fit_calibration`): monotone and, unlike plain
isotonic steps, strictly increasing, so calibrating does not tie customers the model ranks apart.
The baseline on the same holdout is a logistic regression on tier and age only.

Passes, as Ray tasks (``run_parts``): per customers part, a census (the vocabulary's counts and
labelled rows per product, for the sampling rate), then the sampled training rows; per product, a
fit (the training rows put in the object store once); per part again, scoring with the fitted
models shipped once through the object store. Fits and scoring run one OpenMP thread per task.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.inspection import permutation_importance
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss, roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from runtime.batch import layout
from runtime.batch.features import TIERS, Vocabulary, choose_vocabulary, part_features, plain, tag_key_counts
from runtime.batch.runner import JobTimer, resolve, run_parts, share, write_summary, write_table
from runtime.errors import NotFound

JOB = "matrix"
VOCABULARY_SIZE = 64
MAX_TRAIN_ROWS = 200_000  # labelled rows per product to fit on; a uniform sample beyond
MIN_CLASS_ROWS = 10  # fewer positives or negatives than this: no model, the prior for everyone
CALIBRATION_SHARE, HOLDOUT_SHARE = 0.2, 0.2
IMPORTANCE_ROWS, IMPORTANCE_REPEATS, TOP_FEATURES = 5_000, 2, 8
CALIBRATION_BINS = 10
CALIBRATION_PRIOR_ROWS = 5
# OpenMP threads per fit or scoring task: parallelism comes from tasks. Spinning OpenMP threads on
# a busy machine made a 5k-row fit 70x slower (21 s against 0.3 s) on the 2-core reference box.
THREADS = 1
BASELINE_FEATURES = ("age", *(f"tier:{t}" for t in TIERS))
# Features that record the product's own outcome: has_card is true for whoever took the credit
# card, so scoring credit-card on it would learn the label, not the customer.
OUTCOME_FEATURES: dict[str, tuple[str, ...]] = {"credit-card": ("has_card",)}
MODEL_PARAMS: dict[str, Any] = {
    "max_iter": 300,
    "learning_rate": 0.08,
    "max_leaf_nodes": 31,
    "min_samples_leaf": 40,
    "l2_regularization": 1.0,
    "early_stopping": True,
    "validation_fraction": 0.1,
    "n_iter_no_change": 20,
}


# --- labels -------------------------------------------------------------------------------------


def adoption_labels(adoption: pa.Table, customer_ids: pa.Array, products: Sequence[str]) -> tuple[np.ndarray, int]:
    """(customers, products) int8: 1 took the product (any row), 0 offered and did not, -1 no
    row; and the number of rows of another customer or an unknown product."""
    labels = np.full((len(customer_ids), len(products)), -1, dtype=np.int8)
    who = np.asarray(pc.index_in(plain(adoption.column("customer_id")), value_set=customer_ids).fill_null(-1))
    what = np.asarray(pc.index_in(plain(adoption.column("product")), value_set=pa.array(products)).fill_null(-1))
    took = pc.fill_null(plain(adoption.column("adopted")), False).to_numpy(zero_copy_only=False)
    known = pc.is_valid(plain(adoption.column("adopted"))).to_numpy(zero_copy_only=False)
    ok = (who >= 0) & (what >= 0) & known
    labels[who[ok], what[ok]] = 0
    labels[who[ok & took], what[ok & took]] = 1
    return labels, int(np.sum((who < 0) | (what < 0)))


# --- the model of one product -------------------------------------------------------------------


def fit_calibration(raw: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Knots of a centred isotonic map raw probability -> probability: the isotonic fit's blocks
    at their mean raw value, anchored at (0, 0) and (1, 1), linear in between. Strictly
    increasing between distinct blocks, so it keeps the model's ranking. A block's rate is
    shrunk towards its mean raw value by ``CALIBRATION_PRIOR_ROWS`` pseudo-rows: the few rows of
    a tail block (all adopters, say) do not make a certainty of it."""
    order = np.argsort(raw, kind="stable")
    raw, y = raw[order], y[order].astype(np.float64)
    fitted = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(raw, y).predict(raw)
    starts = np.flatnonzero(np.r_[True, np.diff(fitted) != 0])
    sizes = np.diff(np.r_[starts, len(raw)])
    centres = np.add.reduceat(raw, starts) / sizes
    rates = fitted[starts]
    xs = centres
    ys = np.maximum.accumulate((sizes * rates + CALIBRATION_PRIOR_ROWS * centres) / (sizes + CALIBRATION_PRIOR_ROWS))
    if xs[0] > 0:
        xs, ys = np.r_[0.0, xs], np.r_[0.0, ys]
    if xs[-1] < 1:
        xs, ys = np.r_[xs, 1.0], np.r_[ys, 1.0]
    return xs, ys


def calibration_bins(scores: np.ndarray, y: np.ndarray, bins: int = CALIBRATION_BINS) -> list[dict[str, float]]:
    """Holdout rows in ``bins`` quantile bins of score: mean score (0-100) against the observed
    adoption rate (x100)."""
    order = np.argsort(scores, kind="stable")
    out = []
    for chunk in np.array_split(order, min(bins, len(order))):
        if len(chunk):
            out.append(
                {"score": round(float(scores[chunk].mean()), 2), "observed": round(100 * float(y[chunk].mean()), 2)}
            )
    return out


@dataclass(frozen=True)
class ProductModel:
    """A fitted product model: ``score(X)`` gives calibrated adoption probability x100."""

    product: str
    columns: np.ndarray  # the feature columns it reads
    model: HistGradientBoostingClassifier | None  # None: too few labels, the prior for everyone
    knots: tuple[np.ndarray, np.ndarray]
    prior: float

    def raw(self, features: np.ndarray) -> np.ndarray:
        if self.model is None:
            return np.full(len(features), self.prior)
        with threadpool_limits(THREADS):
            return self.model.predict_proba(features[:, self.columns])[:, 1]

    def score(self, features: np.ndarray) -> np.ndarray:
        if self.model is None:
            return np.full(len(features), 100 * self.prior, dtype=np.float32)
        return (100 * np.interp(self.raw(features), *self.knots)).astype(np.float32)


def _split(n: int, y: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows for train, calibration and holdout, each stratified by ``y``."""
    rest, holdout = train_test_split(np.arange(n), test_size=HOLDOUT_SHARE, stratify=y, random_state=seed)
    share = CALIBRATION_SHARE / (1 - HOLDOUT_SHARE)
    train, calib = train_test_split(rest, test_size=share, stratify=y[rest], random_state=seed + 1)
    return train, calib, holdout


def baseline_auc(
    features: np.ndarray, y: np.ndarray, train: np.ndarray, holdout: np.ndarray, columns: Sequence[int]
) -> float:
    """Holdout AUC of a logistic regression on ``columns`` only (tier and age in the job)."""
    if not len(columns):
        return 0.5
    imputer = SimpleImputer(strategy="median", keep_empty_features=True)
    baseline = make_pipeline(imputer, StandardScaler(), LogisticRegression(max_iter=500))
    baseline.fit(features[train][:, columns], y[train])
    return float(roc_auc_score(y[holdout], baseline.predict_proba(features[holdout][:, columns])[:, 1]))


def top_features(
    model: ProductModel, features: np.ndarray, y: np.ndarray, names: Sequence[str], seed: int
) -> list[dict[str, Any]]:
    """Permutation importance (drop in holdout AUC) of the model's features, strongest first."""
    rng = np.random.default_rng(seed)
    rows = rng.permutation(len(y))[:IMPORTANCE_ROWS]
    if model.model is None or len(np.unique(y[rows])) < 2:
        return []
    result = permutation_importance(
        model.model,
        features[rows][:, model.columns],
        y[rows],
        scoring="roc_auc",
        n_repeats=IMPORTANCE_REPEATS,
        random_state=seed,
    )
    order = np.argsort(-result.importances_mean, kind="stable")[:TOP_FEATURES]
    return [
        {"feature": names[model.columns[i]], "importance": round(float(result.importances_mean[i]), 4)}
        for i in order
        if result.importances_mean[i] > 0
    ]


def fit_product(
    product: str,
    features: np.ndarray,
    y: np.ndarray,
    names: Sequence[str],
    *,
    baseline_columns: Sequence[int],
    drop: Sequence[str] = (),
    seed: int = 0,
) -> tuple[ProductModel, dict[str, Any]]:
    """Fits, calibrates and evaluates one product's model on labelled rows (``y`` in {0, 1})."""
    with threadpool_limits(THREADS):
        return _fit_product(product, features, y, names, baseline_columns=baseline_columns, drop=drop, seed=seed)


def _fit_product(
    product: str,
    features: np.ndarray,
    y: np.ndarray,
    names: Sequence[str],
    *,
    baseline_columns: Sequence[int],
    drop: Sequence[str],
    seed: int,
) -> tuple[ProductModel, dict[str, Any]]:
    y = np.asarray(y, dtype=np.int8)
    positives = int(y.sum())
    report: dict[str, Any] = {"labelled": len(y), "positives": positives}
    report["positive_rate"] = round(positives / max(len(y), 1), 4)
    columns = np.array([i for i, name in enumerate(names) if name not in drop], dtype=np.int64)
    prior = positives / len(y) if len(y) else 0.0
    if min(positives, len(y) - positives) < MIN_CLASS_ROWS:
        report["model"] = f"none: fewer than {MIN_CLASS_ROWS} positive or negative rows; score = the prior"
        return ProductModel(product, columns, None, (np.array([0.0, 1.0]),) * 2, prior), report
    train, calib, holdout = _split(len(y), y, seed)
    model = HistGradientBoostingClassifier(**MODEL_PARAMS, random_state=seed)
    model.fit(features[train][:, columns], y[train])
    fitted = ProductModel(product, columns, model, (np.array([0.0, 1.0]),) * 2, prior)
    knots = fit_calibration(fitted.raw(features[calib]), y[calib])
    fitted = ProductModel(product, columns, model, knots, prior)
    raw, scores = fitted.raw(features[holdout]), fitted.score(features[holdout])
    auc, base = float(roc_auc_score(y[holdout], raw)), baseline_auc(features, y, train, holdout, baseline_columns)
    report |= {
        "rows": {"train": len(train), "calibration": len(calib), "holdout": len(holdout)},
        "iterations": int(model.n_iter_),
        "auc": round(auc, 4),
        "auc_scores": round(float(roc_auc_score(y[holdout], scores)), 4),
        "baseline_auc": round(base, 4),
        "auc_lift": round(auc - base, 4),
        "brier": round(float(brier_score_loss(y[holdout], scores / 100)), 5),
        "brier_prior": round(float(brier_score_loss(y[holdout], np.full(len(holdout), y[train].mean()))), 5),
        "calibration": calibration_bins(scores, y[holdout]),
        "top_features": top_features(fitted, features[holdout], y[holdout], names, seed),
        "dropped_features": list(drop),
    }
    return fitted, report


# --- the passes over parts ----------------------------------------------------------------------


@dataclass(frozen=True)
class PartTask:
    """One customers part: its file name and what the pass needs."""

    data: Path
    part: str
    index: int
    products: tuple[str, ...]
    vocabulary: Vocabulary = field(default_factory=Vocabulary)
    rates: tuple[float, ...] = ()  # per product: the share of labelled rows to train on
    seed: int = 0
    models: Any = None  # list[ProductModel] or a Ray ObjectRef of it
    top_n: int = 3


# the per-customer tables a part reads, and the columns
_INPUTS = {
    "adoption": ["customer_id", "product", "adopted"],
    "sessions": ["customer_id", "site", "duration_s"],
    "calls": ["customer_id", "line"],
    "contacts": ["customer_id", "product", "control", "responded"],
}


def _input(task: PartTask, table: str, columns: list[str] | None = None) -> pa.Table:
    """The part's rows of ``table`` (``tags``: the tags job's output), empty when it has none."""
    if table == "tags":
        path, schema = layout.job_dir(task.data, "tags") / task.part, layout.TAGS
    else:
        path, schema = layout.table_dir(task.data, table) / task.part, layout.TABLES[table]
    columns = columns or (["customer_id", "tag"] if table == "tags" else _INPUTS.get(table))
    if path.exists():
        return pq.read_table(path, columns=columns)
    return pa.table({name: pa.array([], schema.field(name).type) for name in columns or schema.names})


def _customers(task: PartTask) -> pa.Table:
    return pq.read_table(layout.table_dir(task.data, "customers") / task.part)


def _values(table: pa.Table, column: str) -> Counter[str]:
    counts = pc.value_counts(plain(table.column(column))).to_pylist()
    return Counter({c["values"]: c["counts"] for c in counts if c["values"] is not None})


def census_part(task: PartTask) -> dict[str, Any]:
    """What one part has: tag keys, session sites, hotline lines and contact products with
    their row counts, and its labelled customers per product."""
    customers = _customers(task).column("customer_id")
    labels, stray = adoption_labels(_input(task, "adoption"), plain(customers), task.products)
    return {
        "customers": len(customers),
        "keys": tag_key_counts(_input(task, "tags", ["tag"])),
        "sites": _values(_input(task, "sessions", ["site"]), "site"),
        "lines": _values(_input(task, "calls", ["line"]), "line"),
        "contact_products": _values(_input(task, "contacts", ["product"]), "product"),
        "labelled": (labels >= 0).sum(axis=0).tolist(),
        "adoption_rows_unmatched": stray,
    }


def vocabulary_of(census: Sequence[Mapping[str, Any]], products: Sequence[str], size: int) -> Vocabulary:
    """The run's vocabulary: the ``size`` most frequent tag keys, every site and line (capped
    at ``size``), and the products of past contacts that are also in the products table."""

    def total(key: str) -> Counter[str]:
        return sum((Counter(c[key]) for c in census), Counter())

    seen = total("contact_products")
    return Vocabulary(
        tags=choose_vocabulary(total("keys"), size),
        sites=choose_vocabulary(total("sites"), size),
        lines=choose_vocabulary(total("lines"), size),
        products=tuple(p for p in products if p in seen),
    )


def _features(task: PartTask, customers: pa.Table) -> tuple[np.ndarray, int]:
    tables = {name: _input(task, name) for name in ("tags", "sessions", "calls", "contacts")}
    return part_features({"customers": customers, **tables}, task.vocabulary)


def sample_part(task: PartTask) -> dict[str, Any]:
    """The training rows of one part: features and labels of a uniform sample of its labelled
    customers (one draw per customer, kept for product p when below ``rates[p]``)."""
    customers = _customers(task)
    labels, _ = adoption_labels(_input(task, "adoption"), plain(customers.column("customer_id")), task.products)
    draw = np.random.default_rng([task.seed, task.index]).random(len(labels))
    labels[draw[:, None] >= np.asarray(task.rates)[None, :]] = -1
    rows = np.flatnonzero((labels >= 0).any(axis=1))
    features, stray = _features(task, customers.take(pa.array(rows)))
    return {"features": features, "labels": labels[rows], "tag_rows_unmatched": stray}


def _part_leaders(product: str, ids: pa.Array, scores: np.ndarray, top_n: int) -> pa.Table:
    rows = np.argsort(-scores, kind="stable")[:top_n]
    return pa.table(
        {
            "product": pa.array([product] * len(rows), pa.string()),
            "customer_id": pc.take(ids, pa.array(rows)),
            "score": pa.array(scores[rows], pa.float32()),
        }
    )


def score_part(task: PartTask) -> dict[str, Any]:
    """Scores one part for every product, writes its layout.SCORES part; returns its customers'
    top-N products, each product's top-N customers in the part and score sums."""
    models: list[ProductModel] = resolve(task.models)
    customers = _customers(task)
    ids = plain(customers.column("customer_id"))
    features, stray = _features(task, customers)
    scores = np.column_stack([m.score(features) for m in models]) if models else np.zeros((len(ids), 0))
    n, k = scores.shape
    products = pa.array(task.products, pa.string())
    customer = pc.take(ids, pa.array(np.repeat(np.arange(n), k)))
    product = pc.take(products, pa.array(np.tile(np.arange(k), n)))
    table = pa.table([customer, product, pa.array(scores.ravel(), pa.float32())], schema=layout.SCORES)
    write_table(table, layout.job_dir(task.data, JOB) / task.part)
    top = min(task.top_n, k)
    best = np.argsort(-scores, axis=1, kind="stable")[:, :top]
    top_products = pa.table(
        {
            "customer_id": pc.take(ids, pa.array(np.repeat(np.arange(n), top))),
            "rank": pa.array(np.tile(np.arange(1, top + 1), n), pa.int8()),
            "product": pc.take(products, pa.array(best.ravel())),
            "score": pa.array(np.take_along_axis(scores, best, axis=1).ravel(), pa.float32()),
        }
    )
    leaders = [_part_leaders(task.products[j], ids, scores[:, j], task.top_n) for j in range(k)]
    return {
        "customers": n,
        "top_products": top_products,
        "leaders": pa.concat_tables(leaders) if leaders else None,
        "sums": scores.astype(np.float64).sum(axis=0),
        "histograms": np.stack([np.histogram(scores[:, j], bins=20, range=(0, 100))[0] for j in range(k)]),
        "tag_rows_unmatched": stray,
    }


# --- the job ------------------------------------------------------------------------------------


def _products(data: Path) -> tuple[str, ...]:
    files = layout.parts(data, "products")
    if not files:
        raise NotFound(f"data set {data}: no products table in {layout.table_dir(data, 'products')}")
    names = pa.concat_tables(pq.read_table(f, columns=["product"]) for f in files).column("product")
    return tuple(dict.fromkeys(p for p in names.to_pylist() if p is not None))


def _clear(directory: Path) -> None:
    for old in directory.glob("part-*.parquet"):
        old.unlink()


def merge_leaders(tables: list[pa.Table], top_n: int) -> pa.Table:
    """Each product's ``top_n`` customers over all parts: (product, rank, customer_id, score)."""
    names = ["product", "rank", "customer_id", "score"]
    if not tables:
        return pa.table(
            {
                n: pa.array([], t)
                for n, t in zip(names, [pa.string(), pa.int8(), pa.string(), pa.float32()], strict=True)
            }
        )
    order = [("product", "ascending"), ("score", "descending"), ("customer_id", "ascending")]
    table = pa.concat_tables(tables).sort_by(order)
    keep, rank, seen = [], [], Counter()
    for i, product in enumerate(table.column("product").to_pylist()):
        if seen[product] < top_n:
            seen[product] += 1
            keep.append(i)
            rank.append(seen[product])
    table = table.take(pa.array(keep, pa.int64()))
    columns = [table["product"], pa.array(rank, pa.int8()), table["customer_id"], table["score"]]
    return pa.table(columns, names=names)


@dataclass(frozen=True)
class FitTask:
    """One product's model: the training rows are shared by every product's task."""

    product: str
    index: int
    rows: Any  # (features, labels), or a Ray ObjectRef of it
    names: tuple[str, ...]
    seed: int


def fit_task(task: FitTask) -> tuple[ProductModel, dict[str, Any]]:
    """Fits one product on the rows labelled for it."""
    features, labels = resolve(task.rows)
    rows = labels[:, task.index] >= 0
    baseline = [task.names.index(n) for n in BASELINE_FEATURES if n in task.names]
    return fit_product(
        task.product,
        features[rows],
        labels[rows, task.index],
        task.names,
        baseline_columns=baseline,
        drop=OUTCOME_FEATURES.get(task.product, ()),
        seed=task.seed + task.index,
    )


def run(
    data: Path,
    *,
    top_n: int = 3,
    max_train_rows: int = MAX_TRAIN_ROWS,
    vocabulary_size: int = VOCABULARY_SIZE,
    seed: int = 0,
) -> dict[str, Any]:
    """Fits a model per product, scores every customer x product and writes ``jobs/matrix/``;
    returns the summary (also ``jobs/matrix/summary.json``)."""
    timer, data = JobTimer(), Path(data)
    customer_parts = layout.parts(data, "customers")
    if not customer_parts:
        raise NotFound(f"data set {data}: no customers parts in {layout.table_dir(data, 'customers')}")
    products, out = _products(data), layout.job_dir(data, JOB)
    tasks = [PartTask(data, p.name, i, products, seed=seed, top_n=top_n) for i, p in enumerate(customer_parts)]
    census = run_parts(census_part, tasks, label="matrix census")
    vocabulary = vocabulary_of(census, products, vocabulary_size)
    labelled = np.sum([c["labelled"] for c in census], axis=0)
    rates = tuple(float(min(1.0, max_train_rows / n)) if n else 1.0 for n in labelled)
    tasks = [replace(t, vocabulary=vocabulary, rates=rates) for t in tasks]
    samples = run_parts(sample_part, tasks, label="matrix features")
    names = vocabulary.names()
    fit_timer = JobTimer()
    rows = share((np.vstack([s["features"] for s in samples]), np.vstack([s["labels"] for s in samples])))
    del samples
    fits = [FitTask(p, j, rows, tuple(names), seed) for j, p in enumerate(products)]
    fitted = run_parts(fit_task, fits, label="matrix fit")
    models, reports = [m for m, _ in fitted], {p: r for p, (_, r) in zip(products, fitted, strict=True)}
    fit_s = fit_timer.figures()["wall_s"]
    del rows
    _clear(out)
    shared = share(models)
    scored = run_parts(score_part, [replace(t, models=shared) for t in tasks], label="matrix scores")
    write_table(pa.concat_tables(s["top_products"] for s in scored), out / "top_products.parquet")
    leaders = merge_leaders([s["leaders"] for s in scored if s["leaders"] is not None], top_n)
    write_table(leaders, out / "top_customers.parquet")
    for j, product in enumerate(products):
        reports[product] |= {"labelled_total": int(labelled[j]), "sampled": rates[j] < 1.0}
    summary = {
        "job": JOB,
        "parts": len(census),
        "customers": sum(c["customers"] for c in census),
        "products": list(products),
        "features": vocabulary.describe(),
        "training": (
            f"per product, a uniform sample of at most {max_train_rows} labelled adoption rows, split "
            "60/20/20 into train / calibration / holdout (stratified); AUC on the holdout"
        ),
        **model_figures(reports),
        "models": reports,
        **score_figures(products, scored, leaders),
        "top_n": top_n,
        "adoption_rows_unmatched": sum(c["adoption_rows_unmatched"] for c in census),
        "tag_rows_unmatched": sum(s["tag_rows_unmatched"] for s in scored),
        "fit_s": fit_s,
        **timer.figures(),
    }
    write_summary(out, summary)
    return summary


def model_figures(reports: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Mean AUC of the models and of the baseline, and whether every model beats its baseline."""
    modelled = [r for r in reports.values() if "auc" in r]
    if not modelled:
        return {"auc_mean": None, "baseline_auc_mean": None, "beats_baseline": False}
    return {
        "auc_mean": round(float(np.mean([r["auc"] for r in modelled])), 4),
        "baseline_auc_mean": round(float(np.mean([r["baseline_auc"] for r in modelled])), 4),
        "beats_baseline": all(r["auc"] > r["baseline_auc"] for r in modelled),
    }


def score_figures(products: Sequence[str], scored: list[dict[str, Any]], leaders: pa.Table) -> dict[str, Any]:
    """Per product: mean score, expected adopters (sum of probabilities), a histogram in 5-point
    bins, and the top customers."""
    customers = sum(s["customers"] for s in scored)
    sums = np.sum([s["sums"] for s in scored], axis=0)
    histograms = np.sum([s["histograms"] for s in scored], axis=0)
    top: dict[str, list[dict[str, Any]]] = {p: [] for p in products}
    for row in leaders.to_pylist():
        top[row["product"]].append({"customer_id": row["customer_id"], "score": round(row["score"], 2)})
    return {
        "scores": {
            p: {
                "mean": round(float(sums[j]) / max(customers, 1), 3),
                "expected_adopters": round(float(sums[j]) / 100, 1),
                "histogram_5pt": histograms[j].tolist(),
            }
            for j, p in enumerate(products)
        },
        "top_customers": top,
    }
