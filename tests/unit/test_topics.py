"""runtime.subscriptions.topics: topic names and subscription patterns ('*' matches any run of characters)."""

from __future__ import annotations

from functools import cache

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime import keys
from runtime.subscriptions.topics import TopicRouter, atomic_topic, matches, policy_shard


def test_atomic_topic():
    assert atomic_topic("app.login") == "atomic.app.login"


@pytest.mark.parametrize(
    ("pattern", "topic", "expected"),
    [
        ("business.vip_lead", "business.vip_lead", True),
        ("business.vip_lead", "business.vip_lead2", False),  # anchored at the end
        ("business.vip_lead", "xbusiness.vip_lead", False),  # and at the start
        ("atomic.*", "atomic.app.login", True),  # '*' crosses dots
        ("atomic.*", "atomic.", True),  # and matches the empty run
        ("atomic.*", "atomic", False),
        ("atomic.app.*", "atomic.web.session", False),
        ("*", "notifications.sms", True),
        ("*.sms", "notifications.sms", True),
        ("business.*lead", "business.vip_lead", True),
        ("business.*lead", "business.vip_leads", False),
        ("a*b*c", "a-x-b-y-c", True),
        ("a*b*c", "a-x-c-y-b", False),
        ("atomic.x", "atomicax", False),  # '.' is a literal dot
        ("Atomic.*", "atomic.x", False),  # case-sensitive
        ("a[b]", "a[b]", True),  # '[' is literal, not a character class
        ("a[b]", "ab", False),
        ("a+b", "aab", False),  # regex syntax is literal
        ("a$", "a$", True),
    ],
)
def test_matches(pattern, topic, expected):
    assert matches(pattern, topic) is expected


def glob_oracle(pattern: str, topic: str) -> bool:
    """'*' matches any run (possibly empty); every other character matches itself."""

    @cache
    def go(i: int, j: int) -> bool:
        if i == len(pattern):
            return j == len(topic)
        if pattern[i] == "*":
            return go(i + 1, j) or (j < len(topic) and go(i, j + 1))
        return j < len(topic) and pattern[i] == topic[j] and go(i + 1, j + 1)

    return go(0, 0)


ALPHABET = "ab.*[]-_\\^$+()!"


@settings(max_examples=400, deadline=None)
@given(st.text(ALPHABET, max_size=8), st.text(ALPHABET.replace("*", ""), max_size=10))
def test_matches_agrees_with_a_glob_oracle(pattern, topic):
    assert matches(pattern, topic) is glob_oracle(pattern, topic)


@settings(max_examples=200, deadline=None)
@given(st.text(ALPHABET.replace("*", ""), max_size=10))
def test_a_pattern_without_star_matches_only_itself(topic):
    assert matches(topic, topic)
    assert not matches(topic, topic + "x")


def test_router_lists_subscribers_sorted():
    router = TopicRouter(
        {
            "zeta": ["business.*"],
            "alpha": ["business.vip_lead", "notifications.*"],
            "logins": ["atomic.app.login"],
        }
    )
    assert router.subscribers("business.vip_lead") == ("alpha", "zeta")
    assert router.subscribers("business.account_risk") == ("zeta",)
    assert router.subscribers("notifications.sms") == ("alpha",)
    assert router.subscribers("atomic.web.session") == ()
    assert router.wants_atomic("app.login") is True
    assert router.wants_atomic("web.session") is False


def test_router_is_not_changed_by_its_input_afterwards():
    patterns = ["business.a"]
    subscriptions = {"s": patterns}
    router = TopicRouter(subscriptions)
    patterns.append("business.b")
    subscriptions["t"] = ["*"]
    assert router.subscribers("business.b") == ()


def test_router_answers_are_stable_when_cached():
    router = TopicRouter({"s": ["atomic.*"]})
    first = router.subscribers("atomic.x")
    assert router.subscribers("atomic.x") == first == ("s",)
    assert router.subscribers("business.x") == ()


def test_empty_router():
    router = TopicRouter({})
    assert router.subscribers("anything") == ()
    assert router.wants_atomic("app.login") is False


def test_one_router_routes_requests_to_the_policy_stage_and_decided_contacts_to_subscribers():
    """The same router (one per config snapshot) for the partitions, the API and the stage:
    ``streams`` sends a notify or task request to its customer's policy shard, ``after_policy``
    sends what the stage decided to the subscribers and the channel."""
    docs = {
        "subscription": [{"name": "sent", "topics": ["notifications.*", "tasks.*"]}, {"name": "b", "topics": ["b.*"]}],
        "channel": [{"name": "sms"}],
    }
    router = TopicRouter.from_docs(docs, policy_shards=4)
    request = {"subject": "c1", "data": {}}
    assert router.streams("notifications.sms", request) == [keys.policy_requests(policy_shard("c1", 4))]
    assert router.streams("tasks.vip", request) == [keys.policy_requests(policy_shard("c1", 4))]
    assert router.streams("b.x", request) == [keys.subscription_stream("b")]
    decided = router.after_policy
    sms = [keys.subscription_stream("sent"), keys.channel_stream("sms")]
    assert decided.streams("notifications.sms", request) == sms
    assert decided.streams("tasks.vip", request) == [keys.subscription_stream("sent")]
