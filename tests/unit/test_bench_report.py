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
