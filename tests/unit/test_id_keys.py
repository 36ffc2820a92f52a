"""Which keys of remembered ids an append checks and writes (``id_keys``), against a brute-force
enumeration of every key that could hold an id of the horizon."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from runtime.log.partition_log import LONG_HORIZON_DAYS, PERIOD_DAYS, id_keys, period_days


def overlapping(day: int, horizon_days: int) -> set[tuple[int, int]]:
    """Every key of one or PERIOD_DAYS days (beginning on a multiple of its days) that holds a
    day of arrival from ``day - horizon_days`` to ``day``."""
    return {
        (first, span)
        for span in (1, PERIOD_DAYS)
        for first in range(day - horizon_days - 2 * PERIOD_DAYS, day + 1)
        if first % span == 0 and first + span - 1 >= day - horizon_days
    }


@given(st.integers(min_value=0, max_value=40_000), st.integers(min_value=0, max_value=400))
def test_every_key_reaching_into_the_horizon_is_checked_by_kind_newest_first_and_the_written_one_among_them(
    day: int, horizon_days: int
) -> None:
    checked, own, written = id_keys(day, horizon_days)
    assert set(checked) == overlapping(day, horizon_days) and len(checked) == len(set(checked))
    span = period_days(horizon_days)
    for kind in (checked[:own], checked[own:]):  # the written kind first, then the other
        assert [first for first, _ in kind] == sorted((first for first, _ in kind), reverse=True)
    assert {n for _, n in checked[:own]} == {span} and span not in {n for _, n in checked[own:]}
    assert written < own and checked[written] == (day - day % span, span)


def test_a_long_horizon_writes_keys_of_several_days_and_a_short_one_a_key_a_day() -> None:
    assert [period_days(h) for h in (0, 1, LONG_HORIZON_DAYS - 1)] == [1, 1, 1]
    assert [period_days(h) for h in (LONG_HORIZON_DAYS, 7, 30)] == [PERIOD_DAYS] * 3
    checked = id_keys(20_793, 7).checked  # a 7-day horizon: at most 4 keys of three days hold its ids
    assert len([key for key in checked if key[1] == PERIOD_DAYS]) <= 4
