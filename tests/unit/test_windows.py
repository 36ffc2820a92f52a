"""runtime.windows: range arithmetic, window definitions, and aggregators whose builtin
shortcut (``over``) equals their ``initialize``/``add``/``result`` fold."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runtime.windows import (
    AGGREGATORS,
    Aggregator,
    SlidingWindow,
    TumblingWindow,
    sliding_floor_ms,
    window_def,
    window_range_ms,
)


@pytest.mark.parametrize(
    ("timestamp_ms", "duration_ms", "expected"),
    [(0, 10, (0, 10)), (9, 10, (0, 10)), (10, 10, (10, 20)), (-1, 10, (-10, 0)), (-10, 10, (-10, 0))],
)
def test_window_range_ms_is_epoch_aligned_and_end_exclusive(timestamp_ms, duration_ms, expected):
    assert window_range_ms(timestamp_ms, duration_ms) == expected


@given(st.integers(-(10**15), 10**15), st.integers(1, 10**9))
def test_window_range_ms_holds_the_timestamp(timestamp_ms, duration_ms):
    start_ms, end_ms = window_range_ms(timestamp_ms, duration_ms)
    assert start_ms <= timestamp_ms < end_ms
    assert end_ms - start_ms == duration_ms
    assert start_ms % duration_ms == 0


def test_sliding_floor_ms_leaves_delta_equal_to_duration_out():
    # within 10: an event 10 ms before the newest has left (0 <= delta < 10)
    assert sliding_floor_ms(110, 10) == 100


def _times(window):
    return window[0::2]


def test_tumbling_insert():
    # |0 ........ 9|10 ....... 19|
    #     3   7       12          12 opens [10, 20): 3 and 7 go; then 8 is late
    window, tumbling = [], TumblingWindow(10)
    for t in (7, 3):
        assert tumbling.insert(window, (t, f"e{t}"), 2)
    assert window == [3, "e3", 7, "e7"]
    assert tumbling.insert(window, (12, "e12"), 2)
    assert _times(window) == [12]
    assert not tumbling.insert(window, (8, "e8"), 2)
    assert _times(window) == [12]


def test_sliding_insert_keeps_delta_below_duration():
    # sliding 10 ms:  3    7    12  13  (out of order)   at 13 the window is (3, 13]
    window, sliding = [], SlidingWindow(10)
    for t in (3, 12, 7, 13):
        assert sliding.insert(window, (t, f"e{t}", t * 10), 3)
    assert window[0::3] == [7, 12, 13]
    assert window[2::3] == [70, 120, 130]


def test_unbounded_sliding_window_keeps_everything():
    window, sliding = [], SlidingWindow(0)
    for t in (5, 1, 10**12):
        sliding.insert(window, (t, "e"), 2)
    assert _times(window) == [1, 5, 10**12]
    assert not sliding.ended(10**12, 10**13)


@pytest.mark.parametrize("window", [SlidingWindow(10), TumblingWindow(10)])
def test_a_window_ends_its_duration_after_its_newest_event(window):
    assert window.ended(100, 110)
    assert not window.ended(101, 110)


def test_definitions_validate():
    assert window_def("tumbling", 5) == TumblingWindow(5)
    assert window_def("sliding", 0) == SlidingWindow(0)
    with pytest.raises(ValueError, match="above 0 ms, got 0"):
        TumblingWindow(0)
    with pytest.raises(ValueError, match="0 ms or more, got -1"):
        SlidingWindow(-1)
    with pytest.raises(ValueError, match="got 'hopping'"):
        window_def("hopping", 5)


NUMBERS = st.one_of(
    st.integers(-(2**70), 2**70), st.floats(allow_nan=False, allow_infinity=False, width=64), st.integers(-5, 5)
)


@pytest.mark.parametrize("name", ["count", "sum", "min", "max", "avg"])
@given(values=st.lists(NUMBERS, min_size=1, max_size=30))
def test_of_equals_the_incremental_fold(name, values):
    """The builtin shortcut gives the same number, of the same type, as adding one by one."""
    aggregator = AGGREGATORS[name]
    folded = aggregator.result(Aggregator.of(aggregator, values))
    shortcut = aggregator.result(aggregator.of(values))
    assert type(shortcut) is type(folded) and shortcut == folded


@given(values=st.lists(st.one_of(st.text(max_size=3), st.integers(-3, 3), st.booleans(), st.floats(-3, 3)), min_size=1))
def test_distinct_of_equals_the_incremental_fold(values):
    aggregator = AGGREGATORS["distinct"]
    assert aggregator.of(values) == Aggregator.of(aggregator, values) == set(values)


@pytest.mark.parametrize("name", ["sum", "min", "max", "avg", "distinct"])
@given(values=st.lists(st.integers(-50, 50), min_size=2, max_size=20))
def test_adding_to_a_state_equals_rebuilding_it(name, values):
    """What the engine does when a window grows at its end: add to the kept state."""
    aggregator = AGGREGATORS[name]
    kept = aggregator.add(aggregator.of(values[:-1]), values[-1])
    assert aggregator.result(kept) == aggregator.result(aggregator.of(values))
