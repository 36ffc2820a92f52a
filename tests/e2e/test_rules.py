"""Rules of the shape in DESIGN.md §5, end to end over HTTP."""

from __future__ import annotations

from tests.e2e.helpers import read_exactly

M = 60_000
T0 = 1_790_000_000_000

DESIGN_EXAMPLE = {
    "kind": "rule",
    "name": "wealth-beginner-offer",
    "priority": 50,
    "audience": {"segment": "retail-no-wealth"},
    "when": {
        "all": [
            {
                "any": [
                    {"event": "web.session", "where": "data.site == 'official' && data.duration_s >= 120"},
                    {"event": "app.session", "where": "data.duration_s >= 120"},
                ]
            },
            {"event": "call.inbound", "where": "data.line == 'service'"},
        ],
        "within": "30m",
    },
    "then": [
        {"notify": {"channel": "sms", "template": "wealth-beginner", "campaign": "wealth-q4"}},
        {"emit": "business.wealth_lead"},
    ],
    "cooldown": "7d",
}


def session(i: int, who: str, minute: int, kind: str, **data) -> dict:
    return {"id": f"wl{i}", "type": kind, "time": T0 + minute * M, "subject": who, "data": data}


def test_the_design_example_rule_fires_for_its_audience_only(platform, client):
    client.request("PUT", "/v1/profiles/ann", json={"segments": ["retail-no-wealth"], "tier": "silver"})
    client.request("PUT", "/v1/profiles/bob", json={"segments": ["wealth-holders"]})
    client.put_config(DESIGN_EXAMPLE)
    client.put_config({"kind": "subscription", "name": "wealth", "topics": ["business.wealth_lead", "notifications.*"]})
    events = []
    for n, who in enumerate(["ann", "bob"]):
        events += [
            session(10 * n + 1, who, 0, "web.session", site="official", duration_s=150),
            session(10 * n + 2, who, 20, "call.inbound", line="service"),
            session(10 * n + 3, who, 40, "app.session", duration_s=300),  # cooldown: no second fire
            session(10 * n + 4, who, 45, "call.inbound", line="service"),
        ]
    assert client.send(events).accepted == 8
    received = read_exactly(platform, client, "wealth", 2, timeout_s=30)
    assert sorted((e["type"], e["subject"]) for e in received) == [
        ("business.wealth_lead", "ann"),
        ("notifications.sms", "ann"),
    ]
    for event in received:
        assert [m["id"] for m in event["data"]["events"]] == ["wl1", "wl2"]
        assert event["data"]["rule"] == "wealth-beginner-offer" and event["data"]["rule_version"] == 1
    sms = next(e for e in received if e["type"] == "notifications.sms")
    assert sms["data"]["notify"] == {
        "channel": "sms",
        "template": "wealth-beginner",
        "campaign": "wealth-q4",
        "priority": 50,
    }


def test_backtest_predicts_what_the_live_platform_does(platform, client, tmp_path):
    """The backtest runs the partition actors' engine in-process: over the same events it must
    name exactly the fires the live platform publishes."""
    from runtime.dev.synthetic import demo_events
    from runtime.rules.backtest import backtest, replay
    from runtime.rules.models import Rule

    rule_doc = {
        "kind": "rule",
        "name": "bt-login-failures",
        "when": {"event": "app.login", "where": "data.result == 'fail'", "count": 3, "within": "10m"},
        "then": [{"emit": "bt_risk"}],
        "cooldown": "30m",
    }
    client.put_config(rule_doc)
    client.put_config({"kind": "subscription", "name": "bt", "topics": ["business.bt_risk"]})
    events = [{**e, "id": f"bt-{e['id']}"} for e in demo_events(customers=500, events=8000, seed=99)]
    assert client.send(events).accepted == len(events)
    predicted = backtest(Rule.model_validate(rule_doc), events)
    assert predicted["fires"] > 5  # the stream is built so that some customers fire
    live = read_exactly(platform, client, "bt", predicted["fires"], timeout_s=60)
    outputs, *_ = replay(Rule.model_validate(rule_doc), events)

    def fires(items: list[dict]) -> list[tuple]:
        return sorted((e["subject"], e["time"], tuple(m["id"] for m in e["data"]["events"])) for e in items)

    assert fires(live) == fires([o.event for o in outputs])
    assert len({e["id"] for e in live}) == predicted["fires"]


def test_an_absence_fires_by_timer_on_a_quiet_stream(platform, client):
    """An order with no payment within 2 s: the timer fires although no further event comes."""
    import time

    client.put_config(
        {
            "kind": "rule",
            "name": "unpaid-order",
            "when": {"absence": {"after": {"event": "abs.order"}, "missing": {"event": "abs.pay"}, "within": "2s"}},
            "then": [{"emit": "abs_unpaid"}],
        }
    )
    client.put_config({"kind": "subscription", "name": "abs", "topics": ["business.abs_unpaid"]})
    now = int(time.time() * 1000)
    events = [
        {"id": "ao1", "type": "abs.order", "time": now, "subject": "payer", "data": {}},
        {"id": "ap1", "type": "abs.pay", "time": now + 500, "subject": "payer", "data": {}},
        {"id": "ao2", "type": "abs.order", "time": now, "subject": "forgetful", "data": {}},
    ]
    assert client.send(events).accepted == 3
    received = read_exactly(platform, client, "abs", 1, timeout_s=30)
    assert [(e["subject"], e["data"]["events"][0]["id"]) for e in received] == [("forgetful", "ao2")]


def test_tag_and_task_actions(platform, client):
    """Real-time tag flips (事件为标签动态翻转) and agent tasks with an SLA."""
    client.put_config(
        {
            "kind": "rule",
            "name": "big-order-vip",
            "when": {"event": "act.order", "where": "data.amount >= 1000"},
            "then": [
                {"tag": {"set": "big-spender"}},
                {"task": {"queue": "vip-agents", "title": "call the customer", "sla": "2h", "priority": 80}},
            ],
        }
    )
    client.put_config({"kind": "subscription", "name": "act", "topics": ["tasks.*", "tags.*"]})
    client.request("PUT", "/v1/profiles/ivy", json={"tags": ["app-user"]})
    assert client.send(
        [{"id": "act1", "type": "act.order", "time": T0, "subject": "ivy", "data": {"amount": 1500}}]
    ).accepted
    received = read_exactly(platform, client, "act", 2, timeout_s=30)
    by_type = {e["type"]: e for e in received}
    assert set(by_type) == {"tags.set", "tasks.vip-agents"}
    task = by_type["tasks.vip-agents"]["data"]["task"]
    assert (task["queue"], task["sla"], task["priority"]) == ("vip-agents", "2h", 80)
    assert task["due"] == "2026-09-21T16:13:20.000Z"  # T0 + 2 h
    profile = client.request("GET", "/v1/profiles/ivy")["attributes"]
    assert profile["tags"] == ["app-user", "big-spender"]


def test_event_marketing_scenario_tags_then_targets(platform, client):
    """configs/scenarios/event-marketing.yaml end to end: presence at the game sets the tag in the
    profile, and the next game's offer reaches only the tagged fan (once: cooldown)."""
    from pathlib import Path

    from runtime.config.documents import load_yaml_documents
    from runtime.rules.backtest import load_events

    scenarios = Path(__file__).resolve().parents[2] / "configs" / "scenarios"
    for _, raw in load_yaml_documents(scenarios / "event-marketing.yaml"):
        client.put_config(raw)
    client.put_config({"kind": "subscription", "name": "cba", "topics": ["notifications.app_push", "tags.*"]})
    events = load_events(scenarios / "fixtures" / "event-marketing.ndjson")
    game = [e for e in events if e["type"] == "location.update"]
    sale = [e for e in events if e["type"] != "location.update"]
    assert client.send(game).accepted == len(game)  # the game night
    tagged = read_exactly(platform, client, "cba", 1, timeout_s=30)
    assert [(e["type"], e["subject"]) for e in tagged] == [("tags.set", "fan-1")]
    assert "cba-fan" in client.request("GET", "/v1/profiles/fan-1")["attributes"]["tags"]
    assert client.send(sale).accepted == len(sale)  # the next game's ticket sale
    offers = read_exactly(platform, client, "cba", 1, timeout_s=30)
    assert [(e["type"], e["subject"], e["data"]["events"][0]["id"]) for e in offers] == [
        ("notifications.app_push", "fan-1", "em-5")
    ]


def test_why_shows_what_holds_and_what_is_missing(platform, client):
    import time

    from runtime.events.envelope import format_time_ms

    client.put_config(
        {
            "kind": "rule",
            "name": "why-three",
            "when": {"event": "why.login", "count": 3, "within": "10m"},
            "then": [{"emit": "why_fired"}],
        }
    )
    # times near now: other tests of the module move the partitions' watermarks to the present
    start = (int(time.time() * 1000) // 1000) * 1000
    events = [
        {"id": f"why{i}", "type": "why.login", "time": start + i * M, "subject": "wes", "data": {}} for i in range(2)
    ]
    assert client.send(events).accepted == 2
    deadline = time.monotonic() + 30
    while True:
        answer = client.request("GET", "/v1/decisions/wes", params={"rule": "why-three"})
        window = answer["rules"][0].get("window", {})
        if window.get("count") == 2 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert window.get("count") == 2, answer
    assert window["needs"] == "3 events"
    assert [e["id"] for e in window["events"]] == ["why0", "why1"]
    assert window["oldest_expires_at"] == format_time_ms(start + 10 * M)  # why0 + 10 min
    assert answer["rules"][0]["last_fires"] == []
    nobody = client.request("GET", "/v1/decisions/nobody", params={"rule": "why-three"})
    assert nobody["rules"][0]["state"] is False
    assert nobody["rules"][0]["last_fires"] == []

    # the third login fires the rule: the answer keeps the fire with the events that triggered it
    third = {"id": "why2", "type": "why.login", "time": start + 2 * M, "subject": "wes", "data": {}}
    assert client.send([third]).accepted == 1
    deadline = time.monotonic() + 30
    while True:
        answer = client.request("GET", "/v1/decisions/wes", params={"rule": "why-three"})
        fires = answer["rules"][0]["last_fires"]
        if fires or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert len(fires) == 1, answer
    assert fires[0]["rule"] == "why-three"
    assert fires[0]["version"] == answer["rules"][0]["version"]
    assert fires[0]["time"] == format_time_ms(start + 2 * M)
    assert [(e["source"], e["id"]) for e in fires[0]["events"]] == [("e2e", f"why{i}") for i in range(3)]
    everything = client.request("GET", "/v1/decisions/wes")  # all rules: the fire is under its rule only
    assert {r["rule"]: len(r["last_fires"]) for r in everything["rules"]}["why-three"] == 1
    assert all(r["last_fires"] == [] for r in everything["rules"] if r["rule"] != "why-three")
