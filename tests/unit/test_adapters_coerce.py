"""runtime.sources.coerce: value conversions return the value or BAD, never raise.

The per-field behaviour through a mapping is in test_adapters_mapping.py; here, the edges
where the converters differ from one another.
"""

from __future__ import annotations

import math
from typing import Any, get_args

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runtime.sources.coerce import BAD, COERCERS, as_text, map_key, parse_number, show, to_int, to_string
from runtime.sources.models import ValueType


def test_every_value_type_has_a_coercer() -> None:
    assert set(COERCERS) == set(get_args(ValueType))


@pytest.mark.parametrize(
    ("value", "text", "key", "string"),
    [
        ("a", "a", "a", "a"),
        (7, "7", "7", "7"),
        (2.0, "2", "2", "2.0"),  # an id or map key drops ".0"; a string field keeps the float
        (1.5, "1.5", "1.5", "1.5"),
        (True, "true", "true", "true"),
        (float("inf"), BAD, "inf", BAD),
        (None, BAD, "None", BAD),
    ],
)
def test_text_key_and_string_differ_on_purpose(value: Any, text: Any, key: str, string: Any) -> None:
    assert as_text(value) is text if text is BAD else as_text(value) == text
    assert map_key(value) == key
    assert to_string(value) is string if string is BAD else to_string(value) == string


@pytest.mark.parametrize(
    ("text", "expected"),
    [("42", 42), (" -7 ", -7), ("1.5", 1.5), ("1e3", 1000.0), (".5", 0.5), ("nan", None), ("1_000", None), ("", None)],
)
def test_parse_number(text: str, expected: int | float | None) -> None:
    assert parse_number(text) == expected


def test_int64_bounds() -> None:
    assert to_int(str(2**63 - 1)) == 2**63 - 1
    assert to_int(2**63) is BAD
    assert to_int(str(-(2**63))) == -(2**63)


def test_show_cuts_long_values() -> None:
    assert show("x") == "'x'"
    assert show("x" * 100) == repr("x" * 100)[:77] + "..."


@given(value=st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(), st.lists(st.integers())))
def test_converters_never_raise(value: Any) -> None:
    converters = [as_text, map_key, *COERCERS.values()] + ([parse_number] if isinstance(value, str) else [])
    for convert in converters:
        result = convert(value)
        assert not (isinstance(result, float) and not math.isfinite(result))
