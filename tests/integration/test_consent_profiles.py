"""The consent and profile stores against a real redis-server: precedence, order-independent
merges, batched reads, Parquet import, types preserved, invalid input."""

from __future__ import annotations

import json
import threading

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redis
from click.testing import CliRunner

from runtime.cli.data import consents
from runtime.errors import InputError
from runtime.events.consent import CONSENT_KEY, ConsentRecord, ConsentStore, import_parquet
from runtime.events.identity import InvalidRecord
from runtime.events.profiles import ProfileStore, profile_key
from tests.conftest import round_trips

T = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def hmget_calls(client: redis.Redis) -> int:
    return client.info("commandstats").get("cmdstat_hmget", {}).get("calls", 0)


@pytest.fixture
def consent(redis_client) -> ConsentStore:
    return ConsentStore(redis_client)


@pytest.fixture
def profiles(redis_client) -> ProfileStore:
    return ProfileStore(redis_client)


# ---- consent


def test_purpose_flag_overrides_the_global_one(consent):
    consent.put(
        [
            ConsentRecord("a", True, at_ms=T),
            ConsentRecord("a", False, "sms", T),
            ConsentRecord("b", False, at_ms=T),
            ConsentRecord("b", True, "marketing", T),
            ConsentRecord("c", True, "sms", T),
        ]
    )
    who = ["a", "b", "c", "unknown"]
    assert consent.opted_in(who) == [True, False, False, False]
    assert consent.opted_in(who, "sms") == [False, False, True, False]
    assert consent.opted_in(who, "marketing") == [True, True, False, False]
    assert consent.opted_in([], "sms") == []
    assert consent.get(["a", "unknown"]) == [
        {"global": {"opted_in": True, "at_ms": T}, "purposes": {"sms": {"opted_in": False, "at_ms": T}}},
        {"global": None, "purposes": {}},
    ]


def test_later_at_ms_wins_whatever_the_order_of_writes(consent):
    consent.put([ConsentRecord("a", False, at_ms=T + 10)])
    consent.put([ConsentRecord("a", True, at_ms=T)])  # older: ignored
    assert consent.opted_in(["a"]) == [False]
    consent.put([ConsentRecord("a", True, at_ms=T + 11)])
    assert consent.opted_in(["a"]) == [True]
    # within one batch too, and an opt-out wins a tie
    consent.put([ConsentRecord("b", True, "sms", T + 2), ConsentRecord("b", False, "sms", T + 1)])
    consent.put([ConsentRecord("c", False, "sms", T), ConsentRecord("c", True, "sms", T)])
    consent.put([ConsentRecord("c", True, "sms", T)])
    assert consent.opted_in(["b", "c"], "sms") == [True, False]
    # no time means now
    consent.put([ConsentRecord("a", False)])
    assert consent.opted_in(["a"]) == [False]
    assert consent.count() == 3
    assert consent.delete(["a", "nope"]) == 1 and consent.opted_in(["a"]) == [False]


def test_concurrent_consent_writers_converge(redis_server):
    customers = [f"c{i}" for i in range(300)]

    def writer(parity: int) -> None:
        store = ConsentStore(redis.Redis.from_url(redis_server.url))
        for r in range(10):
            at = 2 * r + parity
            store.put([ConsentRecord(c, bool(parity), f"p{at}", at) for c in customers])
            store.put([ConsentRecord(c, bool(parity), None, at) for c in customers])

    threads = [threading.Thread(target=writer, args=(parity,)) for parity in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stored = ConsentStore(redis.Redis.from_url(redis_server.url)).get(customers)
    expected = {
        "global": {"opted_in": True, "at_ms": 19},
        "purposes": {f"p{at}": {"opted_in": bool(at % 2), "at_ms": at} for at in range(20)},
    }
    assert stored == [expected] * len(customers)


def test_10k_consent_checks_in_one_round_trip(consent, redis_client, monkeypatch):
    customers = [f"c{i}" for i in range(10_000)]
    consent.put([ConsentRecord(c, i % 3 == 0, at_ms=T) for i, c in enumerate(customers)])
    before = hmget_calls(redis_client)
    with round_trips(monkeypatch) as sent:
        flags = consent.opted_in(customers, "sms")
    assert len(sent) == 1
    assert flags == [i % 3 == 0 for i in range(10_000)]
    assert hmget_calls(redis_client) == before + 1


@pytest.mark.parametrize(
    ("record", "field"),
    [
        (ConsentRecord("", True), "customer"),
        (ConsentRecord("a", "yes"), "opted_in"),  # type: ignore[arg-type]
        (ConsentRecord("a", True, "SMS!"), "purpose"),
        (ConsentRecord("a", True, "sms", 1.5), "at_ms"),  # type: ignore[arg-type]
    ],
)
def test_invalid_consent_raises_with_index_and_writes_nothing(consent, redis_client, record, field):
    with pytest.raises(InputError) as info:
        consent.put([ConsentRecord("ok", True), record])
    assert isinstance(info.value, InvalidRecord)
    assert (info.value.reason, info.value.index, info.value.field) == ("invalid_consent", 1, field)
    assert redis_client.exists(CONSENT_KEY) == 0


def test_consent_parquet_import(consent, tmp_path):
    n = 20_000
    path = tmp_path / "consents.parquet"
    table = pa.table(
        {
            "customer": [f"c{i // 2}" for i in range(n)],
            "opted_in": ["yes" if i % 4 == 0 else "no" for i in range(n)],
            "purpose": [None if i % 2 == 0 else "sms" for i in range(n)],
            "at": pa.array([T + i for i in range(n)], pa.int64()).cast(pa.timestamp("ms")),
        }
    )
    pq.write_table(table, path)
    progress: list[int] = []
    assert import_parquet(consent, path, batch_size=7_000, progress=lambda d, _t: progress.append(d)) == n
    assert progress == [7_000, 14_000, 20_000]
    # customer c{k}: global row 2k (opted in when k is even), sms row 2k+1 (never)
    assert consent.opted_in(["c0", "c1", "c9999", "c10000"]) == [True, False, False, False]
    assert consent.opted_in(["c0", "c1"], "sms") == [False, False]
    assert consent.get(["c2"])[0]["global"] == {"opted_in": True, "at_ms": T + 4}
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"customer": ["a", "b"], "opted_in": pa.array([1, 2], pa.int8())}), bad)
    with pytest.raises(InvalidRecord) as info:
        import_parquet(consent, bad)
    assert (info.value.index, info.value.field) == (1, "opted_in")


def test_cli_consents_import_and_check(redis_server, tmp_path):
    path = tmp_path / "consents.parquet"
    pq.write_table(pa.table({"customer": ["a", "b"], "opted_in": [True, False], "at_ms": [T, T]}), path)
    runner = CliRunner()
    result = runner.invoke(consents, ["import", str(path), "--redis-url", redis_server.url])
    assert result.exit_code == 0, result.output
    assert "imported 2 consents rows" in result.stdout
    result = runner.invoke(consents, ["check", "a", "b", "--redis-url", redis_server.url])
    assert [json.loads(line)["opted_in"] for line in result.stdout.splitlines()] == [True, False]
    missing = tmp_path / "missing.parquet"
    pq.write_table(pa.table({"customer": ["a"]}), missing)
    result = runner.invoke(consents, ["import", str(missing), "--redis-url", redis_server.url])
    assert result.exit_code == 2
    assert json.loads(result.stderr)["error"]["reason"] == "invalid_parquet"


# ---- profiles


def test_profiles_round_trip_with_types(profiles, redis_client):
    attrs = {
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
    assert profiles.put("c1", attrs) == len(attrs)
    assert profiles.get("c1") == attrs
    got = profiles.get_many(["c1", "c2", "c1"])
    assert got == {"c1": attrs, "c2": {}}
    assert type(got["c1"]["age"]) is int and type(got["c1"]["balance"]) is float and got["c1"]["vip"] is True
    assert redis_client.hget(profile_key("c1"), "name") == b'"Ada"'
    # merge by default; None removes an attribute; sets are stored sorted
    profiles.put("c1", {"age": 37, "name": None, "segments": {"b", "a"}})
    assert profiles.get("c1") == {**{k: v for k, v in attrs.items() if k != "name"}, "age": 37, "segments": ["a", "b"]}
    profiles.put("c1", {"vip": False}, replace=True)
    assert profiles.get("c1") == {"vip": False}
    assert profiles.delete("c1") is True and profiles.delete("c1") is False
    assert profiles.get_many([]) == {}


def test_profiles_many_in_one_round_trip(profiles, redis_client, monkeypatch):
    batch = {f"c{i}": {"i": i, "even": i % 2 == 0} for i in range(2_000)}
    profiles.get_many(["warm-up"])  # connect and load the read script once: neither is the batch's
    with round_trips(monkeypatch) as sent:
        profiles.put_many(batch)
        got = profiles.get_many(list(batch))
    assert len(sent) == 2  # one write (a script run), one read
    assert got == batch


def test_non_json_field_reads_as_its_string(profiles, redis_client):
    redis_client.hset(profile_key("c"), "raw", "not json")
    assert profiles.get("c") == {"raw": "not json"}


@pytest.mark.parametrize(
    ("customer", "attrs", "field"),
    [
        ("", {"a": 1}, "customer"),
        ("c", {"a": {"nested": {"deeper": 1}}}, "a.nested"),  # maps are one level deep (scores: {product: n})
        ("c", {"a": float("nan")}, "a"),
        ("c", {"a": 2**70}, "a"),
        ("c", {"a": [1, object()]}, "a"),
        ("c", {"": 1}, ""),
        ("c", ["a"], "attrs"),
    ],
)
def test_invalid_profiles_raise_with_index_and_write_nothing(profiles, redis_client, customer, attrs, field):
    with pytest.raises(InputError) as info:
        profiles.put_many({"ok": {"a": 1}, customer: attrs})
    assert isinstance(info.value, InvalidRecord)
    assert (info.value.reason, info.value.index, info.value.field) == ("invalid_profile", 1, field)
    assert redis_client.exists(profile_key("ok")) == 0


def test_a_batch_write_stops_at_an_invalid_profile_with_its_index_and_the_client_goes_on(profiles, redis_client):
    """Batch profiles are validated a thousand at a time while Redis stores the thousand before:
    an invalid one far into the call is reported with its index in the call, and the connection
    that had a run in flight serves the next command."""
    from runtime.events.profiles import WRITE_CHUNK, BatchProfiles

    batch = BatchProfiles(redis_client)
    bad = 2 * WRITE_CHUNK + 345
    rows = {f"c{i}": {"tags": [f"t{i % 7}"]} for i in range(3 * WRITE_CHUNK)}
    rows[f"c{bad}"] = {"scores": {"x": float("nan")}}
    with pytest.raises(InvalidRecord) as info:
        batch.write("v1", rows)
    assert (info.value.index, info.value.field) == (bad, "scores")
    assert redis_client.ping()
    assert batch.write("v1", {"c1": {"tags": ["t"]}}) == 1
    batch.switch("v1")
    assert profiles.get("c1") == {"tags": ["t"]}
    assert profiles.get(f"c{bad}") == {}  # never staged


def test_batch_profiles_switch_versions_at_once_and_merge_under_own_attributes(profiles, redis_client):
    from runtime.events.profiles import BatchProfiles

    batch = BatchProfiles(redis_client)
    profiles.put("c1", {"tags": ["vip"], "tier": "gold"})
    batch.write("v1", {"c1": {"segments": ["frequent-travellers"], "tags": ["value:5"], "tier": "silver"}})
    assert profiles.get("c1") == {"tags": ["vip"], "tier": "gold"}  # not switched yet: v1 is invisible
    assert batch.switch("v1") is None
    assert profiles.get("c1") == {"segments": ["frequent-travellers"], "tags": ["value:5", "vip"], "tier": "gold"}
    batch.write("v2", {"c1": {"segments": []}, "c2": {"scores": {"wealth-beginner": 82}}})
    assert batch.switch("v2") == "v1"
    assert profiles.get_many(["c1", "c2"]) == {
        "c1": {"segments": [], "tags": ["vip"], "tier": "gold"},
        "c2": {"scores": {"wealth-beginner": 82}},
    }
    assert 0 < redis_client.ttl("esp:pbatch:v1:c1") <= 86_400  # the old version goes away


def test_a_batch_version_written_a_hash_per_customer_reads_as_the_packed_one(profiles, redis_client):
    """A version stored the way before (a hash per customer, a JSON value per attribute) reads
    exactly as the same profiles written packed; writing the version again replaces the hash."""
    from runtime.events.profiles import BatchProfiles

    rows = {
        "c1": {"tags": ["value:5"], "segments": ["wealth"], "scores": {"card": 0.5}, "tier": "silver", "n": 3},
        "c2": {"tags": ["x"], "ok": True},
    }
    batch = BatchProfiles(redis_client)
    profiles.put("c1", {"tags": ["vip"], "tier": "gold"})
    batch.write("packed", rows)
    batch.switch("packed")
    packed = profiles.get_many(["c1", "c2", "c3"])
    for customer, attrs in rows.items():  # the layout before: HSET of JSON values
        redis_client.hset(f"esp:pbatch:hashed:{customer}", mapping={n: json.dumps(v) for n, v in attrs.items()})
    batch.switch("hashed")
    assert profiles.get_many(["c1", "c2", "c3"]) == packed
    assert packed["c1"] == {**rows["c1"], "tags": ["value:5", "vip"], "tier": "gold"}
    batch.write("hashed", {"c1": {"tier": "bronze"}, "c2": {}})
    assert redis_client.type("esp:pbatch:hashed:c1") == b"string" and redis_client.exists("esp:pbatch:hashed:c2") == 0
    assert profiles.get_many(["c1", "c2"]) == {"c1": {"tags": ["vip"], "tier": "gold"}, "c2": {}}
