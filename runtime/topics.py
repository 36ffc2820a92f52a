"""Topic names and subscription patterns (``*`` matches any run of characters)."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from functools import lru_cache


def atomic_topic(event_type: str) -> str:
    return f"atomic.{event_type}"


@lru_cache(maxsize=4096)
def _pattern(pattern: str) -> re.Pattern[str]:
    return re.compile(fnmatch.translate(pattern.replace("[", "[[]")))


def matches(pattern: str, topic: str) -> bool:
    return _pattern(pattern).match(topic) is not None


class TopicRouter:
    """Which subscriptions want a topic; answers are cached per topic."""

    def __init__(self, subscriptions: dict[str, Iterable[str]]) -> None:
        self._subscriptions = {name: tuple(patterns) for name, patterns in subscriptions.items()}
        self._cache: dict[str, tuple[str, ...]] = {}
        self._atomic: dict[str, bool] = {}
        # conservative: False only when no pattern can match an atomic topic
        self.any_atomic = any(
            not p.startswith(("business.", "notifications.")) for ps in self._subscriptions.values() for p in ps
        )

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
