"""runtime.sources.timeparse: time converters per format, and the strptime fast paths.

The per-format table through a mapping (messages, reasons) is in test_adapters_mapping.py;
here, the converters themselves: pattern checks, and properties that the fixed-width fast
paths give what strptime gives (1_700_000_000_000 ms is 2023-11-14T22:13:20Z).
"""

from __future__ import annotations

from datetime import date, datetime, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.sources.coerce import BAD
from runtime.sources.timeparse import TIME_FORMATS, check_pattern, time_converter, zone_named

T = 1_700_000_000_000  # 2023-11-14T22:13:20Z
ZONES = ["UTC", "Asia/Shanghai", "America/New_York", "Europe/London", "Australia/Lord_Howe", "Asia/Kolkata"]
PATTERNS = ["%Y%m%d%H%M%S", "%Y-%m-%d %H:%M:%S", "%d/%m/%Y %H:%M", "%Y%m%d", "%H:%M:%S %d.%m.%Y"]


def strptime_ms(text: str, pattern: str, zone: str) -> int:
    moment = datetime.strptime(text, pattern).replace(tzinfo=ZoneInfo(zone))
    return (moment - datetime(1970, 1, 1, tzinfo=timezone.utc)) // (datetime.resolution * 1000)


def test_utc_is_the_fixed_zone() -> None:
    assert zone_named("UTC") is timezone.utc
    assert zone_named("Etc/UTC") is timezone.utc
    assert zone_named("Asia/Shanghai") == ZoneInfo("Asia/Shanghai")


@pytest.mark.parametrize("fmt", TIME_FORMATS)
def test_named_formats_are_not_patterns(fmt: str) -> None:
    assert check_pattern(fmt) is not None
    convert, expected = time_converter(fmt, timezone.utc)
    assert expected and callable(convert)


@pytest.mark.parametrize(
    ("pattern", "problem"),
    [
        ("%Y%m%d", None),
        ("yyyyMMdd", "expected 'auto', 'epoch_s', 'epoch_ms', 'iso' or a strptime pattern"),
        ("%Y%", "expected a strptime pattern that can read its own output"),
    ],
)
def test_check_pattern(pattern: str, problem: str | None) -> None:
    found = check_pattern(pattern)
    assert found is None if problem is None else found is not None and found.startswith(problem)


@pytest.mark.parametrize(
    ("fmt", "zone", "value", "expected"),
    [
        ("auto", "UTC", "2023-11-14T22:13:20Z", T),
        ("epoch_s", "UTC", 1_700_000_000, T),
        ("epoch_ms", "UTC", 10**16, BAD),  # after year 9999
        ("iso", "Asia/Shanghai", date(2023, 11, 15), T - (6 * 3600 + 13 * 60 + 20) * 1000),
        ("%Y%m%d%H%M%S", "Asia/Shanghai", 20231115061320, T),
        ("%Y%m%d%H%M%S", "UTC", 1.5, BAD),
    ],
)
def test_converters(fmt: str, zone: str, value: object, expected: object) -> None:
    convert, _ = time_converter(fmt, zone_named(zone))
    assert convert(value) is BAD if expected is BAD else convert(value) == expected


@settings(max_examples=300, deadline=None)
@given(
    moment=st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2100, 12, 31)),
    pattern=st.sampled_from(PATTERNS),
    zone=st.sampled_from(ZONES),
)
def test_pattern_fast_paths_agree_with_strptime(moment: datetime, pattern: str, zone: str) -> None:
    text = moment.strftime(pattern)
    convert, _ = time_converter(pattern, zone_named(zone))
    assert convert(text) == strptime_ms(text, pattern, zone)


def test_pattern_hour_cache_across_many_hours_and_transitions() -> None:
    convert, _ = time_converter("%Y%m%d%H%M%S", zone_named("America/New_York"))
    # every 37 minutes for ~6 months: more hours than the cache holds, two DST changes
    texts = [
        datetime.fromtimestamp(1_678_000_000 + i * 2220, tz=timezone.utc).strftime("%Y%m%d%H%M%S") for i in range(7000)
    ]
    assert [convert(t) for t in texts] == [strptime_ms(t, "%Y%m%d%H%M%S", "America/New_York") for t in texts]
