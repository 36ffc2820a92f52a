"""``matches()`` runs on RE2: linear time whatever the pattern, at PUT time (constant folding)
and at run time, and a pattern RE2 cannot run is refused at PUT with reason ``invalid_regex``.

Timings are asserted generously (the machine is shared); the measured figures are printed
with ``pytest -s``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from runtime.config.documents import parse_document
from runtime.errors import ConfigError
from runtime.expr import RegexError, compile_expr
from runtime.expr.functions import MAX_PATTERN_LENGTH, compile_pattern

EVIL = "^(a+)+$"  # exponential under a backtracking engine: ~0.3 s at 22 characters in `re`
BOUND_S = 0.5


def timed(action: Callable[[], object]) -> tuple[object, float]:
    start = time.perf_counter()
    result = action()
    return result, time.perf_counter() - start


def test_evil_pattern_folds_at_compile_time_in_milliseconds() -> None:
    source = f"matches('{'a' * 22}!', '{EVIL}')"
    expr, took = timed(lambda: compile_expr(source))
    print(f"\nPUT-time fold, 23-character subject: {took * 1e3:.2f} ms")
    assert took < BOUND_S
    assert expr({}) is False


def test_evil_pattern_folds_the_longest_literal_an_expression_allows() -> None:
    subject = "a" * 1_970 + "!"
    source = f"matches('{subject}', '{EVIL}')"
    expr, took = timed(lambda: compile_expr(source))
    print(f"\nPUT-time fold, {len(subject)}-character subject: {took * 1e3:.2f} ms")
    assert took < BOUND_S
    assert expr({}) is False


@pytest.mark.parametrize("length", [23, 10_000, 1_000_000])
def test_evil_pattern_at_run_time_is_linear(length: int) -> None:
    expr = compile_expr(f"data.text.matches('{EVIL}')")
    ctx = {"data": {"text": "a" * (length - 1) + "!"}}
    answer, took = timed(lambda: expr.predicate(ctx))
    print(f"\nrun time, {length}-character subject: {took * 1e3:.2f} ms")
    assert took < BOUND_S
    assert answer is False
    assert expr.predicate({"data": {"text": "a" * length}}) is True


@pytest.mark.parametrize("pattern", ["(.*a){20}", "(a|aa)+$", "(x+x+)+y", ".*.*.*.*.*.*=.*"])
def test_other_classic_redos_patterns_are_linear(pattern: str) -> None:
    expr = compile_expr(f"data.text.matches('{pattern}')")
    ctx = {"data": {"text": "a" * 10_000 + "x" * 10_000}}
    _, took = timed(lambda: expr.predicate(ctx))
    assert took < BOUND_S, f"{pattern}: {took:.3f} s"


@pytest.mark.parametrize(
    ("pattern", "says"),
    [
        (r"(a)\1", "unsupported regex feature"),
        ("(?=a)", "unsupported regex feature"),
        ("(?<!a)b", "unsupported regex feature"),
        ("a*+", "unsupported regex feature"),
        (r"a\Z", "invalid escape sequence"),  # Python's \Z; RE2 spells it \z
        ("(?x)a b", "invalid perl operator"),
        ("a{1001}", "invalid repetition size"),
        (r"\pL{1000}", "pattern too large"),
        ("(", "missing )"),
        ("a" * (MAX_PATTERN_LENGTH + 1), f"at most {MAX_PATTERN_LENGTH}"),
    ],
)
def test_patterns_re2_cannot_run_are_refused_with_invalid_regex(pattern: str, says: str) -> None:
    with pytest.raises(RegexError) as info:
        compile_expr(f"s.matches(r'{pattern}')", max_length=4000)
    assert info.value.reason == "invalid_regex"
    assert info.value.position == 10
    assert says in info.value.message


@pytest.mark.parametrize(
    "raw",
    [
        {
            "kind": "rule",
            "name": "r",
            "when": {"event": "app.login", "where": r"data.user.matches('(\\w+)\\1')"},
            "then": [{"emit": "business.x"}],
        },
        {"kind": "source", "name": "crm", "filter": "data.email.matches('(?=x)')"},
        {"kind": "subscription", "name": "s", "topics": ["business.*"], "filter": "data.a.matches('(?<=a)b')"},
    ],
)
def test_put_refuses_a_non_re2_pattern_with_its_reason(raw: dict[str, object]) -> None:
    with pytest.raises(ConfigError) as info:
        parse_document(raw)
    assert info.value.to_dict()["reason"] == "invalid_regex"
    assert "unsupported regex feature" in info.value.message


@pytest.mark.parametrize(
    ("pattern", "text", "expected"),
    [
        ("promo", "big-promo-day", True),  # partial match, as in CEL
        ("^promo", "big-promo", False),
        ("^gold$", "gold", True),
        ("^gold$", "gold\n", False),  # RE2's $ is the end of the text (Python's also before a final \n)
        ("gold$", "rose gold", True),
        ("^$", "", True),
        ("", "anything", True),
        (r"^\d+$", "١٢٣", False),  # RE2's \d is ASCII (Python's is any Unicode digit)
        (r"^\p{Greek}+$", "αβγ", True),  # Unicode classes: RE2 only
        ("(?i)^ab.$", "aBé", True),  # '.' is one character, not one UTF-8 byte
        (r"a\.b", "a.b", True),
        (r"a\.b", "axb", False),
        ("a.b", "axb", True),
        (r"price\$", "price$", True),
        (r"^a\$$", "a$", True),
    ],
)
def test_re2_semantics(pattern: str, text: str, expected: bool) -> None:
    assert compile_pattern(pattern)(text) is expected
    assert compile_expr(f"s.matches(r'{pattern}')").predicate({"s": text}) is expected


def test_text_that_is_not_unicode_is_an_error_not_a_crash() -> None:
    expr = compile_expr("s.matches('^a.c$') || s == 'z'")
    assert expr.predicate({"s": "a\ud800c"}) is False
    assert compile_expr("!s.matches('^a.c$')").predicate({"s": "a\ud800c"}) is False


def test_repeated_texts_are_answered_from_the_memo_and_stay_correct() -> None:
    search = compile_pattern("^off.*al$")
    texts = [f"off-{i}-al" if i % 2 else f"on-{i}" for i in range(1_000)]
    for _ in range(2):
        assert [search(text) for text in texts] == [i % 2 == 1 for i in range(1_000)]
