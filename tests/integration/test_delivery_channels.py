"""Channels end to end (real redis-server, real HTTP receivers on loopback, the dispatcher
in-process): notify outputs on ``notifications.<channel>`` are rendered with the channel's
templates and the customer's profile, and POSTed to its gateway; what cannot be rendered goes to
the channel's dead letters."""

from __future__ import annotations

import time

from runtime import keys
from runtime.config.store import ConfigStore
from runtime.events.profiles import ProfileStore
from runtime.sources.quarantine import POISON_ATTEMPTS
from runtime.subscriptions.deadletters import list_dead
from runtime.subscriptions.dispatch import message_id
from runtime.subscriptions.outbox import Publication
from runtime.subscriptions.webhooks import generate_secret
from tests.integration.test_delivery import (
    dispatcher,
    pending,
    publish_all,
    wait_running,
    wait_settled,
    wait_until,
)
from tests.support.receiver import Receiver
from tests.unit.test_webhooks import spec_verify

WELCOME = "Dear {{ profile.name }}, welcome to VIP ({{ campaign }})."
PAYLOAD = (
    '{"msisdn": {{ profile.msisdn | tojson }}, "text": {{ message | tojson }}, '
    '"prio": {{ notify.priority | tojson }}, "customer": {{ customer | tojson }}}'
)


def channel(name: str, url: str, *, type: str = "sms", **extra) -> dict:
    return {
        "kind": "channel",
        "name": name,
        "type": type,
        "endpoint": {"url": url, "internal": True, "retry": ["50ms", "100ms"], **extra.pop("endpoint", {})},
        **extra,
    }


def notification(output_id: str, channel: str, template: str, customer: str, **notify) -> Publication:
    body = {"channel": channel, "template": template, "campaign": "summer", "priority": 80, **notify}
    return Publication(
        output_id,
        f"notifications.{channel}",
        {
            "specversion": "1.0",
            "id": output_id,
            "source": "esp/rule/vip",
            "type": f"notifications.{channel}",
            "subject": customer,
            "data": {"rule": "vip", "rule_version": 3, "count": 1, "events": [], "notify": body},
        },
    )


def test_notifications_are_rendered_and_the_unrenderable_dead_lettered(redis_server, redis_client):
    secret = generate_secret()
    store = ConfigStore(redis_client)
    profiles = ProfileStore(redis_client)
    profiles.put("c1", {"name": 'Ann "the" Öberg', "msisdn": "+46700000001"})
    profiles.put("c2", {"msisdn": "+46700000002"})  # no name
    profiles.put("c3", {"name": "张伟", "msisdn": "+8613800000000"})
    with Receiver() as sms_rx, Receiver() as push_rx, dispatcher(redis_server) as d:
        store.put(channel("sms", sms_rx.url, templates={"vip-welcome": WELCOME}, endpoint={"secrets": [secret]}))
        store.put(
            channel(
                "push",
                push_rx.url,
                type="app_push",
                templates={"hi": "Hi {{ profile.name | default('there') }}, {{ campaign }} is on"},
                payload=PAYLOAD,
            )
        )
        wait_running(d, "channel/sms", "channel/push")
        publish_all(
            redis_client,
            [
                notification("n1", "sms", "vip-welcome", "c1"),
                notification("n2", "sms", "vip-welcome", "c2"),  # the template needs profile.name
                notification("n3", "sms", "no-such-template", "c1"),
                notification("n4", "push", "hi", "c2"),  # default('there')
                notification("n5", "push", "hi", "c3"),
            ],
        )
        sms_stream, push_stream = keys.channel_stream("sms"), keys.channel_stream("push")
        dead = wait_until(lambda: (x := list_dead(redis_client, sms_stream))["total"] == 2 and x, 10, "dead letters")
        push_rx.wait_for(lambda r: len(r) >= 2)
        for stream in (sms_stream, push_stream):
            wait_settled(redis_client, stream)
        sms_seen, push_seen = sms_rx.seen(), push_rx.seen()

    assert [r.json() for r in sms_seen] == [
        {
            "channel": "sms",
            "type": "sms",
            "to": "c1",
            "message": 'Dear Ann "the" Öberg, welcome to VIP (summer).',
            "campaign": "summer",
            "priority": 80,
            "notification_id": "n1",
            "rule": "vip",
        }
    ]
    (sent,) = sms_seen
    assert sent.headers["content-type"] == "application/json"
    assert spec_verify(secret, sent.headers, sent.body)
    assert sent.headers["webhook-id"] == message_id([{"source": "esp/rule/vip", "id": "n1"}])

    assert sorted((r.json() for r in push_seen), key=lambda p: p["customer"]) == [
        {"msisdn": "+46700000002", "text": "Hi there, summer is on", "prio": 80, "customer": "c2"},
        {"msisdn": "+8613800000000", "text": "Hi 张伟, summer is on", "prio": 80, "customer": "c3"},
    ]

    errors = {item["event"]["id"]: item for item in dead["items"]}
    assert set(errors) == {"n2", "n3"}
    assert errors["n2"]["error"] == (
        "missing_field: template 'vip-welcome' needs profile.name, which this customer does not have"
    )
    assert "no-such-template" in errors["n3"]["error"]
    assert all(item["status"] is None and item["attempts"] == 0 for item in dead["items"])
    assert list_dead(redis_client, push_stream)["total"] == 0


def test_a_payload_that_is_not_json_dead_letters(redis_server, redis_client):
    ProfileStore(redis_client).put("c1", {"name": "Ann"})
    with Receiver() as rx, dispatcher(redis_server) as d:
        ConfigStore(redis_client).put(
            channel("sms", rx.url, templates={"hi": "Hi {{ profile.name }}"}, payload='{"text": {{ message }}}')
        )
        wait_running(d, "channel/sms")
        publish_all(redis_client, [notification("n1", "sms", "hi", "c1")])
        stream = keys.channel_stream("sms")
        dead = wait_until(lambda: (x := list_dead(redis_client, stream))["total"] == 1 and x, 10, "dead letter")
        wait_settled(redis_client, stream)
        assert rx.seen() == []
    assert dead["items"][0]["error"].startswith("invalid_json: ")
    assert "did not render valid JSON" in dead["items"][0]["error"]


def test_one_unrenderable_notification_does_not_take_its_batch_down(redis_server, redis_client):
    ProfileStore(redis_client).put_many({f"c{i}": {"name": f"N{i}"} for i in range(4)})  # c4 has no profile
    with Receiver() as rx, dispatcher(redis_server) as d:
        ConfigStore(redis_client).put(channel("sms", rx.url, templates={"vip-welcome": WELCOME}, endpoint={"batch": 5}))
        wait_running(d, "channel/sms")
        publish_all(redis_client, [notification(f"n{i}", "sms", "vip-welcome", f"c{i}") for i in range(5)])
        stream = keys.channel_stream("sms")
        wait_until(lambda: pending(redis_client, stream) == 0 and redis_client.xlen(stream) == 5, 10, "handled")
        wait_until(lambda: list_dead(redis_client, stream)["total"] >= 1, 5, "dead letters")
        wait_settled(redis_client, stream)
        dead = list_dead(redis_client, stream)
        delivered = [p for r in rx.seen() for p in r.json()]
    assert [item["event"]["id"] for item in dead["items"]] == ["n4"]
    assert sorted(p["notification_id"] for p in delivered) == ["n0", "n1", "n2", "n3"]


def test_a_notification_over_the_render_bounds_is_dead_lettered_with_its_reason(redis_server, redis_client):
    """A template bomb for one customer (a profile value the template repeats) neither takes its
    batch down nor is sent: it is dead-lettered as template_too_large, the others go."""
    customers = {f"c{i}": {"name": f"N{i}", "times": 3} for i in range(4)}
    customers["c2"]["times"] = 1_000
    ProfileStore(redis_client).put_many(customers)
    bomb = "Hi {{ profile.name }} {% for i in range(profile.times) %}{{ 'x' * 100 }}{% endfor %}"
    with Receiver() as rx, dispatcher(redis_server) as d:
        ConfigStore(redis_client).put(channel("sms", rx.url, templates={"bomb": bomb}, endpoint={"batch": 10}))
        wait_running(d, "channel/sms")
        started = time.perf_counter()
        publish_all(redis_client, [notification(f"n{i}", "sms", "bomb", f"c{i}") for i in range(4)])
        stream = keys.channel_stream("sms")
        dead = wait_until(lambda: list_dead(redis_client, stream)["items"], 10, "a dead letter")
        delivered = rx.wait_for(lambda r: sum(len(x.json()) for x in r) >= 3)
        took = time.perf_counter() - started
    print(f"\nbomb among 4 notifications: dead-lettered and the rest delivered in {took * 1e3:.0f} ms")
    assert [(e["event"]["id"], e["error"].split(":")[0]) for e in dead] == [("n2", "template_too_large")]
    assert sorted(m["notification_id"] for x in delivered for m in x.json()) == ["n0", "n1", "n3"]
    assert all(len(m["message"]) < 400 for x in delivered for m in x.json())


def test_a_delivery_whose_preparation_keeps_raising_is_dead_lettered_and_its_batch_sent(redis_server, redis_client):
    """A profile key of the wrong type (written around the API, as by another program) makes
    reading it raise: its notification is tried POISON_ATTEMPTS times (the batch's try
    first, then on its own), then dead-lettered as a processing_error; its batch-mates are sent."""
    ProfileStore(redis_client).put("c1", {"name": "Ann"})
    redis_client.set(keys.profile("cbad"), "not a hash")  # a key of the wrong type: every read of it raises
    with Receiver() as rx, dispatcher(redis_server) as d:
        reads: list[list[str]] = []
        read = d._profiles.get_many

        def spying(customers):
            reads.append(list(customers))
            return read(customers)

        d._profiles.get_many = spying
        ConfigStore(redis_client).put(
            channel("sms", rx.url, templates={"hi": "Hi {{ profile.name }}"}, endpoint={"batch": 10})
        )
        wait_running(d, "channel/sms")
        publish_all(redis_client, [notification(f"n{i}", "sms", "hi", c) for i, c in enumerate(["c1", "cbad", "c1"])])
        seen = rx.wait_for(lambda r: sum(len(x.json()) for x in r) >= 2)
        stream = keys.channel_stream("sms")
        dead = wait_until(lambda: list_dead(redis_client, stream)["items"], 10, "a dead letter")
        publish_all(redis_client, [notification("n9", "sms", "hi", "c1")])  # later ones still go
        rx.wait_for(lambda r: any(m["notification_id"] == "n9" for x in r for m in x.json()))
        wait_settled(redis_client, stream)
    sent = sorted(m["notification_id"] for x in rx.requests for m in x.json())
    assert sent == ["n0", "n2", "n9"]
    assert [e["event"]["id"] for e in dead] == ["n1"]
    assert dead[0]["error"].startswith("processing_error: preparing the delivery failed 3 times: ResponseError")
    assert sum("cbad" in r for r in reads) == POISON_ATTEMPTS
    assert d.poisoned == 1
    assert pending(redis_client, stream) == 0
    assert seen
