"""The match matrix finds the signal the generator put in: on generated data, its holdout AUC
beats a popularity baseline (the product's adoption rate within the customer's tier), computed
here independently of the job on all labelled rows (in-sample, which only favours the baseline)."""

from __future__ import annotations

from collections import defaultdict

import pyarrow.parquet as pq
import pytest
from sklearn.metrics import roc_auc_score

from runtime.batch import layout, matrix, tags
from runtime.batch.generate import generate

pytestmark = pytest.mark.slow


def test_the_matrix_beats_a_popularity_baseline_on_generated_data(tmp_path, monkeypatch):
    monkeypatch.setenv("ESP_PROGRESS", "0")
    data = tmp_path / "city"
    generate(data, customers=8000, days=7, seed=11)
    tags.run(data)
    summary = matrix.run(data, top_n=3)

    customers = pq.read_table(layout.table_dir(data, "customers")).select(["customer_id", "tier"]).to_pylist()
    tier = {c["customer_id"]: c["tier"] for c in customers}
    adoption = pq.read_table(layout.table_dir(data, "adoption")).to_pylist()
    rate: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for row in adoption:
        counts = rate[(row["product"], tier[row["customer_id"]])]
        counts[0] += row["adopted"]
        counts[1] += 1
    popularity_aucs = []
    for product in summary["products"]:
        rows = [r for r in adoption if r["product"] == product]
        labels = [r["adopted"] for r in rows]
        if len(set(labels)) == 2:
            shares = [rate[(product, tier[r["customer_id"]])] for r in rows]
            popularity_aucs.append(roc_auc_score(labels, [a / n for a, n in shares]))
    mean = sum(m["auc"] for m in summary["models"].values()) / len(summary["models"])
    baseline = sum(popularity_aucs) / len(popularity_aucs)
    print(f"\nmean AUC: matrix (holdout) {mean:.3f}, popularity by tier (in-sample) {baseline:.3f}")
    assert mean > baseline + 0.02
