"""The config store's contract, checked on both implementations: the Redis store (on a real
redis-server) and the in-memory one unit tests use. Each behaviour here is one both must keep."""

from __future__ import annotations

import pytest

from runtime.config.memory import MemoryConfigStore
from runtime.config.store import ConfigStorage, ConfigStore
from runtime.errors import ConfigError, NotFound

TOKEN = "subscriber-token-0123456789"


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest) -> ConfigStorage:
    if request.param == "memory":
        return MemoryConfigStore(history=3)
    return ConfigStore(request.getfixturevalue("redis_client"), history=3)


def rule(priority: int, where: str | None = None) -> dict:
    when = {"event": "app.login", **({"where": where} if where else {})}
    return {"kind": "rule", "name": "r", "priority": priority, "when": when, "then": [{"emit": "x"}]}


def test_versions_count_up_and_never_repeat_across_a_delete(store: ConfigStorage) -> None:
    versions = [store.put(rule(p))["version"] for p in (1, 2, 3, 4)]
    store.delete("rule", "r")
    versions.append(store.put(rule(5))["version"])
    assert versions == [1, 2, 3, 4, 5]
    assert store.get("rule", "r")["version"] == 5
    assert [h["priority"] for h in store.history("rule", "r")] == [3, 4, 5]  # the last 3, oldest first


def test_every_change_moves_the_global_version(store: ConfigStorage) -> None:
    seen = [store.version()]
    for change in (lambda: store.put(rule(1)), lambda: store.put(rule(2)), lambda: store.delete("rule", "r")):
        change()
        seen.append(store.version())
    assert seen == [0, 1, 2, 3]


def test_reads_return_what_was_put_with_version_and_time(store: ConfigStorage) -> None:
    assert store.put({"kind": "source", "name": "crm"}, kind="source") == {
        "kind": "source",
        "name": "crm",
        "version": 1,
    }
    record = store.get("source", "crm")
    assert record["name"] == "crm" and record["version"] == 1 and record["updated_at"] > 0
    assert store.find("source", "crm") == record
    record["name"] = "changed"  # a read is a copy
    assert store.get("source", "crm")["name"] == "crm"


def test_missing_documents_and_kinds(store: ConfigStorage) -> None:
    assert store.find("rule", "nope") is None
    with pytest.raises(NotFound, match="no rule named 'nope'"):
        store.get("rule", "nope")
    with pytest.raises(NotFound, match="no rule named 'nope'"):
        store.delete("rule", "nope")
    with pytest.raises(NotFound, match="unknown config kind 'rules'"):
        store.list("rules")


def test_list_and_snapshot_are_sorted_by_name(store: ConfigStorage) -> None:
    for name in ("b", "a", "c"):
        store.put({"kind": "source", "name": name})
    assert [d["name"] for d in store.list("source")] == ["a", "b", "c"]
    version, docs = store.snapshot()
    assert version == 3 and [d["name"] for d in docs["source"]] == ["a", "b", "c"] and docs["rule"] == []


def test_invalid_documents_are_refused_before_anything_is_stored(store: ConfigStorage) -> None:
    store.put({"kind": "event-type", "name": "app.login", "attributes": {"result": {"type": "string"}}})
    with pytest.raises(ConfigError, match=r"field 'data\.gate' is not in event type 'app\.login'"):
        store.put(rule(1, where="data.gate == 'A'"))
    with pytest.raises(ConfigError):
        store.put({"kind": "source"})
    assert store.find("rule", "r") is None and store.version() == 1


def test_a_subscription_token_is_stored_hashed_and_kept_by_a_change_without_it(store: ConfigStorage) -> None:
    store.put({"kind": "subscription", "name": "s", "topics": ["business.*"], "token": TOKEN})
    first = store.get("subscription", "s")
    assert "token" not in first and len(first["token_sha256"]) == 64
    store.put({"kind": "subscription", "name": "s", "topics": ["atomic.*"]})
    assert store.get("subscription", "s")["token_sha256"] == first["token_sha256"]


def test_history_redacts_endpoint_secrets(store: ConfigStorage) -> None:
    secret = "whsec_" + "A" * 32
    webhook = {"url": "http://127.0.0.1:9/hook", "internal": True, "secrets": [secret]}  # no DNS in unit tests
    store.put({"kind": "subscription", "name": "s", "topics": ["business.*"], "mode": "webhook", "webhook": webhook})
    assert secret not in str(store.history("subscription", "s"))
    assert store.get("subscription", "s")["webhook"]["secrets"] == [secret]


# --- refused when saved: validation, whatever the store (in memory here) --------------------


def test_a_webhook_into_esps_own_network_is_refused_when_saved() -> None:
    store = MemoryConfigStore()
    doc = {"kind": "subscription", "name": "hooks", "topics": ["business.*"], "mode": "webhook"}
    with pytest.raises(ConfigError) as refused:
        store.put({**doc, "webhook": {"url": "http://127.0.0.1:8080/hook"}})
    assert "loopback_address" in str(refused.value)
    assert refused.value.errors[0]["path"] == "webhook"
    assert store.list("subscription") == []
    for url, reason in [("http://2130706433/", "loopback_address"), ("http://10.1.2.3/", "private_address")]:
        with pytest.raises(ConfigError, match=reason):
            store.put({**doc, "webhook": {"url": url}})


def test_a_webhook_header_value_with_a_line_break_is_refused_when_saved() -> None:
    """A line break in a header value would end the header and start another (header injection)."""
    store = MemoryConfigStore()
    doc = {"kind": "subscription", "name": "hooks", "topics": ["business.*"], "mode": "webhook"}
    webhook = {"url": "http://127.0.0.1:9/hook", "internal": True}
    for value in ["Bearer t\r\nX-Injected: 1", "a\nb", "a\x00b"]:
        with pytest.raises(ConfigError, match="control character"):
            store.put({**doc, "webhook": {**webhook, "headers": {"Authorization": value}}})
    store.put({**doc, "webhook": {**webhook, "headers": {"Authorization": "Bearer\tt"}}})
    assert store.get("subscription", "hooks")["webhook"]["headers"] == {"Authorization": "Bearer\tt"}


def test_a_huge_dedupe_horizon_is_refused_at_put() -> None:
    with pytest.raises(ConfigError):
        MemoryConfigStore().put({"kind": "source", "name": "s", "dedupe": {"horizon": "99999999w"}})
