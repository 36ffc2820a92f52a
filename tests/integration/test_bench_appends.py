"""``esp bench``'s append figures on a small run: the ids sent again are all found duplicates, on
a first day and behind full past days, and a full horizon costs Redis more per id than a first
day (every past day is looked at for every new id)."""

from __future__ import annotations

from pathlib import Path

from runtime.dev.bench import bench_appends


def test_appends_bench_finds_every_duplicate_and_prices_each_past_day(tmp_path: Path) -> None:
    results = bench_appends(tmp_path, ids_per_day=8_000, past_days=3, request_events=1_000, partitions=8)
    for case, past in (("fresh", 0), ("full_horizon", 3)):
        measure = results[case]
        assert measure["past_days_full"] == past
        assert measure["duplicates_found"] == measure["duplicates_sent"] == 1_600
        assert measure["ids_per_s"] > 0 and measure["redis_cpu_us_per_id"] > 0
    assert results["full_horizon"]["redis_cpu_us_per_id"] > results["fresh"]["redis_cpu_us_per_id"]
