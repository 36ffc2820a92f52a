"""The per-kind documents (rules, sources, subscriptions) and the registry of kinds:
shorthands, defaults, derived values."""

from __future__ import annotations

import hashlib

import pytest
from pydantic import ValidationError

from runtime.config.documents import KINDS
from runtime.config.types import hash_key
from runtime.rules.models import Action, Condition, Rule
from runtime.sources.models import Source
from runtime.subscriptions.models import Subscription


def test_kinds():
    assert sorted(KINDS) == ["campaign", "channel", "event-type", "policy", "rule", "segment", "source", "subscription"]
    assert all(KINDS[k].model_fields["kind"].default == k for k in KINDS)


@pytest.mark.parametrize(("count", "gte"), [(3, 3), ({"gte": 4}, 4)])
def test_count_shorthand(count, gte):
    assert Condition(event="a", count=count, within="1m").count.gte == gte


def test_count_defaults_to_one_without_window():
    condition = Condition(event="a")
    assert (condition.count.gte, condition.within, condition.where) == (1, 0, None)


def test_bool_is_not_a_count():
    with pytest.raises(ValidationError):
        Condition(event="a", count=True, within="1m")


@pytest.mark.parametrize(
    ("action", "topic"),
    [
        ({"emit": "vip_lead"}, "business.vip_lead"),
        ({"emit": "business.vip_lead"}, "business.vip_lead"),  # the prefix is not doubled
        ({"notify": {"channel": "sms", "template": "t"}}, "notifications.sms"),
        ({"notify": {"channel": "app-push", "template": "t", "campaign": "q4"}}, "notifications.app-push"),
    ],
)
def test_action_topic(action, topic):
    assert Action.model_validate(action).topic == topic


def test_notify_defaults():
    action = Action.model_validate({"notify": {"channel": "sms", "template": "t"}})
    assert action.notify is not None
    assert (action.notify.priority, action.notify.campaign) == (50, None)


def test_source_stores_only_the_key_hash():
    key = "demo-app-key-0123456789"
    stored = Source(name="demo-app", api_key=key).stored()
    assert stored.api_key is None
    assert stored.api_key_sha256 == hashlib.sha256(key.encode()).hexdigest()
    assert key not in stored.model_dump_json()


def test_source_without_key_is_stored_as_is():
    source = Source(name="s", api_key_sha256="0" * 64)
    assert source.stored() is source


def test_hash_key_is_sha256_hex():
    assert hash_key("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_durations_serialize_as_text_and_parse_back():
    rule = Rule.model_validate(
        {"name": "r", "when": {"event": "a", "count": 2, "within": 5_400}, "then": [{"emit": "x"}], "cooldown": "7d"}
    )
    dumped = rule.model_dump(mode="json")
    assert dumped["when"]["within"] == "90m"
    assert dumped["cooldown"] == "1w"
    assert Rule.model_validate(dumped) == rule


def test_documents_are_frozen():
    rule = Rule.model_validate({"name": "r", "when": {"event": "a"}, "then": [{"emit": "x"}]})
    with pytest.raises(ValidationError):
        rule.priority = 1  # type: ignore[misc]


@pytest.mark.parametrize("topic", ["atomic.app.login", "business.*", "*", "notifications.sms", "business.vip_lead"])
def test_subscription_topics_accepted(topic):
    assert Subscription(name="s", topics=[topic]).topics == [topic]


@pytest.mark.parametrize("topic", ["", "Business.x", "business x", ".business", "business/x"])
def test_subscription_topics_refused(topic):
    with pytest.raises(ValidationError, match="topic"):
        Subscription(name="s", topics=["business.ok", topic])


@pytest.mark.parametrize("name", ["a", "app.login", "big-spender_2", "0" * 128])
def test_names_accepted(name):
    assert Subscription(name=name, topics=["*"]).name == name


@pytest.mark.parametrize("name", ["", "A", "-a", "a b", "a/b", "0" * 129, "规则"])
def test_names_refused(name):
    with pytest.raises(ValidationError):
        Subscription(name=name, topics=["*"])
