"""No input can hurt the platform, against a real redis-server: each bad-input class is
rejected by the Ingestor with its index and reason while the good events of the same batch are
appended (invariant 4), bad profiles never reach the store, and a malformed ack is input error."""

from __future__ import annotations

import orjson
import pytest

from runtime import keys
from runtime.config.store import ConfigStore
from runtime.errors import InputError
from runtime.events.profiles import BatchProfiles, ProfileStore
from runtime.log.partition_log import PartitionLog
from runtime.settings import EspSettings
from runtime.sources.ingest import Ingestor
from runtime.subscriptions.pull import SubscriptionReader

GOOD = b'{"id":"%s","type":"t.x","time":1,"subject":"c%s","data":{"geo":{"lat":1.5,"tags":["a"]}}}'
BAD = {
    "too_deep": b'{"id":"bad","type":"t.x","time":1,"subject":"c","data":{"x":' + b"[" * 10_000 + b"]" * 10_000 + b"}}",
    "integer_out_of_range": b'{"id":"bad","type":"t.x","time":1,"subject":"c","data":{"x":[18446744073709551616]}}',
    "string_too_long": b'{"id":"bad","type":"t.x","time":1,"subject":"c","data":{"x":"' + b"a" * 70_000 + b'"}}',
    "too_many_keys": b'{"id":"bad","type":"t.x","time":1,"subject":"c","data":{"x":{'
    + b",".join(b'"k%d":1' % i for i in range(1001))
    + b"}}}",
    "invalid_number": b'{"id":"bad","type":"t.x","time":1,"subject":"c","data":{"x":NaN}}',
    "invalid_unicode": b'{"id":"bad","type":"t.x","time":1,"subject":"c","data":{"x":"\\ud800"}}',
    "invalid_type": b'{"id":"bad","type":"t.x\\r\\ndata: forged","time":1,"subject":"c","data":{}}',
}


@pytest.fixture
def ingestor(redis_server, redis_client, tmp_path):
    ConfigStore(redis_client).put({"kind": "source", "name": "crm"})
    settings = EspSettings(state_dir=tmp_path, redis_url=redis_server.url, partitions=4, max_backlog_entries=10**6)
    return Ingestor(settings, redis_client)


def logged(client) -> list[str]:
    log = PartitionLog(client, horizon_s=60)
    return sorted(e.id for p in range(4) for entry in log.read_range(p, "0", 1000) for e in entry.events)


@pytest.mark.parametrize("reason", sorted(BAD))
@pytest.mark.parametrize("content_type", ["application/json", "application/x-ndjson"])
def test_one_bad_event_costs_only_itself(ingestor, redis_client, reason, content_type):
    records = [GOOD % (b"g0", b"0"), BAD[reason], GOOD % (b"g1", b"1")]
    body = b"[" + b",".join(records) + b"]" if content_type == "application/json" else b"\n".join(records)
    result = ingestor.ingest(body, content_type, "crm")
    assert result.accepted == 2
    assert [(r["index"], r["reason"]) for r in result.rejected] == [(1, reason)]
    assert logged(redis_client) == ["g0", "g1"]
    quarantined = ingestor.quarantine.list(source="crm", limit=10)
    assert [(q["reason"], q["raw"].encode()[:40]) for q in quarantined] == [(reason, BAD[reason][:40])]


def test_a_mapped_source_is_held_to_the_same_limits(redis_server, redis_client, tmp_path):
    mapping = {"type": "t.x", "id": "id", "subject": "who", "time": "at", "keep_unmapped": True}
    ConfigStore(redis_client).put({"kind": "source", "name": "feed", "mapping": mapping})
    ingestor = Ingestor(EspSettings(state_dir=tmp_path, redis_url=redis_server.url, partitions=4), redis_client)
    body = orjson.dumps({"id": "a", "who": "c", "at": 1, "n": 1}) + b'\n{"id":"b","who":"c","at":1,"n":[[[2e999]]]}'
    result = ingestor.ingest(body, "application/x-ndjson", "feed")
    assert result.accepted == 1
    assert [(r["index"], r["reason"]) for r in result.rejected] == [(1, "invalid_number")]


# --- profiles ------------------------------------------------------------------------------


def test_profile_reads_survive_anything_already_stored(redis_client):
    redis_client.hset(keys.profile("c1"), mapping={"tags": b"1", "segments": b'"x"', "n": b"\xff\xfe not json"})
    assert ProfileStore(redis_client).get("c1") == {"tags": [], "segments": [], "n": "\ufffd\ufffd not json"}


def test_customer_ids_with_key_characters_keep_separate_profiles(redis_client):
    profiles = ProfileStore(redis_client)
    batch = BatchProfiles(redis_client)
    batch.write("v1", {"a:b": {"tags": ["batch"]}})
    batch.switch("v1")
    profiles.put_many({"a:b": {"x": 1}, "a%3Ab": {"x": 2}, "{a}": {"x": 3}})
    got = profiles.get_many(["a:b", "a%3Ab", "{a}"])
    assert got == {"a:b": {"x": 1, "tags": ["batch"]}, "a%3Ab": {"x": 2}, "{a}": {"x": 3}}
    with pytest.raises(InputError):
        batch.switch("v1:*")


# --- acks ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("ids", "cursor"), [(None, 5), (None, ["1-0"]), ([5], None), ("1-0", None), (None, "1")])
def test_a_malformed_ack_is_input_error(redis_client, ids, cursor):
    ConfigStore(redis_client).put({"kind": "subscription", "name": "s", "topics": ["business.*"]})
    reader = SubscriptionReader(redis_client, visibility_timeout_ms=1000)
    with pytest.raises(InputError) as refused:
        reader.ack("s", ack_ids=ids, cursor=cursor)
    assert refused.value.reason in ("invalid_ack_id", "invalid_ack_ids")
