"""``esp bench engine`` as a smoke test: the generic engine and the hand-written baseline it is
compared with must find the very same matches, or the ratio compares different work."""

from __future__ import annotations

import pytest

from runtime.dev.bench import bench_engine, bench_engine_sequence


def test_the_engine_and_the_baseline_fire_the_same_number_of_times() -> None:
    result = bench_engine(events=20_000, users=300, entry_size=1000)
    assert result["fired"] == result["baseline_fired"]
    assert result["fired"] > 100  # the synthetic stream really exercises the rule
    assert 0 < result["state_customers"] <= 300
    assert result["engine_events_per_s"] > 0 and result["ratio_to_baseline"] > 0


def test_the_engine_and_the_hand_written_sequence_find_the_same_matches() -> None:
    result = bench_engine_sequence(events=20_000, customers=300, entry_size=1000)
    assert result["fired"] == result["baseline_fired"] > 100
    assert result["ratio_to_baseline"] > 0


def test_in_threads_runs_every_worker_and_raises_the_first_failure_after_all_have_ended():
    import threading

    from runtime.dev.bench import in_threads

    seen: list[int] = []
    in_threads(lambda n, failed: seen.append(n), 4, "t")
    assert sorted(seen) == [0, 1, 2, 3]

    stopped: list[int] = []

    def work(n: int, failed: threading.Event) -> None:
        if n == 0:
            raise ValueError("boom")
        assert failed.wait(5)  # the others see the failure and stop
        stopped.append(n)

    with pytest.raises(ValueError, match="boom"):
        in_threads(work, 3, "t")
    assert sorted(stopped) == [1, 2]  # raised only once every thread has ended
