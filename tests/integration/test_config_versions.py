"""Versions of a config document never repeat, not even across a delete and a re-create: an
output names the rule version that produced it (invariant 7), so a reused number would let two
different rules claim the same outputs."""

from __future__ import annotations

from runtime.config.store import ConfigStore


def rule(priority: int) -> dict:
    return {"kind": "rule", "name": "reborn", "priority": priority, "when": {"event": "a.b"}, "then": [{"emit": "x"}]}


def test_a_recreated_document_continues_its_version_sequence(redis_client):
    store = ConfigStore(redis_client, history=2)  # a history shorter than the sequence: the counter decides
    versions = [store.put(rule(1))["version"], store.put(rule(2))["version"], store.put(rule(3))["version"]]
    store.delete("rule", "reborn")
    versions.append(store.put(rule(4))["version"])
    store.delete("rule", "reborn")
    versions.append(store.put(rule(5))["version"])
    assert versions == [1, 2, 3, 4, 5]
    assert store.get("rule", "reborn")["version"] == 5
    assert [h["version"] for h in store.history("rule", "reborn")] == [4, 5]


def test_every_change_moves_the_global_version(redis_client):
    store = ConfigStore(redis_client)
    seen = [store.version()]
    for change in (lambda: store.put(rule(1)), lambda: store.delete("rule", "reborn"), lambda: store.put(rule(2))):
        change()
        seen.append(store.version())
    assert seen == sorted(set(seen)), f"global config versions {seen} repeat or go back"
