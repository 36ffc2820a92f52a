"""The profile stores' contract, checked on both implementations: Redis (on a real
redis-server) and in memory. Redis-only properties (round trips, key layout, expiry) are in
tests/integration/test_consent_profiles.py."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.errors import InputError
from runtime.events.identity import InvalidRecord
from runtime.events.memory import MemoryBatchProfiles, MemoryProfileStore
from runtime.events.profiles import (
    BatchProfiles,
    BatchProfileStorage,
    ProfileStorage,
    ProfileStore,
    _attrs_problem,
    _plainly_valid,
)

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


def test_a_version_written_again_replaces_each_customers_batch_attributes(stores: Stores) -> None:
    """Past one run of the Redis write script (a thousand customers), and twice: the second
    write of a version replaces what the first wrote for a customer, it does not merge."""
    first = {f"c{i}": {"tags": [f"t{i}"], "scores": {"card": i / 7}, "tier": "gold"} for i in range(2500)}
    assert stores.batch.write("v1", first) == 2500
    assert stores.batch.write("v1", {"c7": {"segments": ["s"]}}) == 1
    stores.batch.switch("v1")
    assert stores.profiles.get_many(["c7", "c2499"]) == {"c7": {"segments": ["s"]}, "c2499": first["c2499"]}


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


_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**65), max_value=2**65),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=5),
    st.sampled_from(["\ud800", "é", "a" * 300, "a" * 70_000, ""]),
)
_VALUES = st.one_of(
    _SCALARS,
    st.lists(_SCALARS, max_size=4),
    st.lists(st.sampled_from(["a" * 40_000, "x", "\udc00", "ü"]), max_size=3),
    st.dictionaries(st.one_of(st.text(max_size=4), st.sampled_from(["", "k" * 300])), _SCALARS, max_size=3),
    st.dictionaries(st.text(max_size=2), st.lists(_SCALARS, max_size=2), max_size=2),
    st.tuples(_SCALARS),
    st.frozensets(st.text(max_size=2), max_size=2),
)
_NAMES = st.one_of(
    st.sampled_from(["tags", "segments", "scores", "tier", "", "n" * 300, "\ud800"]), st.text(max_size=4)
)


@settings(max_examples=1500, deadline=None)
@given(
    customer=st.one_of(st.text(max_size=4), st.sampled_from(["", "c" * 300, "\udc00", "ü"]), st.integers()),
    attrs=st.one_of(st.dictionaries(_NAMES, _VALUES, max_size=4), st.lists(st.text(max_size=2), max_size=1)),
)
def test_the_fast_check_accepts_only_what_the_precise_check_accepts(customer, attrs) -> None:
    """Bulk writes skip the precise walk for profiles ``_plainly_valid`` accepts: it may send
    good profiles to the walk, never let a bad one past it."""
    if _plainly_valid(customer, attrs):
        assert _attrs_problem(customer, attrs) is None


def test_the_fast_check_accepts_the_common_shapes() -> None:
    common = {"tags": ["a", "b"], "segments": [], "scores": {"card": 0.5, "loan": None}, "tier": "gold", "n": 3}
    assert _plainly_valid("c1", common) and _plainly_valid("c1", {"vip": True, "x": None, "f": 1.5})
