"""Ingestion without HTTP against a real redis-server: idempotency, auth, backpressure."""

from __future__ import annotations

import orjson
import pytest

from runtime.config.store import ConfigStore
from runtime.errors import AuthError, Overloaded
from runtime.log.partition_log import PartitionLog
from runtime.settings import EspSettings
from runtime.sources.ingest import Ingestor


def body(ids, kind="t.x") -> bytes:
    return b"\n".join(orjson.dumps({"id": i, "type": kind, "time": 1, "subject": f"s{i}"}) for i in ids)


@pytest.fixture
def ingestor(redis_server, redis_client, tmp_path):
    ConfigStore(redis_client).put({"kind": "source", "name": "crm", "api_key": "crm-key-0123456789abcdef"})
    ConfigStore(redis_client).put({"kind": "source", "name": "billing"})
    settings = EspSettings(state_dir=tmp_path, redis_url=redis_server.url, partitions=8, max_backlog_entries=10)
    return Ingestor(settings, redis_client)


def test_same_ids_are_duplicates_within_and_across_requests(ingestor):
    first = ingestor.ingest(body(["a", "b", "a"]), "application/x-ndjson", "crm")
    assert (first.accepted, first.duplicates) == (2, 1)
    second = ingestor.ingest(body(["a", "b", "c"]), "application/x-ndjson", "crm")
    assert (second.accepted, second.duplicates) == (1, 2)
    # the same id from another source is another event
    other = ingestor.ingest(body(["a"]), "application/x-ndjson", "billing")
    assert (other.accepted, other.duplicates) == (1, 0)


def test_authentication(ingestor):
    assert ingestor.authenticate("Bearer crm-key-0123456789abcdef", None) == "crm"
    for header in ("Bearer nope", "Basic abc", "Bearer "):
        with pytest.raises(AuthError):
            ingestor.authenticate(header, None)
    with pytest.raises(AuthError):
        ingestor.authenticate(None, "crm")  # auth is on: the header alone is not enough


def test_backpressure_refuses_instead_of_growing(ingestor, redis_client):
    log = PartitionLog(redis_client, horizon_s=60)
    log.take(dict.fromkeys(range(8), "0"), owner="test")
    accepted = 0
    with pytest.raises(Overloaded) as refused:
        for n in range(200):
            ingestor._backlog_checked = 0  # look at the backlog on every request in this test
            accepted += ingestor.ingest(body([f"bp{n}-{i}" for i in range(8)]), "application/x-ndjson", "crm").accepted
    assert refused.value.retry_after_s >= 1
    backlog = log.backlog(range(8))
    assert max(backlog.values()) <= 11  # the bound held: nothing was appended past it
    assert accepted == sum(len(e.events) for p in range(8) for e in log.read_range(p, "0", 1000))


def test_a_source_over_its_rate_limit_is_told_to_back_off(redis_server, redis_client, tmp_path):
    ConfigStore(redis_client).put({"kind": "source", "name": "slow", "rate_limit_per_s": 100})
    settings = EspSettings(state_dir=tmp_path, redis_url=redis_server.url, partitions=8)
    ingestor = Ingestor(settings, redis_client)
    assert ingestor.ingest(body([f"r{i}" for i in range(80)]), "application/x-ndjson", "slow").accepted == 80
    with pytest.raises(Overloaded) as refused:
        ingestor.ingest(body([f"s{i}" for i in range(80)]), "application/x-ndjson", "slow")
    assert refused.value.retry_after_s >= 1
    log = PartitionLog(redis_client, horizon_s=60)
    logged = sum(len(e.events) for p in range(8) for e in log.read_range(p, "0", 1000))
    assert logged == 80  # the refused request appended nothing


def test_a_source_put_applies_to_the_next_request(ingestor, redis_client):
    """Each mapping version reads the subject from a field of its own: a record mapped with the
    previous version would be rejected with ``missing_field``."""
    store = ConfigStore(redis_client)
    for version in range(20):
        mapping = {"type": "t.hot", "id": "seq", "subject": f"who{version}", "time": "ts"}
        store.put({"kind": "source", "name": "crm", "api_key": "crm-key-0123456789abcdef", "mapping": mapping})
        source = ingestor.authenticate("Bearer crm-key-0123456789abcdef", None)
        record = orjson.dumps({"seq": f"hot{version}", f"who{version}": "c1", "ts": 1_790_000_000_000})
        result = ingestor.ingest(record, "application/json", source)
        assert (result.accepted, result.rejected) == (1, []), f"mapping version {version}: {result.rejected}"


def test_a_request_reads_the_config_version_once_and_its_entries_carry_it(ingestor, redis_client, monkeypatch):
    store = ConfigStore(redis_client)
    source, version = ingestor.authenticate_at("Bearer crm-key-0123456789abcdef", None)
    assert (source, version) == ("crm", store.version())
    reads = []
    monkeypatch.setattr(ingestor.config, "version", lambda: reads.append(1) or store.version())
    real_get = redis_client.get
    monkeypatch.setattr(redis_client, "get", lambda key: reads.append(key) or real_get(key))
    result = ingestor.ingest(body(["v1", "v2"]), "application/x-ndjson", source, config_version=version)
    assert result.accepted == 2
    assert reads == []  # neither the documents nor the entries' version were read again
    log = PartitionLog(redis_client, horizon_s=3600)
    entries = [e for p in range(8) for e in log.read_range(p, "0", 100)]
    assert {e.config_version for e in entries} == {version}
    assert sorted(e.id for entry in entries for e in entry.events) == ["v1", "v2"]
