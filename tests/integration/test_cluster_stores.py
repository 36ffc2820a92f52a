"""The stores keyed by ``{config}``, ``{policy}`` and ``{security}`` and the untagged reference
data, each on one redis-server and on a real 3-master Redis Cluster: every script and
transaction of theirs must touch one hash slot there (a cross-slot one is refused with
CROSSSLOT), and their results must be the same on both."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import redis

from runtime import keys
from runtime.config.store import ConfigStore
from runtime.dev.redis_server import EmbeddedRedisCluster, free_cluster_ports
from runtime.errors import AuthError
from runtime.events.consent import ConsentRecord, ConsentStore
from runtime.events.identity import IdentityLink, IdentityStore
from runtime.events.profiles import BatchProfiles, ProfileStore
from runtime.policy.decide import ContactRequest, PolicyRules
from runtime.policy.ledger import PIECE, ConflictingWrite, Ledger
from runtime.policy.models import Cap, QuietHours
from runtime.policy.stage import PolicyStage
from runtime.redis_client import connect, is_cluster
from runtime.security.tokens import TokenStore
from runtime.sources.quarantine import Quarantined, QuarantineStore
from runtime.subscriptions.deadletters import delivery_status, list_dead, replay_dead

T0 = 1_741_608_000_000  # 2025-03-10 12:00 UTC


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedisCluster]:
    """One cluster for the module (starting one takes seconds); each test gets it empty."""
    started = EmbeddedRedisCluster(Path(tmp_path_factory.mktemp("cluster")), free_cluster_ports(3)).start()
    yield started
    started.stop()


@pytest.fixture(params=["redis", "cluster"])
def url(request: pytest.FixtureRequest) -> str:
    if request.param == "redis":
        return str(request.getfixturevalue("redis_server").url)
    cluster = request.getfixturevalue("cluster")
    client = connect(cluster.url)
    client.flushall(target_nodes=client.get_primaries())
    client.close()
    return str(cluster.url)


@pytest.fixture
def client(url: str) -> redis.Redis:
    return connect(url)


def test_the_cluster_is_one(cluster: EmbeddedRedisCluster) -> None:
    client = connect(cluster.url)
    assert is_cluster(client) and len(client.get_primaries()) == 3


# --- config ---------------------------------------------------------------------------------


def rule(name: str, priority: int = 1) -> dict:
    return {"kind": "rule", "name": name, "priority": priority, "when": {"event": "a.b"}, "then": [{"emit": "x"}]}


def test_config_put_get_history_snapshot_delete(client: redis.Redis) -> None:
    store = ConfigStore(client, history=2)
    assert [store.put(rule("r", p))["version"] for p in (1, 2, 3)] == [1, 2, 3]
    store.put({"kind": "subscription", "name": "s", "topics": ["business.*"]})
    store.put(
        {"kind": "channel", "name": "sms", "type": "sms", "endpoint": {"url": "http://gw.internal/x", "internal": True}}
    )
    stream = keys.subscription_stream("s")
    assert client.xinfo_groups(stream)[0]["name"] == keys.SUBSCRIPTION_GROUP.encode()  # made before the put
    assert store.get("rule", "r")["priority"] == 3
    assert [h["version"] for h in store.history("rule", "r")] == [2, 3]
    version, docs = store.snapshot()
    assert version == store.version() == 5
    assert [d["name"] for d in docs["rule"]] == ["r"] and [d["name"] for d in docs["channel"]] == ["sms"]
    assert [(v, name) for v, name, _ in store.rule_changes(0, 5)] == [(1, "r"), (2, "r"), (3, "r")]

    client.xadd(keys.deadletters(stream), {"e": b"{}"})
    assert store.delete("subscription", "s")["deleted"]
    assert store.find("subscription", "s") is None and store.version() == 6
    assert not client.exists(stream) and not client.exists(keys.deadletters(stream))
    store.delete("rule", "r")
    assert store.put(rule("r"))["version"] == 4  # never repeats, across a delete


# --- tokens ---------------------------------------------------------------------------------


def test_tokens_create_verify_revoke(client: redis.Redis) -> None:
    tokens = TokenStore(client, b"s" * 32)
    token, _ = tokens.create("ops", "operator")
    assert tokens.verify(token).role == "operator" and tokens.live("ops")
    tokens.revoke("ops")
    with pytest.raises(AuthError) as refused:
        tokens.verify(token)
    assert refused.value.reason == "token_revoked"
    assert not tokens.live("ops") and [t["name"] for t in tokens.list()] == ["ops"]
    again, _ = tokens.create("ops", "viewer")  # the name is free again
    assert tokens.verify(again).role == "viewer"


# --- the contact policy -----------------------------------------------------------------------


def req(i: str, customer: str = "c1", channel: str = "sms", **kw) -> ContactRequest:
    return ContactRequest(i, customer, "notify", channel, "t", **kw)


def test_ledger_decides_holds_and_opts_out(client: redis.Redis) -> None:
    ledger = Ledger(client, horizon_s=3600)
    rules = PolicyRules(caps=(Cap(name="weekly", window="7d", max=2),))
    decided = ledger.decide([[req("a")], [req("b", customer="c2")]], rules, T0)
    assert [d.outcome for d in decided] == ["sent", "sent"]
    assert [d.outcome for d in ledger.decide([[req("a")]], rules, T0 + 1)] == ["sent"]  # its first decision stands
    assert client.zcard(keys.ledger("c1")) == 1 and len(ledger.recent("c1")) == 1
    ledger.opt_out([("c1", "sms")])
    assert ledger.decide([[req("z")]], rules, T0 + 2)[0].outcome.startswith("suppressed")

    quiet = QuietHours(start="11:00", end="13:00", timezone="UTC", channels=["sms"])
    held = req("q", customer="c3", requested_at=T0, event={"id": "q", "topic": "notifications.sms"})
    [decision] = ledger.decide([[held]], PolicyRules(quiet_hours=quiet), T0)
    assert decision.outcome == "held:quiet_hours" and ledger.due_held(T0 + 3_600_000) == [held]


def test_a_batch_in_pieces_is_decided_whole_on_a_cluster(client: redis.Redis) -> None:
    """More customers than a piece holds: the pieces go one after the other, each to {policy}'s
    node, and profiles (spread over the slots) are read for each; a replay decides nothing again."""
    ledger = Ledger(client, horizon_s=3600)
    customers = [f"p{i}" for i in range(3 * PIECE + 1)]
    ProfileStore(client).put_many({c: {"tier": "gold"} for c in customers})
    rules = PolicyRules(caps=(Cap(name="weekly", window="7d", max=1, max_by_tier={"gold": 2}),))
    groups = [[req(f"{c}-1", customer=c), req(f"{c}-2", customer=c)] for c in customers]
    assert {d.outcome for d in ledger.decide(groups, rules, T0)} == {"sent"}  # the tier's cap: 2
    assert ledger.decide(groups, rules, T0 + 1) == ledger.decide(groups, rules, T0 + 2)
    assert {d.outcome for d in ledger.decide([[req(f"{c}-3", customer=c)] for c in customers], rules, T0)} == {
        "suppressed:cap:weekly"
    }
    assert sum(client.zcard(keys.ledger(c)) for c in customers) == 2 * len(customers)


def test_concurrent_deciders_never_exceed_a_cap(client: redis.Redis, url: str) -> None:
    cap, workers, each = 5, 3, 12
    rules = PolicyRules(caps=(Cap(name="weekly", window="7d", max=cap),))
    outcomes: Counter[str] = Counter()
    lock, barrier = threading.Lock(), threading.Barrier(workers)

    def decide(worker: int) -> None:
        ledger = Ledger(connect(url), horizon_s=3600)
        barrier.wait(timeout=30)
        for i in range(each):
            while True:
                try:
                    [d] = ledger.decide([[req(f"w{worker}-{i}")]], rules, T0 + i)
                    break
                except ConflictingWrite:
                    continue
            with lock:
                outcomes[d.outcome.split(":")[0]] += 1

    threads = [threading.Thread(target=decide, args=(w,)) for w in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert outcomes == {"sent": cap, "suppressed": workers * each - cap}
    assert client.zcard(keys.ledger("c1")) == cap


def test_the_stage_reads_every_shard_and_sets_unreadable_requests_aside(client: redis.Redis, url: str) -> None:
    stage = PolicyStage(url, [0, 1], total_shards=2, horizon_s=3600, maxlen=1000)
    stage.step(block_ms=1)  # creates the groups
    for shard in (0, 1):
        client.xadd(keys.policy_requests(shard), {"e": b"not json"})
    stage.step(block_ms=50)
    assert stage.poison == 2
    assert [item["source"] for item in QuarantineStore(client).list()] == ["esp/contact-policy"] * 2
    for shard in (0, 1):  # acknowledged
        assert client.xpending(keys.policy_requests(shard), keys.POLICY_GROUP)["pending"] == 0


# --- reference data -------------------------------------------------------------------------


def test_identity_links_merge_and_resolve(client: redis.Redis) -> None:
    store = IdentityStore(client)
    store.put([IdentityLink("c1", phone="+100", valid_from_ms=0, valid_to_ms=T0)])
    store.put([IdentityLink("c2", phone="+100", valid_from_ms=T0), IdentityLink("c3", imei="35-1")])
    assert store.resolve("phone", ["+100", "+100", "+999"], [T0 - 1, T0, T0]) == ["c1", "c2", None]
    assert store.resolve("imei", ["35-1"]) == ["c3"] and store.count() == 2


def test_consent_merges_by_time(client: redis.Redis) -> None:
    store = ConsentStore(client)
    store.put([ConsentRecord("c1", True, at_ms=T0), ConsentRecord("c2", True, "sms", at_ms=T0)])
    store.put([ConsentRecord("c1", False, at_ms=T0 - 1), ConsentRecord("c2", False, "sms", at_ms=T0 + 1)])
    assert store.opted_in(["c1", "c2", "c3"]) == [True, False, False]
    assert store.opted_in(["c2"], "sms") == [False]


def test_profiles_put_replace_and_read_over_batch_versions(client: redis.Redis) -> None:
    profiles, batch = ProfileStore(client), BatchProfiles(client)
    customers = [f"c{i}" for i in range(40)]  # spread over the slots of a cluster
    profiles.put_many({c: {"tier": "gold", "tags": ["vip"], "n": 1} for c in customers})
    profiles.put_many({"c0": {"n": None, "tier": "silver"}, "c1": {"only": True}}, replace=False)
    profiles.put("c2", {"only": 2}, replace=True)
    batch.write("v1", {c: {"tags": ["b1"], "score": 5} for c in customers})
    assert profiles.get("c0")["tier"] == "silver" and "n" not in profiles.get("c0")  # nothing batch yet
    batch.switch("v1")
    read = profiles.get_many([*customers, "nobody"])
    assert read["c0"] == {"tier": "silver", "tags": ["b1", "vip"], "score": 5}
    assert read["c2"] == {"only": 2, "tags": ["b1"], "score": 5}
    assert read["c39"] == {"tier": "gold", "tags": ["b1", "vip"], "n": 1, "score": 5} and read["nobody"] == {}
    batch.write("v2", {"c0": {"score": 7}})
    assert batch.switch("v2") == "v1"
    assert profiles.get("c0")["score"] == 7 and "score" not in profiles.get("c1")
    assert 0 < client.ttl(keys.batch_profile("v1", "c5")) <= 86_400  # the old version expires
    assert profiles.delete("c0") and profiles.get("c0") == {"score": 7}
    batch.write("v3", {c: {"tags": ["old"], "score": 3} for c in customers[:10]})
    batch.switch("v3")
    packed = profiles.get_many(customers[:12])
    for c in customers[:10]:  # the same version stored the way before: a hash per customer, JSON per field
        client.hset(keys.batch_profile("v0", c), mapping={"tags": '["old"]', "score": "3"})
    batch.switch("v0")
    assert profiles.get_many(customers[:12]) == packed and packed["c0"] == {"tags": ["old"], "score": 3}


# --- quarantine and dead letters ------------------------------------------------------------


def test_quarantine_add_list_get_remove(client: redis.Redis) -> None:
    store = QuarantineStore(client)
    store.add([Quarantined("src", i, f"e{i}", "mapping_error", "bad", b'{"x": 1}', "json") for i in range(3)], at_ms=T0)
    items = store.list(source="src")
    assert [i["id"] for i in items] == ["e2", "e1", "e0"]
    assert store.get(items[0]["qid"])["id"] == "e2"
    assert store.remove([i["qid"] for i in items[:2]]) == 2 and store.count() == 1


def test_dead_letters_list_and_replay(client: redis.Redis) -> None:
    ConfigStore(client).put({"kind": "subscription", "name": "hooks", "topics": ["business.*"]})
    stream = keys.subscription_stream("hooks")
    for i in range(3):
        client.xadd(keys.deadletters(stream), {"e": orjson.dumps({"id": f"o{i}"}), "error": "500", "attempts": 3})
    listed = list_dead(client, stream)
    assert listed["total"] == 3 and [i["event"]["id"] for i in listed["items"]] == ["o2", "o1", "o0"]
    assert replay_dead(client, stream, ids=[listed["items"][0]["id"]]) == 1
    assert delivery_status(client, stream)["dead_letters"] == 2
    assert [orjson.loads(f[b"e"])["id"] for _, f in client.xrange(stream)] == ["o2"]
