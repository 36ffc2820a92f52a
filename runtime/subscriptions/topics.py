"""Topic names, subscription patterns (``*`` matches any run of characters), and the router.

One :class:`TopicRouter` is built per config snapshot (``TopicRouter.from_docs``), the same way
by the partition runner, the API and the contact-policy stage. It has two explicit routes:
``streams`` for an output as published, where notify and task requests go to the policy stage
first, and ``after_policy`` for what the stage decided, which goes to the subscribers.
"""

from __future__ import annotations

import fnmatch
import re
import zlib
from collections.abc import Iterable
from functools import lru_cache
from typing import Any, Protocol

from runtime import keys
from runtime.expr import Expr, compile_expr

CONTACT_TOPICS = ("notifications.", "tasks.")  # what the contact policy decides on
DECISIONS_TOPIC = "decisions"


def policy_shard(customer: str, shards: int) -> int:
    return zlib.crc32(customer.encode()) % shards


def atomic_topic(event_type: str) -> str:
    return f"atomic.{event_type}"


@lru_cache(maxsize=4096)
def _pattern(pattern: str) -> re.Pattern[str]:
    return re.compile(fnmatch.translate(pattern.replace("[", "[[]")))


def matches(pattern: str, topic: str) -> bool:
    return _pattern(pattern).match(topic) is not None


class Routes(Protocol):
    """Where the outbox sends an output: its streams."""

    def streams(self, topic: str, event: dict[str, Any]) -> list[str]: ...


class TopicRouter:
    """Which subscriptions (and channel) want a topic; answers are cached per topic. A
    subscription's ``filter`` is applied per event. ``policy_shards`` is the number of policy
    shards; 0 only where nothing runs the policy stage (tests and benchmarks of delivery alone)."""

    def __init__(
        self,
        subscriptions: dict[str, Iterable[str]],
        filters: dict[str, Expr] | None = None,
        channels: Iterable[str] = (),
        policy_shards: int = 0,
    ) -> None:
        self._subscriptions = {name: tuple(patterns) for name, patterns in subscriptions.items()}
        self._filters = filters or {}
        self._channels = frozenset(channels)
        self._policy_shards = policy_shards  # > 0: notify and task requests go to the contact policy first
        self._streams: dict[str, tuple[tuple[str, str], ...]] = {}  # topic -> (subscription or "", stream)
        self._cache: dict[str, tuple[str, ...]] = {}
        self._atomic: dict[str, bool] = {}
        # conservative: False only when no pattern can match an atomic topic
        self.any_atomic = any(
            not p.startswith(("business.", "notifications.", "tasks.", DECISIONS_TOPIC))
            for ps in self._subscriptions.values()
            for p in ps
        )

    @classmethod
    def from_docs(cls, docs: dict[str, list[dict[str, Any]]], *, policy_shards: int = 0) -> TopicRouter:
        """From the config store's snapshot: subscriptions (with filters) and enabled channels."""
        subscriptions = docs.get("subscription", [])
        filters = {d["name"]: compile_expr(d["filter"]) for d in subscriptions if d.get("filter")}
        channels = [d["name"] for d in docs.get("channel", []) if d.get("enabled", True)]
        return cls({d["name"]: d["topics"] for d in subscriptions}, filters, channels, policy_shards)

    def streams(self, topic: str, event: dict[str, Any]) -> list[str]:
        """The streams an output or event on ``topic`` goes to as published: a notify or task
        request to its customer's policy shard, anything else to its subscribers."""
        if self._policy_shards and topic.startswith(CONTACT_TOPICS):
            return [keys.policy_requests(policy_shard(str(event.get("subject", "")), self._policy_shards))]
        return self.subscriber_streams(topic, event)

    @property
    def after_policy(self) -> Routes:
        """The route of what the policy stage decided: straight to the subscribers."""
        return _AfterPolicy(self)

    def subscriber_streams(self, topic: str, event: dict[str, Any]) -> list[str]:
        """The subscription streams (and channel stream) that take ``event`` on ``topic``."""
        routes = self._streams.get(topic)
        if routes is None:
            routes = tuple((name, keys.subscription_stream(name)) for name in self.subscribers(topic))
            if topic.startswith("notifications.") and topic[len("notifications.") :] in self._channels:
                routes += (("", keys.channel_stream(topic[len("notifications.") :])),)
            self._streams[topic] = routes
        if not self._filters:
            return [stream for _, stream in routes]
        return [s for name, s in routes if name not in self._filters or self._filters[name].predicate(event)]

    def subscribers(self, topic: str) -> tuple[str, ...]:
        found = self._cache.get(topic)
        if found is None:
            found = tuple(sorted(n for n, pats in self._subscriptions.items() if any(matches(p, topic) for p in pats)))
            self._cache[topic] = found
        return found

    def wants_atomic(self, event_type: str) -> bool:
        wanted = self._atomic.get(event_type)
        if wanted is None:
            wanted = self._atomic[event_type] = bool(self.subscribers(atomic_topic(event_type)))
        return wanted


class _AfterPolicy:
    """A router's subscriber route, as the outbox calls it (``Routes``)."""

    __slots__ = ("_router",)

    def __init__(self, router: TopicRouter) -> None:
        self._router = router

    def streams(self, topic: str, event: dict[str, Any]) -> list[str]:
        return self._router.subscriber_streams(topic, event)
