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
    received = read_exactly(client, "wealth", 2, timeout_s=30, settle_s=3)
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
