"""Histogram observations are sampled down to about ``per_s`` a second per label set once a label
set had more than that in the previous second (Ray's metrics agent replays each observation)."""

from __future__ import annotations

import random

from runtime.metrics import HistogramSampler


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def kept(sampler: HistogramSampler, clock: Clock, key: str, per_second: int, seconds: int) -> list[int]:
    """How many of ``per_second`` observations of ``key`` were kept in each of ``seconds`` seconds."""
    counts = []
    for _ in range(seconds):
        counts.append(sum(sampler.keep(key) for _ in range(per_second)))
        clock.now += 1
    return counts


def test_every_observation_is_kept_while_a_label_set_stays_under_the_limit() -> None:
    clock = Clock()
    sampler = HistogramSampler(per_s=100, clock=clock, draw=random.Random(1).random)
    assert kept(sampler, clock, "a", 100, 5) == [100] * 5


def test_a_busy_label_set_is_sampled_to_about_the_limit_and_a_quiet_one_is_not() -> None:
    clock = Clock()
    sampler = HistogramSampler(per_s=100, clock=clock, draw=random.Random(7).random)
    busy, quiet = [], []
    for _ in range(6):  # interleaved within each second, as in a dispatcher
        counts = {"busy": 0, "quiet": 0}
        for n in range(5000):
            counts["busy"] += sampler.keep("busy")
            if n % 100 == 0:
                counts["quiet"] += sampler.keep("quiet")
        busy.append(counts["busy"])
        quiet.append(counts["quiet"])
        clock.now += 1
    assert busy[0] == 5000  # nothing known of the second before
    assert all(60 <= n <= 140 for n in busy[1:]), busy  # binomial(5000, 0.02): mean 100, sd 10
    assert quiet == [50] * 6


def test_after_a_silent_gap_a_label_set_starts_unsampled_again() -> None:
    clock = Clock()
    sampler = HistogramSampler(per_s=10, clock=clock, draw=random.Random(3).random)
    assert kept(sampler, clock, "a", 1000, 2)[1] < 1000
    clock.now += 5  # nothing for five seconds: the previous second had none
    assert kept(sampler, clock, "a", 1000, 1) == [1000]
