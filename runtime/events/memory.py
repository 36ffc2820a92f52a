"""Profiles in a process's memory, for unit tests: :class:`ProfileStorage` and
:class:`BatchProfileStorage` with the Redis stores' behaviour. Attributes are kept encoded as
the Redis stores keep them, so they read back with the same types (a set as a sorted list, a
tuple as a list), and reads merge through the same :func:`merge_profile`. Not thread-safe."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from runtime.events.profiles import (
    check_version,
    decode_value,
    encode_value,
    merge_profile,
    stored_value,
    validate_profiles,
)

Stored = dict[str, bytes]  # attribute name -> encoded value, like one Redis hash


def _encoded(attrs: Mapping[str, Any]) -> Stored:
    return {name: encode_value(stored_value(v)) for name, v in attrs.items() if v is not None}


def _decoded(stored: Stored) -> dict[str, Any]:
    return {name: decode_value(raw) for name, raw in stored.items()}


class MemoryBatchProfiles:
    """:class:`BatchProfileStorage` in dictionaries. Old versions are kept, not expired: a test
    never runs long enough for ``keep_s`` to matter, and readers only see the current one."""

    def __init__(self) -> None:
        self._versions: dict[str, dict[str, Stored]] = {}
        self._current: str | None = None

    def current(self) -> str | None:
        return self._current

    def write(self, version: str, profiles: Mapping[str, Mapping[str, Any]]) -> int:
        check_version(version)
        items = list(profiles.items())
        validate_profiles(items)
        staged = self._versions.setdefault(version, {})
        for customer, attrs in items:
            staged[customer] = _encoded(attrs)
        return len(items)

    def switch(self, version: str) -> str | None:
        check_version(version)
        previous, self._current = self._current, version
        return previous

    def attributes(self, customer: str) -> dict[str, Any]:
        """The current version's attributes of ``customer`` (``{}`` without a version)."""
        staged = self._versions.get(self._current or "", {})
        return _decoded(staged.get(customer, {}))


class MemoryProfileStore:
    """:class:`ProfileStorage` in dictionaries, reading the batch layer of ``batch`` if given."""

    def __init__(self, batch: MemoryBatchProfiles | None = None) -> None:
        self._profiles: dict[str, Stored] = {}
        self._batch = batch

    def put(self, customer: str, attrs: Mapping[str, Any], *, replace: bool = False) -> int:
        return self.put_many({customer: attrs}, replace=replace)

    def put_many(self, profiles: Mapping[str, Mapping[str, Any]], *, replace: bool = False) -> int:
        items = list(profiles.items())
        validate_profiles(items)
        written = 0
        for customer, attrs in items:
            current = {} if replace else self._profiles.get(customer, {})
            kept = {n: raw for n, raw in current.items() if n not in attrs}
            encoded = _encoded(attrs)
            self._store(customer, {**kept, **encoded})
            written += len(encoded)
        return written

    def get(self, customer: str) -> dict[str, Any]:
        return self.get_many([customer])[customer]

    def get_many(self, customers: Sequence[str]) -> dict[str, dict[str, Any]]:
        return {
            customer: merge_profile(
                _decoded(self._profiles.get(customer, {})),
                self._batch.attributes(customer) if self._batch else {},
            )
            for customer in dict.fromkeys(customers)
        }

    def delete(self, customer: str) -> bool:
        return self._profiles.pop(customer, None) is not None

    def change_tag(self, customer: str, tag: str, *, present: bool) -> None:
        """Set or clear one tag, as a rule's ``tag`` action does through the outbox: whatever
        ``tags`` held that is not a list counts as no tags; the result is sorted."""
        stored = self._profiles.get(customer, {})
        tags = decode_value(stored["tags"]) if "tags" in stored else []
        kept = [t for t in tags if t != tag] if isinstance(tags, list) else []
        self._store(customer, {**stored, "tags": encode_value(sorted([*kept, tag] if present else kept))})

    def _store(self, customer: str, stored: Stored) -> None:
        """Keep a profile; like a Redis hash, an empty one does not exist."""
        if stored:
            self._profiles[customer] = stored
        else:
            self._profiles.pop(customer, None)
