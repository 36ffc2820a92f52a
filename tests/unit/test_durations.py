"""runtime.durations: parsing and formatting durations as users write them."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.durations import MAX_DURATION_MS, format_duration_ms, parse_duration_ms

SECOND, MINUTE, HOUR, DAY, WEEK = 1000, 60_000, 3_600_000, 86_400_000, 604_800_000


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("500ms", 500),
        ("90s", 90 * SECOND),
        ("30m", 30 * MINUTE),
        ("2h", 2 * HOUR),
        ("7d", 7 * DAY),
        ("1w", WEEK),
        ("0s", 0),
        ("0", 0),
        ("45", 45 * SECOND),  # a bare number is seconds
        ("1.5s", 1500),
        ("0.5m", 30 * SECOND),
        (" 30m ", 30 * MINUTE),
        ("30 m", 30 * MINUTE),
        (90, 90 * SECOND),
        (0, 0),
        (1.5, 1500),
        (0.25, 250),
    ],
)
def test_parse(text, ms):
    assert parse_duration_ms(text) == ms


@pytest.mark.parametrize(
    "value",
    [True, False, None, -1, -0.5, "-5s", "5y", "", "s", "abc", "1.s", "30M", "5 s s", [30], {"s": 1}, "1e3s"],
)
def test_parse_refuses_naming_the_input(value):
    with pytest.raises(ValueError) as info:
        parse_duration_ms(value)
    assert repr(value) in str(info.value)


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (0, "0s"),
        (1, "1ms"),
        (1500, "1500ms"),
        (SECOND, "1s"),
        (90 * SECOND, "90s"),
        (30 * MINUTE, "30m"),
        (90 * MINUTE, "90m"),
        (2 * HOUR, "2h"),
        (36 * HOUR, "36h"),
        (DAY, "1d"),
        (7 * DAY, "1w"),
        (8 * DAY, "8d"),
        (14 * DAY, "2w"),
    ],
)
def test_format_uses_the_largest_exact_unit(ms, text):
    assert format_duration_ms(ms) == text


@settings(max_examples=300, deadline=None)
@given(st.integers(0, MAX_DURATION_MS))
def test_format_then_parse_round_trips(ms):
    assert parse_duration_ms(format_duration_ms(ms)) == ms


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 10**6), st.sampled_from([("ms", 1), ("s", SECOND), ("m", MINUTE), ("h", HOUR), ("d", DAY)]))
def test_whole_units(n, unit):
    name, size = unit
    if n * size > MAX_DURATION_MS:
        with pytest.raises(ValueError, match="longer than the longest accepted"):
            parse_duration_ms(f"{n}{name}")
    else:
        assert parse_duration_ms(f"{n}{name}") == n * size


@pytest.mark.parametrize("text", ["99999999w", "401d", 400 * 86_400 + 1, 1e300, "1" * 40 + "s"])
def test_durations_are_bounded_so_no_document_sizes_unbounded_work(text):
    """A dedupe horizon of 99999999w once made the append script loop over ~700 M day buckets."""
    with pytest.raises(ValueError):
        parse_duration_ms(text)
    assert parse_duration_ms("400d") == MAX_DURATION_MS


def test_millisecond_fractions_of_a_second_are_exact():
    """Regression, once a bug: runtime/durations.py parse_duration_ms, ``int(float(number) * unit)``: float
    truncation drops a millisecond for many decimal inputs: '1.001s' -> 1000 (expected 1001),
    '1.005s' -> 1004, 4.35 (seconds, from YAML) -> 4350 but 1.005 -> 1004. Parsing the
    number with decimal.Decimal (or rounding) is exact."""
    assert parse_duration_ms("1.001s") == 1001
    assert parse_duration_ms("1.005s") == 1005
    assert parse_duration_ms(1.005) == 1005


def test_infinite_duration_is_a_value_error():
    """Regression, once a bug: runtime/durations.py parse_duration_ms: float('inf') (YAML '.inf') raises
    OverflowError, which pydantic does not turn into a validation error, so parse_document
    raises OverflowError instead of ConfigError. Expected: ValueError naming the input."""
    with pytest.raises(ValueError):
        parse_duration_ms(float("inf"))
