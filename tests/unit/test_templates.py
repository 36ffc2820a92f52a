"""runtime.subscriptions.templates: sandboxed message and payload templates for notification channels."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.errors import ConfigError, InputError
from runtime.subscriptions.templates import RenderError, TemplateError, compile_template, notification_context

NOTIFICATION = {
    "id": "3f2a",
    "type": "notifications.sms",
    "source": "esp/rule/wealth-beginner-offer",
    "subject": "c-42",
    "time": "2026-11-02T09:30:00.000Z",
    "data": {
        "rule": "wealth-beginner-offer",
        "rule_version": 3,
        "count": 2,
        "events": [{"source": "web", "id": "e1"}, {"source": "hotline", "id": "e2"}],
        "notify": {"channel": "sms", "template": "wealth-beginner", "campaign": "wealth-q4", "priority": 50},
    },
}
PROFILE = {"name": "Li Wei", "msisdn": "+8613800000000", "tags": ["cba-fan"], "segments": ["retail-no-wealth"]}


def render(source: str, *, profile: dict | None = None, message: str | None = None, name: str = "t") -> str:
    context = notification_context(NOTIFICATION, PROFILE if profile is None else profile, message)
    return compile_template(source, name=name).render(context)


def test_notification_context_holds_the_documented_variables():
    context = notification_context(NOTIFICATION, PROFILE, "hello")
    assert context == {
        "customer": "c-42",
        "profile": PROFILE,
        "event": NOTIFICATION,
        "data": NOTIFICATION["data"],
        "notify": NOTIFICATION["data"]["notify"],
        "campaign": "wealth-q4",
        "message": "hello",
    }


def test_notification_context_leaves_out_absent_values():
    event = {**NOTIFICATION, "data": {**NOTIFICATION["data"], "notify": {"channel": "sms", "template": "t"}}}
    assert set(notification_context(event, {})) == {"customer", "profile", "event", "data", "notify"}


def test_renders_text_from_profile_notification_and_event():
    source = "Hi {{ profile.name }}, {{ campaign }} for {{ customer }} by {{ data.rule }} v{{ data.rule_version }}"
    assert render(source) == "Hi Li Wei, wealth-q4 for c-42 by wealth-beginner-offer v3"


def test_renders_loops_conditions_and_filters_without_stray_newlines():
    source = "{% for tag in profile.tags %}\n#{{ tag | upper }}\n{% endfor %}\n{{ data.events | length }} events"
    assert render(source) == "#CBA-FAN\n2 events"


def test_text_is_not_html_escaped():
    assert render("{{ profile.name }}", profile={"name": "<b>Tom & Jerry's</b>"}) == "<b>Tom & Jerry's</b>"


def test_mapping_keys_come_before_dict_methods():
    assert render("{{ profile.items }} {{ profile['keys'] }}", profile={"items": 3, "keys": "k"}) == "3 k"


def test_keys_of_data_are_data_even_when_they_look_private():
    assert render("{{ profile._id }} {{ profile.__class__ }}", profile={"_id": 1, "__class__": "gold"}) == "1 gold"


def test_default_and_is_defined_handle_absent_fields():
    assert render("Hi {{ profile.name | default('there') }}", profile={}) == "Hi there"
    assert render("{% if profile.name is defined %}x{% else %}y{% endif %}", profile={}) == "y"


def test_missing_profile_field_names_the_field_and_the_customer():
    with pytest.raises(RenderError) as caught:
        render("Hello\n{{ profile.name }}", profile={}, name="wealth-beginner")
    assert caught.value.message == "template 'wealth-beginner' needs profile.name, which this customer does not have"
    assert (caught.value.reason, caught.value.field, caught.value.line) == ("missing_field", "profile.name", 2)
    assert isinstance(caught.value, InputError)


@pytest.mark.parametrize(
    ("source", "field"),
    [
        ("{{ profile.address.city }}", "profile.address"),  # the first missing link
        ("{{ data.notify.sender }}", "data.notify.sender"),  # the path the template spells
        ("{{ notify.sender }}", "notify.sender"),  # though notify is data.notify
        ("{{ event.data.notify.sender }}", "event.data.notify.sender"),
        ("{{ data.events[1].offset }}", "data.events[1].offset"),
        ("{{ profile['home cell'] }}", "profile['home cell']"),
        ("{{ message }}", "message"),  # only payload templates get one
        ("{{ profile.name | tojson }}", "profile.name"),
        ("{{ profile.name | upper }}", "profile.name"),
    ],
)
def test_missing_field_paths(source, field):
    with pytest.raises(RenderError) as caught:
        render(source, profile={})
    assert caught.value.field == field
    assert f"needs {field}, which" in caught.value.message


def test_missing_notification_field_blames_the_notification():
    with pytest.raises(RenderError, match=r"needs data\.offer, which this notification does not have"):
        render("{{ data.offer }}")


def test_syntax_error_names_the_template_and_the_line():
    with pytest.raises(TemplateError) as caught:
        compile_template("Hello\n{{ profile.name }\nbye", name="vip-welcome")
    assert caught.value.message == "template 'vip-welcome' line 2: unexpected '}' (in: {{ profile.name })"
    assert (caught.value.reason, caught.value.line, caught.value.template) == ("invalid_template", 2, "vip-welcome")
    assert isinstance(caught.value, ConfigError)
    assert caught.value.to_dict()["line"] == 2


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{% if x %}", "line 1: Unexpected end of template"),
        ("a\nb\n{{ x | no_such_filter }}", "line 3: No filter named 'no_such_filter'"),
        ("{% include 'other' %}", "line 1: 'include' is not allowed"),
        ("\n{% import 'macros' as m %}", "line 2: 'import' is not allowed"),
        ("{% from 'm' import f %}", "line 1: 'from ... import' is not allowed"),
        ("{% extends 'base' %}", "line 1: 'extends' is not allowed"),
    ],
)
def test_compile_errors(source, expected):
    with pytest.raises(TemplateError, match=expected):
        compile_template(source, name="t")


def test_unknown_variable_is_refused_at_compile_time():
    with pytest.raises(TemplateError) as caught:
        compile_template("{{ custmer }} {{ profil.name }}", name="t")
    assert caught.value.message == (
        "template 't' uses custmer, profil, which are not a template variable "
        "(variables: customer, profile, event, data, notify, campaign, message)"
    )


def test_variables_read_and_template_locals():
    template = compile_template("{% set n = profile.name %}{{ n }} {{ range(2) | list }} {{ campaign }}", name="t")
    assert template.variables == {"profile", "campaign"}


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ profile.__class__ }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ lipsum.__globals__['os'] }}",
        "{{ '{0.__class__}'.format(1) }}",
        "{{ profile.update({'name': 'x'}) }}",  # no mutating methods
        "{{ data.events.append(1) }}",
        "{{ 2 ** 100000 }}",
    ],
)
def test_sandbox_blocks_escapes(source):
    with pytest.raises(RenderError) as caught:
        render(source, profile={"name": "n"})
    assert caught.value.reason == "unsafe_template"
    assert len(NOTIFICATION["data"]["events"]) == 2  # nothing was mutated


def test_runtime_errors_become_render_errors_with_the_line():
    with pytest.raises(RenderError) as caught:
        render("x\n{{ 1 / 0 }}")
    assert caught.value.message == "template 't' line 2 failed: ZeroDivisionError: division by zero"
    assert (caught.value.reason, caught.value.line) == ("render_failed", 2)


PAYLOAD = '{"to": {{ profile.msisdn | tojson }}, "text": {{ message | tojson }}, "tags": {{ profile.tags | tojson }}}'


def test_render_json_builds_the_payload():
    context = notification_context(NOTIFICATION, PROFILE, "Hi Li Wei")
    payload = compile_template(PAYLOAD, name="sms-gateway").render_json(context)
    assert payload == {"to": "+8613800000000", "text": "Hi Li Wei", "tags": ["cba-fan"]}


def test_tojson_escapes_quotes_newlines_and_keeps_chinese_readable():
    message = '他说:"你好"\n第二行 \\ </script> & \'\t'
    context = notification_context(NOTIFICATION, PROFILE, message)
    template = compile_template('{"text": {{ message | tojson }}}', name="p")
    assert template.render_json(context) == {"text": message}
    assert "你好" in template.render(context)  # not \\u escaped
    assert "\\u003c" not in template.render(context)  # no HTML escaping


def test_render_json_refuses_text_that_is_not_json():
    with pytest.raises(RenderError) as caught:
        compile_template('{"text": "{{ message }}"}', name="p").render_json(
            notification_context(NOTIFICATION, PROFILE, 'say "hi"')
        )
    assert caught.value.reason == "invalid_json"
    assert caught.value.message.startswith("template 'p' did not render valid JSON (Expecting ',' delimiter")
    assert "insert values with '| tojson'" in caught.value.message
    assert caught.value.message.endswith("""'{"text": "say "hi""}'""")


ROUND_TRIP = compile_template('{"text": {{ message | tojson }}, "to": {{ customer | tojson }}}', name="p")
VALUE = compile_template("{{ profile.value | tojson }}", name="p")
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
)


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_any_string_inserted_with_tojson_round_trips(value):
    context = notification_context({**NOTIFICATION, "subject": value}, {}, value)
    assert ROUND_TRIP.render_json(context) == {"text": value, "to": value}
    assert json.loads(ROUND_TRIP.render(context))["text"] == value


@settings(max_examples=200, deadline=None)
@given(JSON_VALUES)
def test_any_json_value_inserted_with_tojson_round_trips(value):
    assert VALUE.render_json(notification_context(NOTIFICATION, {"value": value})) == value
