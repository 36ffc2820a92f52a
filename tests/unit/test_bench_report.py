"""The ``esp bench`` table: each figure against its goal, ratios to the run's own hand loop,
and the README section it regenerates."""

from __future__ import annotations

import pytest

from runtime.dev.bench_report import FIGURES, README_BEGIN, README_END, markdown, update_readme


def run(loop: int = 4_000_000, processed: int = 200_000) -> dict:
    return {
        "host": {"cpus": 2, "python": "3.11"},
        "engine_sequence": {"ratio_to_baseline": 0.05, "baseline_events_per_s": loop},
        "sequence_senders": {
            "runs": [
                {"senders": 1},
                {"senders": 4, "processed_events_per_s": processed, "acked_events_per_s": processed},
            ]
        },
        "delivery": {"single": {"events_per_s": 4_999}},
    }


def row(table: str, label: str) -> list[str]:
    line = next(line for line in table.splitlines() if line.startswith(f"| {label} |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_every_figure_has_a_row_and_unmeasured_ones_say_so():
    table = markdown({})
    for figure in FIGURES:
        assert row(table, figure.label)[1] == "not measured"


def test_end_to_end_is_divided_by_the_hand_loop_of_the_same_run():
    fast = row(markdown(run(loop=4_000_000, processed=200_000)), "end to end, 4 senders, processed")
    slow = row(markdown(run(loop=8_000_000, processed=200_000)), "end to end, 4 senders, processed")
    assert fast[1].startswith("0.050×") and fast[3] == "yes"  # 200k / 4M
    assert slow[1].startswith("0.025×") and slow[3] == "no"
    assert "200,000 events/s" in fast[1]


def test_a_goal_missed_by_one_is_missed():
    assert row(markdown(run()), "single-event webhooks")[3] == "no"


def test_the_readme_section_is_replaced_and_the_rest_kept(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# ESP\nbefore\n{README_BEGIN}\nold table\n{README_END}\nafter\n")
    update_readme(readme, "| new |\n")
    update_readme(readme, "| newer |\n")
    assert readme.read_text() == f"# ESP\nbefore\n{README_BEGIN}\n| newer |\n{README_END}\nafter\n"


def test_a_readme_without_the_section_is_refused(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# ESP\n")
    with pytest.raises(ValueError, match="esp-bench:begin"):
        update_readme(readme, "| t |\n")


def latency_run(p99: float, rate: int = 9_990, missing: int = 0, unexpected: int = 0) -> dict:
    return {
        "ack_to_subscriber_ms": {"p50": 5.0, "p99": p99, "p999": p99 * 2},
        "acked_events_per_s": rate,
        "missing": missing,
        "unexpected": unexpected,
    }


def test_latency_and_memory_rows_read_the_keys_the_benchmarks_write():
    results = {
        "latency": {"requests_500": latency_run(80.0), "requests_100": latency_run(120.5, rate=5_000, unexpected=2)},
        "memory": {"peak_rss_bytes": 3 * 2**30 // 2, "peak_pss_bytes": 2**30},
    }
    table = markdown(results)
    assert row(table, "ack → subscriber p99, 500-event requests")[1:] == ["80.0 ms", "≤ 100 ms", "yes"]
    assert row(table, "ack → subscriber p99, 100-event requests")[1:] == ["120.5 ms", "≤ 100 ms", "no"]
    results["latency"]["requests_100"]["aof_rewrites"] = 1  # the embedded Redis rewrote during the run
    results["latency"]["requests_500"]["aof_rewrites"] = 0
    table = markdown(results)
    assert (
        row(table, "ack → subscriber p99, 100-event requests")[1]
        == "120.5 ms (Redis rewrote its AOF 1× during the load)"
    )
    assert row(table, "ack → subscriber p99, 500-event requests")[1] == "80.0 ms"
    assert row(table, "acknowledged rate, 10 k/s offered, 100-event requests")[3] == "no"
    assert row(table, "latency runs, outputs missing or unexpected")[1:] == ["2", "0", "no"]
    assert row(table, "peak RSS, whole platform, 1 M-event run")[1:] == ["1.50 GiB", "< 2 GiB", "yes"]
    assert row(table, "peak PSS, whole platform, 1 M-event run")[1] == "1.00 GiB"


def test_profile_sync_is_judged_on_the_job_write_and_one_part_is_shown_beside_it():
    results = {"profile_sync": {"job_write": {"customers_per_s": 100_000}, "batch_write": {"customers_per_s": 99_999}}}
    table = markdown(results)
    assert row(table, "profile sync, one part per core (as `esp job sync` runs)")[1:] == [
        "100,000 customers/s",
        "≥ 100,000 customers/s",
        "yes",
    ]
    assert row(table, "profile sync, one part alone")[1:] == ["99,999 customers/s", "—", "–"]


def test_append_rows_read_the_keys_the_benchmark_writes():
    results = {"appends": {"fresh": {"redis_cpu_us_per_id": 3.92}, "full_horizon": {"redis_cpu_us_per_id": 12.57}}}
    table = markdown(results)
    assert row(table, "appends, Redis CPU per new event id, first day")[1:] == ["3.9 µs", "—", "–"]
    assert row(table, "appends, Redis CPU per new event id, 7 full past days")[1:] == ["12.6 µs", "—", "–"]
