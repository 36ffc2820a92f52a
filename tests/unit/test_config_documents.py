"""runtime.config.documents: YAML/JSON to validated documents, and errors that name the
document, the field path, what was expected and what arrived."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from runtime.config.documents import load_yaml_documents, parse_document
from runtime.errors import ConfigError, EspError, ExpressionError, NotFound
from runtime.events.models import EventType
from runtime.rules.models import Rule
from runtime.sources.models import Source
from runtime.subscriptions.models import Subscription

CONFIGS = Path(__file__).resolve().parents[2] / "configs"

RULE = {
    "kind": "rule",
    "name": "login-failures",
    "when": {"event": "app.login", "where": "data.result == 'fail'", "count": 3, "within": "10m"},
    "then": [{"emit": "business.account_risk"}],
    "cooldown": "30m",
}


def rule_with(**changes) -> dict:
    when = {**RULE["when"], **changes.pop("when", {})}
    return {**RULE, "when": when, **changes}


def config_error(raw, **url) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_document(raw, **url)
    return info.value


# -- good documents --------------------------------------------------------------------------


def test_rule_document():
    doc = parse_document(RULE)
    assert isinstance(doc, Rule)
    assert (doc.name, doc.priority, doc.enabled) == ("login-failures", 50, True)
    assert (doc.when.event, doc.when.count.gte, doc.when.within, doc.cooldown) == ("app.login", 3, 600_000, 1_800_000)


@pytest.mark.parametrize(
    ("raw", "model"),
    [
        ({"kind": "source", "name": "crm", "api_key": "k" * 16}, Source),
        ({"kind": "event-type", "name": "app.login", "attributes": {"result": {"type": "string"}}}, EventType),
        ({"kind": "subscription", "name": "marketing", "topics": ["business.*"]}, Subscription),
    ],
)
def test_each_kind(raw, model):
    assert type(parse_document(raw)) is model


def test_url_fills_in_kind_and_name():
    body = {k: v for k, v in RULE.items() if k not in ("kind", "name")}
    doc = parse_document(body, kind="rule", name="from-url")
    assert isinstance(doc, Rule) and doc.name == "from-url"


def test_url_agreeing_with_the_body_is_fine():
    assert parse_document(RULE, kind="rule", name="login-failures").name == "login-failures"


def test_the_input_is_not_modified():
    body = {k: v for k, v in RULE.items() if k != "kind"}
    before = dict(body)
    parse_document(body, kind="rule")
    assert body == before


# -- document-level errors -------------------------------------------------------------------


@pytest.mark.parametrize("raw", [[RULE], "kind: rule", None, 42])
def test_not_a_mapping(raw):
    error = config_error(raw)
    assert error.reason == "invalid_config"
    assert type(raw).__name__ in error.message


def test_kind_mismatch_with_url():
    error = config_error(RULE, kind="source")
    assert "'rule'" in error.message and "'source'" in error.message


def test_name_mismatch_with_url():
    error = config_error(RULE, name="other")
    assert "'login-failures'" in error.message and "'other'" in error.message


@pytest.mark.parametrize("url_kind", [None, "playbook"])
def test_unknown_kind_is_not_found(url_kind):
    raw = {**RULE, "kind": "playbook"}
    with pytest.raises(NotFound) as info:
        parse_document(raw, kind=url_kind)
    assert info.value.reason == "not_found"
    assert "'playbook'" in info.value.message and "rule" in info.value.message


# -- field errors: path, expected, got -------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "path", "got", "expected_fragment"),
    [
        (rule_with(when={"within": "ten minutes"}), "when.within", "ten minutes", "duration"),
        (rule_with(when={"count": 0}), "when.count.gte", 0, "greater than or equal to 1"),
        (rule_with(when={"event": "App Login"}), "when.event", "App Login", "pattern"),
        (rule_with(priority=101), "priority", 101, "less than or equal to 100"),
        (rule_with(then=[]), "then", [], "at least 1"),
        (rule_with(then=[{}]), "then.0", {}, "exactly one of emit, notify"),
        (rule_with(then=[{"emit": "x", "notify": {"channel": "sms", "template": "t"}}]), "then.0", None, "exactly one"),
        (rule_with(then=[{"notify": {"channel": "sms"}}]), "then.0.notify.template", None, "required"),
        (rule_with(cooldown="-1d"), "cooldown", "-1d", "duration"),
        (rule_with(name="Bad Name"), "name", "Bad Name", "pattern"),
        (rule_with(prority=10), "prority", 10, "Extra inputs"),
        ({"kind": "source", "name": "crm", "api_key": "short"}, "api_key", "short", "at least 16"),
        ({"kind": "source", "name": "crm", "identity": "email"}, "identity", "email", "customer"),
        ({"kind": "subscription", "name": "s", "topics": ["Business.X"]}, "topics", ["Business.X"], "Business.X"),
        ({"kind": "subscription", "name": "s", "topics": []}, "topics", [], "at least 1"),
        (
            {"kind": "event-type", "name": "t", "attributes": {"a": {"type": "date"}}},
            "attributes.a.type",
            "date",
            "string",
        ),
    ],
)
def test_field_errors_name_path_expected_and_got(raw, path, got, expected_fragment):
    error = config_error(raw)
    assert isinstance(error, EspError)
    first = error.errors[0]
    assert first["path"] == path
    if got is not None:
        assert first["got"] == got
    assert expected_fragment in first["expected"]
    assert f"field '{path}'" in error.message
    assert error.to_dict()["errors"] == error.errors
    assert error.to_dict()["reason"] == "invalid_config"


def test_message_names_the_document():
    assert config_error(rule_with(priority=-1)).message.startswith("rule 'login-failures': field 'priority'")


def test_count_without_window_is_refused_with_both_values():
    raw = rule_with()
    del raw["when"]["within"]
    error = config_error(raw)
    assert error.errors[0]["path"] == "when"
    assert "count.gte is 3" in error.errors[0]["expected"] and "within" in error.errors[0]["expected"]


def test_every_problem_is_listed():
    raw = rule_with(priority=500, then=[{}], when={"within": "x"})
    paths = sorted(e["path"] for e in config_error(raw).errors)
    assert paths == ["priority", "then.0", "when.within"]


def test_values_yaml_turns_into_non_json_types_are_quoted():
    raw = yaml.safe_load("kind: rule\nname: 2024-01-01\nwhen: {event: a}\nthen: [{emit: x}]")
    error = config_error(raw)
    assert error.errors[0] == {
        "path": "name",
        "expected": "Input should be a valid string",
        "got": "datetime.date(2024, 1, 1)",
    }


# -- expressions are compiled at apply time --------------------------------------------------


@pytest.mark.parametrize("where", ["data.result ==", "data.x >> 1", "import('os')", "data.amount >= ", "(data.a"])
def test_bad_expression_is_refused_at_apply_time(where):
    with pytest.raises(ExpressionError) as info:
        parse_document(rule_with(when={"where": where}))
    error = info.value
    assert isinstance(error, ConfigError)
    assert error.reason == "invalid_expression"
    assert error.message.startswith("rule 'login-failures' field 'when.where': ")
    assert error.expression == where
    assert isinstance(error.position, int) and 0 <= error.position <= len(where)
    assert error.to_dict()["expression"] == where


def test_good_expression_is_kept_as_written():
    assert parse_document(rule_with(when={"where": "data.amount >= 500 && data.currency == 'CNY'"})).when.where == (
        "data.amount >= 500 && data.currency == 'CNY'"
    )


def test_infinite_window_is_a_config_error():
    """Regression, once a bug: runtime/durations.py parse_duration_ms (used by models.DurationMs): YAML
    'within: .inf' gives float('inf'); int(inf) raises OverflowError, which pydantic lets
    through, so parse_document raises OverflowError (an HTTP 500 / CLI traceback) instead
    of ConfigError with path 'when.within'."""
    error = config_error(rule_with(when={"within": float("inf")}))
    assert error.errors[0]["path"] == "when.within"


# -- YAML files ------------------------------------------------------------------------------


def test_load_yaml_documents_from_a_tree(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "a.yaml").write_text("kind: rule\nname: one\n---\n---\nkind: rule\nname: two\n")
    (tmp_path / "b" / "c.yml").write_text("kind: source\nname: three\n")
    (tmp_path / "notes.txt").write_text("kind: rule\n")
    found = list(load_yaml_documents(tmp_path))
    assert found == [
        (f"{tmp_path / 'a.yaml'}#0", {"kind": "rule", "name": "one"}),
        (f"{tmp_path / 'a.yaml'}#2", {"kind": "rule", "name": "two"}),  # the empty document is skipped
        (f"{tmp_path / 'b' / 'c.yml'}#0", {"kind": "source", "name": "three"}),
    ]


def test_load_yaml_documents_from_a_file(tmp_path):
    path = tmp_path / "only.yaml"
    path.write_text("kind: rule\nname: x\n")
    assert list(load_yaml_documents(path)) == [(f"{path}#0", {"kind": "rule", "name": "x"})]


def test_invalid_yaml_names_the_file(tmp_path):
    (tmp_path / "broken.yaml").write_text("kind: rule\nname: [unclosed\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml"):
        list(load_yaml_documents(tmp_path))


def test_empty_directory_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match=re.escape(str(tmp_path))):
        list(load_yaml_documents(tmp_path))


def test_every_shipped_config_document_validates():
    docs = [parse_document(raw) for _, raw in load_yaml_documents(CONFIGS)]
    assert docs, "configs/ holds no documents"
    assert {d.kind for d in docs} >= {"rule", "source"}
