"""Template bombs: nothing is evaluated when a channel is saved, and a render that would build
too big a value, too long a text or loop or call too much fails with its own reason, quickly.

Timings are asserted generously (the machine is shared); ``pytest -s`` prints them.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from runtime.config.documents import parse_document
from runtime.errors import ConfigError
from runtime.subscriptions.templates import (
    MAX_OUTPUT_LENGTH,
    RenderError,
    TemplateError,
    compile_template,
    notification_context,
)
from tests.unit.test_templates import NOTIFICATION, PROFILE

BOUND_S = 0.5
CENTER_BOMB = "{{ 'a'|center(30000000) }}"


def timed(action: Callable[[], object]) -> tuple[object, float]:
    start = time.perf_counter()
    result = action()
    return result, time.perf_counter() - start


def channel(template: str) -> dict[str, object]:
    return {
        "kind": "channel",
        "name": "sms",
        "type": "sms",
        "endpoint": {"url": "http://127.0.0.1:9/send", "internal": True},
        "templates": {"bomb": template},
    }


@pytest.mark.parametrize(
    "source",
    [
        CENTER_BOMB,
        "{{ 'a'|center(3000000000) }}",
        "{% set x = 'a'|center(300000000) %}{{ x|length }}",
        "{% if ('a'|center(300000000))|length > 1 %}y{% endif %}",
        "{{ '%0999999999d' % 1 }}",
        "{{ 'a' * 999999999 }}",
        "{{ 'a' ~ ('b'|center(300000000)) }}",
    ],
)
def test_saving_a_channel_evaluates_nothing(source: str) -> None:
    doc, took = timed(lambda: parse_document(channel(source)))
    print(f"\nPUT-time validation of {source[:40]!r}: {took * 1e3:.2f} ms")
    assert took < BOUND_S
    assert doc.templates == {"bomb": source}  # type: ignore[attr-defined]


@pytest.mark.parametrize("source", ["{{ " + "(" * 5_000 + "1" + ")" * 5_000 + " }}", "{{ " + "9" * 5_000 + " }}"])
def test_a_template_the_parser_cannot_take_is_a_config_error(source: str) -> None:
    with pytest.raises(TemplateError):
        compile_template(source, name="t")
    with pytest.raises(ConfigError):
        parse_document(channel(source))


def render_error(source: str, profile: dict[str, object] | None = None) -> tuple[RenderError, float]:
    template = compile_template(source, name="t")
    context = notification_context(NOTIFICATION, PROFILE if profile is None else profile)
    start = time.perf_counter()
    with pytest.raises(RenderError) as caught:
        template.render(context)
    took = time.perf_counter() - start
    print(f"\nrender of {source[:50]!r}: {caught.value.reason} in {took * 1e3:.2f} ms")
    assert took < BOUND_S
    return caught.value, took


@pytest.mark.parametrize(
    "source",
    [
        CENTER_BOMB,
        "{{ ([('x' * 100000)] * 200)|join }}",
        "{{ [('x' * 100000)] * 100000 }}",
        "{{ ([('x' * 100000)] * 100000)|tojson }}",
        "{{ '%s' % ([('x' * 100000)] * 100000) }}",
        "{{ '%0999999999d' % 1 }}",
        "{{ '%0999999999d'|format(1) }}",
        "{{ 'x' * 1000000 }}",
        "{{ 'aaaa'|replace('', 'x' * 50000) }}",
        "{{ 'x'|indent(100000000) }}",
        "{{ [1]|batch(1000000000, 'x')|list }}",
        "{{ lipsum(1000000) }}",
        "{% set x = 'ab' %}" + "{% set x = x ~ x %}" * 40 + "{{ x|length }}",
        "{% set x = 'ab' %}" + "{% set x = x + x %}" * 40 + "{{ x|length }}",
        "{% set x = 3 %}" + "{% set x = x * x %}" * 40 + "{{ x > 1 }}",
        "{% set ns = namespace(x='a') %}{% for i in range(60) %}{% set ns.x = ns.x ~ ns.x %}{% endfor %}",
        "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
        "{% for i in range(3000) %}{{ 'y' * 100 }}{% endfor %}",
    ],
)
def test_too_big_values_and_texts_fail_as_template_too_large(source: str) -> None:
    error, _ = render_error(source)
    assert error.reason == "template_too_large"
    assert "above the limit" in error.message


@pytest.mark.parametrize(
    "source",
    [
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(40) }}",
    ],
)
def test_endless_work_fails_as_template_work_exceeded(source: str) -> None:
    error, _ = render_error(source)
    assert error.reason == "template_work_exceeded"


@pytest.mark.parametrize(
    "method", ["center(1000000000)", "ljust(1000000000)", "format(1)", "join(['a'])", "format_map({})"]
)
def test_string_methods_that_grow_text_are_refused(method: str) -> None:
    error, _ = render_error("{{ 'a'." + method + " }}")
    assert error.reason == "unsafe_template"


def test_output_just_under_the_cap_renders() -> None:
    template = compile_template("{% for i in range(64) %}{{ 'y' * 1024 }}{% endfor %}", name="t")
    text = template.render(notification_context(NOTIFICATION, PROFILE))
    assert len(text) == MAX_OUTPUT_LENGTH


def test_ordinary_templates_render_as_before() -> None:
    source = (
        "Hi {{ profile.name|upper }}, {% for t in profile.tags %}{{ t }}{% if not loop.last %}, {% endif %}"
        "{% endfor %} {{ [1, 2, 3]|join('-') }} {{ 'a'|center(5) }}|{{ '%05d'|format(42) }} "
        "{{ 'a b'|replace(' ', '_') }} {{ 'x' ~ customer }} {{ 'ab' * 2 }} {{ 2 ** 10 }} {{ profile|tojson }}"
    )
    template = compile_template(source, name="t")
    text, took = timed(lambda: template.render(notification_context(NOTIFICATION, PROFILE)))
    assert text == (
        "Hi LI WEI, cba-fan 1-2-3   a  |00042 a_b xc-42 abab 1024 "
        '{"name": "Li Wei", "msisdn": "+8613800000000", "tags": ["cba-fan"], "segments": ["retail-no-wealth"]}'
    )
    assert took < BOUND_S
