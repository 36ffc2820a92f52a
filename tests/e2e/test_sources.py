"""Standardisation over real HTTP: sources in different formats feeding one catalogue, identity
linking, opt-in, de-duplication by content, and the quarantine with replay."""

from __future__ import annotations

import time

import httpx

from runtime.dev.client import EspClient
from tests.e2e.helpers import read_exactly

CSV_KEY = "csv-calls-key-0123456789"
KV_KEY = "kv-calls-key-0123456789"


def call_sources(client: EspClient, *, csv_line_map: dict[str, str]) -> None:
    client.put_config(
        {
            "kind": "event-type",
            "name": "src.call",
            "attributes": {"line": {"type": "string", "required": True}, "duration_s": {"type": "int", "min": 0}},
        }
    )
    client.put_config(
        {
            "kind": "source",
            "name": "calls-csv",
            "api_key": CSV_KEY,
            "format": "csv",
            "identity": "phone",
            "mapping": {
                "type": "src.call",
                "id": {"fields": ["msisdn", "at"]},
                "subject": "msisdn",
                "time": {"from": "at", "format": "%Y%m%d%H%M%S", "timezone": "Asia/Shanghai"},
                "data": {"line": {"from": "code", "map": csv_line_map}, "duration_s": {"from": "dur", "type": "int"}},
            },
        }
    )
    client.put_config(
        {
            "kind": "source",
            "name": "calls-kv",
            "api_key": KV_KEY,
            "format": "kv",
            "identity": "phone",
            "unknown_identity": "drop",
            "require_opt_in": True,
            "mapping": {
                "type": "src.call",
                "id": "seq",
                "subject": "msisdn",
                "time": {"from": "ts", "format": "epoch_s"},
                "data": {"line": "line", "duration_s": {"from": "dur", "type": "int"}},
            },
        }
    )


def post(platform, key: str, body: bytes, content_type: str) -> dict:
    response = httpx.post(
        f"{platform.base_url}/v1/events",
        content=body,
        headers={"Authorization": f"Bearer {key}", "Content-Type": content_type},
        timeout=30,
    )
    assert response.status_code == 202, response.text
    return response.json()


def test_csv_and_kv_sources_feed_one_rule_through_identity_and_consent(platform, client):
    call_sources(client, csv_line_map={"1": "service", "2": "sales"})
    client.request(
        "PUT",
        "/v1/identities",
        json=[
            {"customer": "alice", "phone": "13800000001"},
            {"customer": "bob", "phone": "13800000002"},
        ],
    )
    client.request(
        "PUT",
        "/v1/consents",
        json=[
            {"customer": "alice", "opted_in": True},
            {"customer": "bob", "opted_in": False},
        ],
    )
    client.put_config(
        {
            "kind": "rule",
            "name": "src-two-service-calls",
            "when": {"event": "src.call", "where": "data.line == 'service'", "count": 2, "within": "1h"},
            "then": [{"emit": "src_escalation"}],
        }
    )
    client.put_config({"kind": "subscription", "name": "src-sub", "topics": ["business.src_escalation"]})

    # alice: one service call in the CSV feed and one in the kv feed -> one escalation
    # bob: one in each too, but the kv feed requires opt-in and bob opted out -> no escalation
    csv_body = b"msisdn,at,code,dur\n13800000001,20260921100000,1,60\n13800000002,20260921100500,1,30\n"
    first = post(platform, CSV_KEY, csv_body, "text/csv")
    assert (first["accepted"], first["rejected"]) == (2, [])
    again = post(platform, CSV_KEY, csv_body, "text/csv")
    assert (again["accepted"], again["duplicates"]) == (0, 2)  # no ids in the feed: content is the id

    kv_body = (
        b"seq=k1|msisdn=13800000001|ts=1789956600|line=service|dur=40\n"
        b"seq=k2|msisdn=13800000002|ts=1789956700|line=service|dur=50\n"
        b"seq=k3|msisdn=19900000000|ts=1790000200|line=service|dur=50\n"
    )
    kv = post(platform, KV_KEY, kv_body, "text/plain")
    assert kv["accepted"] == 1
    assert kv["dropped"] == {"opt_out": 1, "unknown_identity": 1}

    received = read_exactly(platform, client, "src-sub", 1, timeout_s=30)
    assert [e["subject"] for e in received] == ["alice"]
    matched = {m["id"] for m in received[0]["data"]["events"]}
    assert "k1" in matched and len(matched) == 2


def test_quarantine_then_fix_the_mapping_then_replay_processes_once(platform, client):
    call_sources(client, csv_line_map={"1": "service"})  # code 3 is not mapped yet
    client.request("PUT", "/v1/identities", json=[{"customer": "carol", "phone": "13800000003"}])
    client.put_config(
        {"kind": "rule", "name": "src-every-call", "when": {"event": "src.call"}, "then": [{"emit": "src_call"}]}
    )
    client.put_config({"kind": "subscription", "name": "src-calls", "topics": ["business.src_call"]})
    body = b"msisdn,at,code,dur\n13800000003,20260922100000,1,60\n13800000003,20260922110000,3,70\n13800000003,x,1,5\n"
    answer = post(platform, CSV_KEY, body, "text/csv")
    assert answer["accepted"] == 1
    assert sorted(r["reason"] for r in answer["rejected"]) == ["invalid_time", "unmapped_value"]
    listed = client.request("GET", "/v1/quarantine", params={"source": "calls-csv", "reason": "unmapped"})["items"]
    assert [i["index"] for i in listed] == [1] and "13800000003,20260922110000,3,70" in listed[0]["raw"]

    call_sources(client, csv_line_map={"1": "service", "3": "complaint"})  # the fix
    replayed = client.request("POST", "/v1/quarantine/replay", params={"source": "calls-csv", "reason": "unmapped"})
    assert (replayed["replayed"], replayed["accepted"]) == (1, 1)
    again = client.request("POST", "/v1/quarantine/replay", params={"source": "calls-csv", "reason": "unmapped"})
    assert again.get("replayed", 0) == 0  # it left the quarantine
    assert post(platform, CSV_KEY, body, "text/csv")["duplicates"] == 2  # both good rows now known

    received = read_exactly(platform, client, "src-calls", 2, timeout_s=30)
    triggering = [e["data"]["events"][0]["id"] for e in received]
    assert len(triggering) == len(set(triggering)) == 2  # each call processed once
    left = client.request("GET", "/v1/quarantine", params={"source": "calls-csv"})["items"]
    assert {i["reason"] for i in left} == {"invalid_time"}


def test_schema_violations_and_bad_lines_are_quarantined_not_lost(platform, client):
    call_sources(client, csv_line_map={"1": "service"})
    client.request("PUT", "/v1/identities", json=[{"customer": "dave", "phone": "13800000004"}])
    body = (
        b"seq=s1|msisdn=13800000004|ts=1790000000|line=service|dur=-5\n"  # duration below min
        b"this line has no pairs\n"
        b"seq=s2|msisdn=13800000004|ts=1790000000|line=service|dur=5\n"
    )
    client.request("PUT", "/v1/consents", json=[{"customer": "dave", "opted_in": True}])
    answer = post(platform, KV_KEY, body, "text/plain")
    assert answer["accepted"] == 1
    reasons = {r["index"]: r["reason"] for r in answer["rejected"]}
    assert reasons[0] == "schema_violation" and 1 in reasons


def test_rules_read_profile_attributes_attached_at_evaluation(platform, client):
    client.request("PUT", "/v1/profiles/erin", json={"tier": "gold", "tags": ["frequent-traveller"]})
    client.request("PUT", "/v1/profiles/frank", json={"tier": "silver"})
    client.put_config(
        {
            "kind": "rule",
            "name": "src-gold-orders",
            "when": {"event": "enr.order", "where": "profile.tier == 'gold' && data.amount >= 100"},
            "then": [{"emit": "src_gold_order"}],
        }
    )
    client.put_config({"kind": "subscription", "name": "src-gold", "topics": ["business.src_gold_order"]})
    events = [
        {"id": f"enr{i}", "type": "enr.order", "time": 1_790_000_000_000 + i, "subject": who, "data": {"amount": 150}}
        for i, who in enumerate(["erin", "frank", "nobody"])
    ]
    assert client.send(events).accepted == 3
    received = read_exactly(platform, client, "src-gold", 1, timeout_s=30)
    assert [e["subject"] for e in received] == ["erin"]


def test_trace_shows_where_each_event_went(platform, client):
    call_sources(client, csv_line_map={"1": "service"})
    client.request(
        "PUT",
        "/v1/identities",
        json=[{"customer": "gina", "phone": "13800000007"}, {"customer": "hank", "phone": "13800000008"}],
    )
    client.request(
        "PUT", "/v1/consents", json=[{"customer": "gina", "opted_in": True}, {"customer": "hank", "opted_in": False}]
    )
    client.put_config(
        {"kind": "rule", "name": "src-trace-rule", "when": {"event": "src.call"}, "then": [{"emit": "src_traced"}]}
    )
    body = (
        b"seq=t1|msisdn=13800000007|ts=1790000000|line=service|dur=5\n"
        b"seq=t2|msisdn=13800000008|ts=1790000000|line=service|dur=5\n"
        b"seq=t3|msisdn=13800000007|ts=1790000000|line=service|dur=-1\n"
    )
    post(platform, KV_KEY, body, "text/plain")

    def trace(event_id: str) -> dict:
        return client.request("GET", f"/v1/events/calls-kv/{event_id}/trace")

    deadline = time.monotonic() + 30
    accepted = trace("t1")
    while not any(s["step"] == "matched" for s in accepted["steps"]) and time.monotonic() < deadline:
        time.sleep(0.5)
        accepted = trace("t1")
    assert accepted["status"] == "accepted"
    steps = {s["step"]: s for s in accepted["steps"]}
    assert steps["logged"]["partition"] >= 0 and steps["processed"]
    assert steps["matched"]["rule"] == "src-trace-rule" and steps["matched"]["topic"] == "business.src_traced"
    assert trace("t2")["status"] == "dropped" and trace("t2")["steps"][0]["reason"] == "opt_out"
    quarantined = trace("t3")
    assert quarantined["status"] == "quarantined" and quarantined["steps"][0]["reason"] == "schema_violation"
    assert trace("never-sent")["status"] == "unknown"
    assert client.http.get("/v1/events/no-such-source/t1/trace").status_code == 404
