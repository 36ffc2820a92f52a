"""The ingestion contract over real HTTP: formats, per-event rejection, whole-body errors,
auth, idempotent retries — and what reaches a subscriber."""

from __future__ import annotations

import io

import httpx
import orjson
import pyarrow as pa
import ray

from runtime.dev.client import EspClient
from tests.e2e.conftest import SOURCE_KEY
from tests.e2e.helpers import event, every_event_rule, read_exactly

AUTH = {"Authorization": f"Bearer {SOURCE_KEY}"}


def post(platform, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(
        f"{platform.base_url}/v1/events",
        content=body,
        headers={"Content-Type": content_type, **(AUTH if headers is None else headers)},
        timeout=30,
    )


def test_every_body_format_is_accepted(platform):
    one = event(1, "fmt.single", prefix="fmt")
    arr = [event(i, "fmt.array", prefix="fmt") for i in range(2, 5)]
    nd = [event(i, "fmt.nd", prefix="fmt") for i in range(5, 8)]
    table = pa.Table.from_pylist([{**event(i, "fmt.arrow", prefix="fmt"), "data": None} for i in range(8, 11)])
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    cases = [
        (orjson.dumps(one), "application/json", 1),
        (orjson.dumps(arr), "application/json", 3),
        (b"\n".join(orjson.dumps(e) for e in nd), "application/x-ndjson", 3),
        (orjson.dumps({**event(11, "fmt.ce", prefix="fmt"), "specversion": "1.0"}), "application/cloudevents+json", 1),
        (orjson.dumps([event(12, "fmt.ce", prefix="fmt")]), "application/cloudevents-batch+json; charset=utf-8", 1),
        (sink.getvalue(), "application/vnd.apache.arrow.stream", 3),
    ]
    for body, content_type, n in cases:
        response = post(platform, body, content_type)
        assert response.status_code == 202, (content_type, response.text)
        answer = response.json()
        assert (answer["accepted"], answer["duplicates"], answer["rejected"]) == (n, 0, []), content_type


def test_stream_actors_stay_without_pyarrow(platform):
    """Ray would import pyarrow (and numpy) in every worker to register its Arrow serializers,
    35 MB each; ESP's stream actors defer that (actors/worker_setup.py), Arrow ingestion above
    notwithstanding. Fails if a Ray upgrade moves the hook point or ESP's actors import pyarrow."""

    def loaded(_self: object) -> list[str]:
        import sys

        return sorted(name for name in ("pyarrow", "numpy") if name in sys.modules)

    actors = [*platform.actors, *platform.dispatchers, *platform.policy]
    assert ray.get([actor.__ray_call__.remote(loaded) for actor in actors]) == [[]] * len(actors)


def test_whole_body_problems_have_precise_reasons(platform):
    assert post(platform, b"{not json", "application/json").json()["reason"] == "unparseable_body"
    assert post(platform, b"{not json", "application/json").status_code == 400
    response = post(platform, b"a,b\n1,2", "text/csv")
    assert (response.status_code, response.json()["reason"]) == (415, "unsupported_content_type")
    big = b"[" + b" " * (platform.settings.max_body_bytes + 10) + b"]"
    response = post(platform, big, "application/json")
    assert (response.status_code, response.json()["reason"]) == (413, "body_too_large")


def test_credentials(platform):
    body = orjson.dumps(event(1, "auth.x", prefix="auth"))
    assert post(platform, body, "application/json", headers={}).status_code == 401
    assert post(platform, body, "application/json", headers={"Authorization": "Bearer wrong-key"}).status_code == 401
    assert post(platform, body, "application/json", headers={"X-ESP-Source": "e2e"}).status_code == 401
    with EspClient(platform.base_url) as admin:
        admin.put_config({"kind": "source", "name": "off", "api_key": "disabled-source-key-0001", "enabled": False})
    response = post(platform, body, "application/json", headers={"Authorization": "Bearer disabled-source-key-0001"})
    assert (response.status_code, response.json()["reason"]) == (403, "forbidden")


def test_bad_events_cost_nothing_and_retries_change_nothing(platform, client):
    """10,000 events in 10 batches, one malformed per batch: exactly the 9,990 good ones are
    accepted and each produces exactly one business event; re-sending changes nothing."""
    client.put_config(every_event_rule("e2e-every", "bulk.tick"))
    client.put_config({"kind": "subscription", "name": "bulk", "topics": ["business.e2e-every"]})
    bad_kinds = [
        lambda i: {"id": f"bad{i}", "type": "bulk.tick", "subject": "c1"},  # no time
        lambda i: {"id": f"bad{i}", "type": "bulk.tick", "time": "yesterday", "subject": "c1"},
        lambda i: [1, 2],
        lambda i: {"id": f"bad{i}", "type": "bulk.tick", "time": 1, "subject": "c1", "data": "x"},
        lambda i: {"id": "", "type": "bulk.tick", "time": 1, "subject": "c1"},
    ]
    batches, expected_rejections, good_ids = [], [], set()
    for b in range(10):
        batch = [event(b * 1000 + i, "bulk.tick", prefix="bulk") for i in range(999)]
        good_ids |= {e["id"] for e in batch}
        position = (b * 137) % 1000
        batch.insert(position, bad_kinds[b % len(bad_kinds)](b))
        batches.append(batch)
        expected_rejections.append(b * 1000 + position)
    flat = [e for batch in batches for e in batch]
    report = client.send(flat, batch_size=1000)
    assert report.accepted == 9990 and report.duplicates == 0
    assert [r["index"] for r in report.rejected] == expected_rejections
    assert all(r["reason"] for r in report.rejected)

    again = client.send(flat, batch_size=1000)
    assert (again.accepted, again.duplicates, len(again.rejected)) == (0, 9990, 10)

    received = read_exactly(platform, client, "bulk", 9990)
    ids = [e["id"] for e in received]
    assert len(ids) == len(set(ids)) == 9990
    triggering = {e["data"]["events"][0]["id"] for e in received}
    assert triggering == good_ids
    assert {e["type"] for e in received} == {"business.e2e-every"}
    assert all(e["data"]["rule_version"] == 1 for e in received)


def test_count_rule_fires_on_the_threshold(platform, client):
    client.put_config(
        {
            "kind": "rule",
            "name": "three-fails",
            "when": {"event": "cnt.login", "where": "data.ok == false", "count": 3, "within": "1m"},
            "then": [{"emit": "cnt_risk"}],
        }
    )
    client.put_config({"kind": "subscription", "name": "cnt", "topics": ["business.cnt_*"]})
    # customer a: fail, ok, fail, fail -> fires once (3 fails within 1 minute)
    # customer b: fail, fail, then a fail 2 minutes later -> window slid, no fire
    events = [
        {**event(1, "cnt.login", customer="a", prefix="cnt", ok=False)},
        {**event(2, "cnt.login", customer="a", prefix="cnt", ok=True)},
        {**event(3, "cnt.login", customer="a", prefix="cnt", ok=False)},
        {**event(4, "cnt.login", customer="a", prefix="cnt", ok=False)},
        {**event(5, "cnt.login", customer="b", prefix="cnt", ok=False)},
        {**event(6, "cnt.login", customer="b", prefix="cnt", ok=False)},
        {**event(7, "cnt.login", customer="b", prefix="cnt", ok=False), "time": event(7, "x")["time"] + 120_000},
    ]
    assert client.send(events).accepted == 7
    received = read_exactly(platform, client, "cnt", 1, timeout_s=30)
    assert [(e["subject"], [m["id"] for m in e["data"]["events"]]) for e in received] == [
        ("a", ["cnt1", "cnt3", "cnt4"])
    ]


def test_atomic_topics_reach_subscribers(platform, client):
    client.put_config({"kind": "subscription", "name": "raw", "topics": ["atomic.raw.*"]})
    events = [event(i, "raw.view" if i % 2 else "raw.click", prefix="raw", n=i) for i in range(50)]
    events.append(event(99, "other.type", prefix="raw"))
    assert client.send(events).accepted == 51
    received = read_exactly(platform, client, "raw", 50, timeout_s=30)
    assert sorted(e["id"] for e in received) == sorted(e["id"] for e in events[:50])
    assert {e["topic"] for e in received} == {"atomic.raw.view", "atomic.raw.click"}


def test_racing_small_requests_count_each_event_once(platform, client):
    """16 senders post 10-event requests at once, each request twice (a retry racing its
    original, as concurrent small requests go through the log together): every event is
    accepted by exactly one of its two requests and reaches the subscriber once."""
    from concurrent.futures import ThreadPoolExecutor

    client.put_config(every_event_rule("e2e-race", "race.tap"))
    client.put_config({"kind": "subscription", "name": "race", "topics": ["business.e2e-race"]})
    events = [event(i, "race.tap", prefix="race") for i in range(800)]
    bodies = [b"\n".join(orjson.dumps(e) for e in events[k : k + 10]) for k in range(0, 800, 10)]
    racing = [body for pair in zip(bodies, bodies, strict=True) for body in pair]  # each twice, side by side
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda body: post(platform, body, "application/x-ndjson"), racing))
    assert all(a.status_code == 202 for a in answers), [a.text for a in answers if a.status_code != 202][:3]
    counts = [(a.json()["accepted"], a.json()["duplicates"]) for a in answers]
    for original, retry in zip(counts[0::2], counts[1::2], strict=True):
        assert original[0] + retry[0] == 10 and original[1] + retry[1] == 10  # each event once between them
    received = read_exactly(platform, client, "race", 800, timeout_s=60)
    assert sorted(e["data"]["events"][0]["id"] for e in received) == sorted(e["id"] for e in events)
