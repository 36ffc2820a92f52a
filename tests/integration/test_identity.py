"""The identity store against a real redis-server: round trips, resolution by time, atomic
merges under concurrent writers, one round trip per batch, Parquet import and the CLI."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redis
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime.cli.data import identities
from runtime.errors import InputError
from runtime.events.identity import (
    MAX_LINKS,
    IdentityLink,
    IdentityStore,
    InvalidRecord,
    Link,
    identity_key,
    import_parquet,
    merge_links,
)
from tests.conftest import round_trips

T = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def command_calls(client: redis.Redis) -> dict[str, int]:
    return {name: stats["calls"] for name, stats in client.info("commandstats").items()}


@pytest.fixture
def store(redis_client) -> IdentityStore:
    return IdentityStore(redis_client)


def test_put_and_resolve_round_trip(store):
    assert (
        store.put([IdentityLink("c1", phone="13800000001", imei="356000000000001"), IdentityLink("c2", phone="2")]) == 2
    )
    assert store.resolve("phone", ["13800000001", "2", "unknown"], T) == ["c1", "c2", None]
    assert store.resolve("imei", ["356000000000001", "13800000001"], T) == ["c1", None]
    assert store.resolve("phone", ["2"]) == ["c2"]  # default: now
    assert store.resolve("phone", [], T) == []
    assert store.count() == 3 and store.count("phone") == 2
    assert store.delete("phone", ["2", "nope"]) == 1
    assert store.resolve("phone", ["2"], T) == [None]


def test_customer_kind_is_the_identity_and_never_touches_redis():
    offline = IdentityStore(redis.Redis(port=1, socket_connect_timeout=0.1))
    assert offline.resolve("customer", ["a", "b"], T) == ["a", "b"]
    with pytest.raises(InputError) as info:
        offline.resolve("email", ["a"], T)
    assert info.value.reason == "invalid_identity"


def test_recycled_number_resolves_by_time(store, redis_client):
    store.put([IdentityLink("alice", phone="139")])
    store.put([IdentityLink("bob", phone="139", valid_from_ms=T)])
    ats = [T - 1, T, T + 1000]
    assert store.resolve("phone", ["139"] * 3, ats) == ["alice", "bob", "bob"]
    # closing bob's link (same valid_from) lets alice's open-ended link show through again
    store.put([IdentityLink("bob", phone="139", valid_from_ms=T, valid_to_ms=T + 500)])
    assert store.resolve("phone", ["139"] * 3, ats) == ["alice", "bob", "alice"]
    assert store.links("phone", ["139", "x"]) == [[Link("alice"), Link("bob", T, T + 500)], []]
    # a link that ended leaves nobody
    store.put([IdentityLink("carol", imei="i1", valid_to_ms=T)])
    assert store.resolve("imei", ["i1", "i1"], [T - 1, T]) == ["carol", None]
    # re-putting the same links is idempotent; the bare-customer encoding is used when it can be
    before = redis_client.hgetall(identity_key("phone"))
    store.put([IdentityLink("bob", phone="139", valid_from_ms=T, valid_to_ms=T + 500)])
    assert redis_client.hgetall(identity_key("phone")) == before
    store.put([IdentityLink("dave", phone="140")])
    assert redis_client.hget(identity_key("phone"), "140") == b"dave"


def test_clients_that_decode_responses_work_too(redis_server):
    store = IdentityStore(redis.Redis.from_url(redis_server.url, decode_responses=True))
    store.put(
        [IdentityLink("a", phone="1"), IdentityLink("b", phone="1", valid_from_ms=T), IdentityLink("c", imei="2")]
    )
    assert store.resolve("phone", ["x", "1", "1"], [T, T - 1, T]) == [None, "a", "b"]
    assert store.resolve("imei", ["2"], T) == ["c"]
    assert store.links("phone", ["1"]) == [[Link("a"), Link("b", T)]]


def test_one_batch_with_several_links_for_one_number(store):
    store.put(
        [
            IdentityLink("a", phone="1", valid_from_ms=T, valid_to_ms=T + 10),
            IdentityLink("b", phone="1", valid_from_ms=T + 10),
            IdentityLink("c", phone="1", valid_from_ms=T + 10),  # same start, later in the batch: wins
        ]
    )
    assert store.resolve("phone", ["1", "1", "1"], [T - 1, T + 5, T + 10]) == [None, "a", "c"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.lists(
            st.tuples(
                st.sampled_from(["a", "b", "c|d"]), st.none() | st.integers(0, 40), st.none() | st.integers(41, 80)
            ),
            min_size=1,
            max_size=6,
        ),
        min_size=1,
        max_size=6,
    )
)
def test_server_merge_matches_merge_links(redis_client, batches):
    redis_client.delete(identity_key("phone"))
    store = IdentityStore(redis_client)
    expected: list[Link] = []
    for batch in batches:
        store.put([IdentityLink(c, phone="p", valid_from_ms=f, valid_to_ms=t) for c, f, t in batch])
        expected = merge_links(expected, [Link(c, f, t) for c, f, t in batch])
    assert store.links("phone", ["p"]) == [expected]


def test_server_caps_links_per_identifier(store):
    store.put([IdentityLink(f"c{i}", phone="p", valid_from_ms=i) for i in range(MAX_LINKS + 3)])
    stored = store.links("phone", ["p"])[0]
    assert len(stored) == MAX_LINKS and stored[0].valid_from == 3 and stored[-1].valid_from == MAX_LINKS + 2


def test_concurrent_writers_lose_no_link(redis_server):
    phones = [f"p{i}" for i in range(200)]
    rounds = 15
    errors: list[BaseException] = []

    def writer(parity: int) -> None:
        try:
            store = IdentityStore(redis.Redis.from_url(redis_server.url))
            for r in range(rounds):
                store.put([IdentityLink(f"w{parity}-{r}", phone=p, valid_from_ms=2 * r + parity) for p in phones])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(parity,)) for parity in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    store = IdentityStore(redis.Redis.from_url(redis_server.url))
    expected = [Link(f"w{s % 2}-{s // 2}", s) for s in range(2 * rounds)]
    assert store.links("phone", phones) == [expected] * len(phones)
    assert store.resolve("phone", phones, 2 * rounds) == [f"w1-{rounds - 1}"] * len(phones)


def test_a_batch_of_10k_resolves_in_one_round_trip(store, redis_client, monkeypatch):
    phones = [f"1380{i:07d}" for i in range(10_000)]
    store.put([IdentityLink(f"c{i}", phone=p, valid_from_ms=None if i % 2 else T) for i, p in enumerate(phones)])
    before_calls = command_calls(redis_client)
    before_total = redis_client.info("stats")["total_commands_processed"]
    with round_trips(monkeypatch) as sent:
        resolved = store.resolve("phone", phones, [T] * len(phones))
    after_total = redis_client.info("stats")["total_commands_processed"]
    after_calls = command_calls(redis_client)
    assert resolved == [f"c{i}" for i in range(10_000)]
    assert len(sent) == 1
    assert after_calls["cmdstat_hmget"] - before_calls.get("cmdstat_hmget", 0) == 1
    assert after_total - before_total <= 3  # the HMGET, the first INFO, the commandstats INFO


def test_put_is_one_round_trip_even_after_a_script_flush(store, redis_client, monkeypatch):
    links = [IdentityLink(f"c{i}", phone=str(i), imei=f"i{i}") for i in range(5_000)]
    store.put(links[:1])
    with round_trips(monkeypatch) as sent:
        store.put(links)
    assert len(sent) == 1
    redis_client.script_flush()
    store.put([IdentityLink("z", phone="0")])  # NOSCRIPT: loads the script and runs the batch again
    assert store.resolve("phone", ["0", "4999"], T) == ["z", "c4999"]
    assert store.resolve("imei", ["i4999"], T) == ["c4999"]


def test_invalid_links_raise_with_index_and_field_and_write_nothing(store):
    bad = [IdentityLink("c", phone="1"), IdentityLink("c", phone="2", valid_from_ms=T, valid_to_ms=T - 1)]
    with pytest.raises(InvalidRecord) as info:
        store.put(bad)
    assert isinstance(info.value, InputError)
    assert (info.value.reason, info.value.index, info.value.field) == ("invalid_identity", 1, "valid_to_ms")
    assert store.count() == 0
    with pytest.raises(InputError):
        store.resolve("phone", ["1", "2"], [T])  # one time per identifier


def write_identities(path, n: int) -> None:
    starts = [datetime(2026, 1, 1, tzinfo=timezone.utc) if i % 10 == 0 else None for i in range(n)]
    table = pa.table(
        {
            "customer": [f"c{i}" for i in range(n)],
            "phone": pa.array([13_800_000_000 + i for i in range(n)], pa.int64()),
            "imei": [f"35{i:013d}" if i % 2 == 0 else None for i in range(n)],
            "valid_from": pa.array(starts, pa.timestamp("us", tz="UTC")),
            "valid_to": pa.array([None] * n, pa.int64()),
        }
    )
    pq.write_table(table, path)


def test_parquet_import_of_100k_rows(store, tmp_path):
    path = tmp_path / "links.parquet"
    write_identities(path, 100_000)
    calls: list[tuple[int, int]] = []
    assert import_parquet(store, path, batch_size=30_000, progress=lambda d, t: calls.append((d, t))) == 100_000
    assert calls == [(30_000, 100_000), (60_000, 100_000), (90_000, 100_000), (100_000, 100_000)]
    assert store.count("phone") == 100_000 and store.count("imei") == 50_000
    phones = [str(13_800_000_000 + i) for i in (0, 1, 10, 99_999, 54_321)]
    assert store.resolve("phone", phones, T) == ["c0", "c1", "c10", "c99999", "c54321"]
    # rows with valid_from start at 2026-01-01: before that they resolve to nobody
    assert store.resolve("phone", phones, T - 1) == [None, "c1", None, "c99999", "c54321"]
    assert store.resolve("imei", ["350000000054320", "350000000054321"], T) == ["c54320", None]
    # re-importing is idempotent
    before = store.links("phone", phones)
    import_parquet(store, path)
    assert store.links("phone", phones) == before


def test_parquet_import_reports_the_bad_row(store, tmp_path):
    path = tmp_path / "bad.parquet"
    table = pa.table({"customer": ["a", "b", "", "d"], "imei": ["1", "2", "3", "4"], "valid_from": ["", "", "", "x"]})
    pq.write_table(table, path)
    with pytest.raises(InvalidRecord) as info:
        import_parquet(store, path, batch_size=2)
    assert (info.value.index, info.value.field) == (2, "customer")
    assert store.resolve("imei", ["1", "2", "3"], T) == ["a", "b", None]  # the batch before it is stored
    pq.write_table(pa.table({"customer": ["a"]}), path)
    with pytest.raises(InputError) as missing:
        import_parquet(store, path)
    assert missing.value.reason == "invalid_parquet"
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    with pytest.raises(InputError) as junk:
        import_parquet(store, tmp_path / "junk.parquet")
    assert junk.value.reason == "invalid_parquet"


def test_cli_import_and_resolve(redis_server, tmp_path):
    path = tmp_path / "links.parquet"
    write_identities(path, 1_000)
    runner = CliRunner()
    result = runner.invoke(identities, ["import", str(path), "--redis-url", redis_server.url, "--batch-size", "400"])
    assert result.exit_code == 0, result.output
    assert result.stderr.count("identities: ") == 3  # a progress line per batch
    assert "imported 1,000 identities rows" in result.stdout
    result = runner.invoke(
        identities,
        ["resolve", "phone", "13800000001", "0", "--at", "2026-01-01T00:00:00Z"],
        env={"ESP_REDIS_URL": redis_server.url},
    )
    assert result.exit_code == 0, result.output
    assert [json.loads(line) for line in result.stdout.splitlines()] == [
        {"phone": "13800000001", "customer": "c1"},
        {"phone": "0", "customer": None},
    ]


def test_cli_errors_are_one_json_line(redis_server, tmp_path):
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"nope")
    runner = CliRunner()
    result = runner.invoke(identities, ["import", str(junk), "--redis-url", redis_server.url])
    assert result.exit_code == 2
    assert json.loads(result.stderr.strip().splitlines()[-1])["error"]["reason"] == "invalid_parquet"
    result = runner.invoke(identities, ["resolve", "phone", "1", "--redis-url", "redis://127.0.0.1:1/0"])
    assert result.exit_code == 2
    assert json.loads(result.stderr)["error"]["reason"] == "redis_unavailable"
    result = runner.invoke(identities, ["resolve", "phone", "1", "--at", "yesterday", "--redis-url", redis_server.url])
    assert result.exit_code == 2
    assert json.loads(result.stderr)["error"]["reason"] == "invalid_time"
