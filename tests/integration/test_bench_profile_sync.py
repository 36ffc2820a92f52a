"""``esp bench``'s profile sync figures on a small run: every part's profiles are written and
read back as readers see them, and the figures are there for each way of writing."""

from __future__ import annotations

from pathlib import Path

from runtime.dev.bench import bench_profile_sync


def test_profile_sync_bench_writes_every_part_and_reads_them_back(tmp_path: Path) -> None:
    results = bench_profile_sync(tmp_path, customers=3_000, batch=500)
    assert results["job_checked"] and results["checked"]
    assert results["job_write"]["parts"] >= 1
    for measure in ("job_write", "batch_write", "put_many"):
        assert results[measure]["customers_per_s"] > 0
