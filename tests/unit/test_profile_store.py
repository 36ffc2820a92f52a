"""The profile stores' contract, checked on both implementations: Redis (on a real
redis-server) and in memory. Redis-only properties (round trips, key layout, expiry) are in
tests/integration/test_consent_profiles.py."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from runtime.errors import InputError
from runtime.events.identity import InvalidRecord
from runtime.events.memory import MemoryBatchProfiles, MemoryProfileStore
from runtime.events.profiles import BatchProfiles, BatchProfileStorage, ProfileStorage, ProfileStore

ATTRS = {
    "name": "Ada",
    "age": 36,
    "balance": 1234.5,
    "vip": True,
    "churned": False,
    "tags": ["traveller", "wealth"],
    "scores": [70, 12.5],
    "zero": 0,
    "text_number": "42",
}


@dataclass
class Stores:
    profiles: ProfileStorage
    batch: BatchProfileStorage


@pytest.fixture(params=["memory", "redis"])
def stores(request: pytest.FixtureRequest) -> Stores:
    if request.param == "memory":
        batch = MemoryBatchProfiles()
        return Stores(MemoryProfileStore(batch), batch)
    client = request.getfixturevalue("redis_client")
    return Stores(ProfileStore(client), BatchProfiles(client))


def test_attributes_read_back_with_their_types(stores: Stores) -> None:
    profiles = stores.profiles
    assert profiles.put("c1", ATTRS) == len(ATTRS)
    got = profiles.get_many(["c1", "c2", "c1"])
    assert got == {"c1": ATTRS, "c2": {}}
    assert type(got["c1"]["age"]) is int and type(got["c1"]["balance"]) is float and got["c1"]["vip"] is True
    assert profiles.put("c3", {"pair": ("a", 1), "one_level": {"p": 70}}) == 2
    assert profiles.get("c3") == {"pair": ["a", 1], "one_level": {"p": 70}}


def test_put_merges_none_removes_replace_replaces(stores: Stores) -> None:
    profiles = stores.profiles
    profiles.put("c1", ATTRS)
    assert profiles.put("c1", {"age": 37, "name": None, "segments": {"b", "a"}}) == 2
    expected = {**{k: v for k, v in ATTRS.items() if k != "name"}, "age": 37, "segments": ["a", "b"]}
    assert profiles.get("c1") == expected
    assert profiles.put("c1", {"vip": False, "gone": None}, replace=True) == 1
    assert profiles.get("c1") == {"vip": False}
    assert profiles.delete("c1") is True and profiles.delete("c1") is False
    assert profiles.get("c1") == {} and profiles.get_many([]) == {}


def test_put_many_writes_each_customer(stores: Stores) -> None:
    batch = {f"c{i}": {"i": i, "even": i % 2 == 0} for i in range(50)}
    assert stores.profiles.put_many(batch) == 100
    assert stores.profiles.get_many(list(batch)) == batch
    assert stores.profiles.put_many({}) == 0


@pytest.mark.parametrize(
    ("customer", "attrs", "field"),
    [
        ("", {"a": 1}, "customer"),
        ("c", {"a": {"nested": {"deeper": 1}}}, "a.nested"),
        ("c", {"a": float("nan")}, "a"),
        ("c", {"a": 2**70}, "a"),
        ("c", {"tags": "vip"}, "tags"),
        ("c", ["a"], "attrs"),
    ],
)
def test_invalid_profiles_raise_with_index_and_write_nothing(stores: Stores, customer, attrs, field) -> None:
    with pytest.raises(InputError) as info:
        stores.profiles.put_many({"ok": {"a": 1}, customer: attrs})
    assert isinstance(info.value, InvalidRecord)
    assert (info.value.reason, info.value.index, info.value.field) == ("invalid_profile", 1, field)
    assert stores.profiles.get("ok") == {}


def test_batch_versions_switch_at_once_under_own_attributes(stores: Stores) -> None:
    profiles, batch = stores.profiles, stores.batch
    profiles.put("c1", {"tags": ["vip"], "tier": "gold"})
    assert batch.write("v1", {"c1": {"segments": ["frequent-travellers"], "tags": ["value:5"], "tier": "silver"}}) == 1
    assert profiles.get("c1") == {"tags": ["vip"], "tier": "gold"}  # not switched yet: v1 is invisible
    assert batch.current() is None and batch.switch("v1") is None and batch.current() == "v1"
    assert profiles.get("c1") == {"segments": ["frequent-travellers"], "tags": ["value:5", "vip"], "tier": "gold"}
    batch.write("v2", {"c1": {"segments": []}, "c2": {"scores": {"wealth-beginner": 82}}})
    assert batch.switch("v2") == "v1"
    assert profiles.get_many(["c1", "c2"]) == {
        "c1": {"segments": [], "tags": ["vip"], "tier": "gold"},
        "c2": {"scores": {"wealth-beginner": 82}},
    }


def test_batch_versions_must_be_safe_names(stores: Stores) -> None:
    with pytest.raises(InputError, match="batch profile version"):
        stores.batch.write("v 1", {})
    with pytest.raises(InputError, match="batch profile version"):
        stores.batch.switch("a:b")


@pytest.mark.parametrize(
    ("attrs", "field"),
    [
        ({"tags": 1}, "tags"),
        ({"segments": "gold"}, "segments"),
        ({"tags": ["a", 2]}, "tags"),
        ({"tier": "\ud800"}, "tier"),
        ({"\udc00": "x"}, "\\udc00"),
        ({"n": 2**64}, "n"),
        ({"x": float("nan")}, "x"),
        ({"note": "a" * 70_000}, "note"),
        ({"scores": {"p": float("inf")}}, "scores"),
    ],
)
def test_bad_profiles_are_refused_before_anything_is_written(attrs, field) -> None:
    profiles = MemoryProfileStore()  # validation is shared: no Redis needed to hold the data
    with pytest.raises(InvalidRecord) as refused:
        profiles.put("c1", attrs)
    assert refused.value.reason == "invalid_profile"
    assert refused.value.field == field
    refused.value.message.encode()  # the answer can always be encoded
    assert profiles.get("c1") == {}
