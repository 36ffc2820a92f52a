"""The contact policy decides on the wall clock of the decision, not on event time (issue 14).

Rules run on event time; a notification they produce carries the time of the event that
completed the match (``time``). The policy stage ignores it: caps, de-dup days and quiet hours
are counted from the moment the stage decides, and the contact enters the ledger at that
moment. So a late event's notification is capped by when it is decided, not by when its event
happened. Each test below is built so that a policy deciding on the notification's event time
would give a different decision (the comment under each case says which).

The stage runs against a real redis-server; its clock (the ``clock`` it is given, ``time.time``
in production) is set by the test so that days can pass between decisions.
"""

from __future__ import annotations

import time

from runtime.config.store import ConfigStore
from runtime.events.envelope import format_time_ms, parse_time_ms
from runtime.policy.stage import PolicyStage
from runtime.subscriptions.outbox import Outbox, Publication
from runtime.subscriptions.pull import SubscriptionReader
from runtime.subscriptions.topics import TopicRouter
from tests.conftest import url_of

SHARDS = 2
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
T0 = parse_time_ms("2026-11-20T12:00:00Z")  # "now" of the decisions below: midday, UTC
assert T0 is not None


class Clock:
    """The stage's wall clock, moved by the test."""

    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> float:
        return self.ms / 1000


def notification(i: str, event_ms: int, *, customer: str = "c1", campaign: str = "offers", template: str = "t1"):
    """A rule's notify output as a partition actor publishes it: ``time`` is the event time of
    the event that completed the match."""
    event = {
        "specversion": "1.0",
        "id": i,
        "source": "esp/rule/r",
        "type": "notifications.sms",
        "subject": customer,
        "time": format_time_ms(event_ms),
        "data": {
            "rule": "r",
            "rule_version": 1,
            "count": 1,
            "events": [{"source": "app", "id": f"e-{i}"}],
            "notify": {"channel": "sms", "template": template, "campaign": campaign, "priority": 50},
        },
    }
    return Publication(i, "notifications.sms", event)


def stage_with(client, clock: Clock, **policy) -> PolicyStage:
    store = ConfigStore(client)
    store.put({"kind": "subscription", "name": "dec", "topics": ["decisions"]})
    store.put({"kind": "campaign", "name": "offers", "priority": 50})
    store.put({"kind": "policy", "name": "default", "arbitration_window": "0s", **policy})
    return PolicyStage(
        url_of(client), list(range(SHARDS)), total_shards=SHARDS, horizon_s=3600, maxlen=100_000, clock=clock
    )


def decide_at(client, stage: PolicyStage, clock: Clock, now_ms: int, pub: Publication) -> dict:
    """Publish one notification (as a partition actor does), let the stage decide it with its
    clock at ``now_ms``, and return the decision as subscribers of ``decisions`` read it."""
    clock.ms = now_ms
    _, docs = ConfigStore(client).snapshot()
    Outbox(client, horizon_s=3600, maxlen=100_000).publish([pub], TopicRouter.from_docs(docs, policy_shards=SHARDS))
    reader = SubscriptionReader(client, visibility_timeout_ms=60_000)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        stage.step(block_ms=20)
        pulled = reader.pull("dec", max_events=100, wait_ms=0)["events"]
        mine = [e for e in pulled if e["data"]["request"] == pub.id]
        if mine:
            return mine[-1]
    raise AssertionError(f"no decision for {pub.id} within 10 s")


DAILY_CAP = {"caps": [{"name": "daily", "window": "1d", "max": 1}]}


def test_a_late_events_notification_is_capped_by_one_decided_earlier_today(redis_client):
    """Cap of 1 a day. Earlier today a notification was sent whose own event is 4 days old (a
    backfill, say); now a notification from an event 3 days old is decided: capped, because both
    were decided today. (On event time they would lie 4 and 3 days back, a day apart: sent.)"""
    clock = Clock(T0)
    stage = stage_with(redis_client, clock, **DAILY_CAP)

    earlier = decide_at(redis_client, stage, clock, T0 - 2 * HOUR_MS, notification("n1", T0 - 4 * DAY_MS))
    assert earlier["data"]["decision"] == "sent"
    late = decide_at(redis_client, stage, clock, T0, notification("n2", T0 - 3 * DAY_MS))
    assert late["data"]["decision"] == "suppressed:cap:daily"
    # the decision is dated when it was made, not when the event happened
    assert late["time"] == format_time_ms(T0)
    assert earlier["time"] == format_time_ms(T0 - 2 * HOUR_MS)


def test_a_fresh_notification_decided_earlier_today_caps_a_late_one(redis_client):
    """The issue's case as stated: a notification from an event 3 days ago, decided now, is
    capped by one decided (and happened) earlier today. The decision's time is the decision's
    wall clock. (On event time the late one would be decided 3 days back and dated then.)"""
    clock = Clock(T0)
    stage = stage_with(redis_client, clock, **DAILY_CAP)

    earlier = decide_at(redis_client, stage, clock, T0 - HOUR_MS, notification("n1", T0 - HOUR_MS))
    assert earlier["data"]["decision"] == "sent"
    late = decide_at(redis_client, stage, clock, T0, notification("n2", T0 - 3 * DAY_MS))
    assert (late["data"]["decision"], late["time"]) == ("suppressed:cap:daily", format_time_ms(T0))


def test_a_late_notification_is_not_capped_by_one_sent_when_its_event_happened(redis_client):
    """Three days ago a notification was sent; now an event from that same afternoon arrives
    late and its notification is decided: the day-cap's window is the last day before *now*,
    which holds nothing, so it is sent. (On event time the two would be a minute apart: capped.)"""
    clock = Clock(T0)
    stage = stage_with(redis_client, clock, **DAILY_CAP)

    then = T0 - 3 * DAY_MS
    assert decide_at(redis_client, stage, clock, then, notification("n0", then))["data"]["decision"] == "sent"
    late = decide_at(redis_client, stage, clock, T0, notification("n1", then + 60_000))
    assert late["data"]["decision"] == "sent"


def test_a_late_notification_counts_against_the_cap_from_when_it_was_sent(redis_client):
    """A notification from an event 3 days old is sent now; an hour later a fresh one is capped
    by it: the ledger records a contact at the time it was sent. (On event time the late contact
    would sit 3 days back, outside the fresh one's day: sent.)"""
    clock = Clock(T0)
    stage = stage_with(redis_client, clock, **DAILY_CAP)

    late = decide_at(redis_client, stage, clock, T0, notification("n1", T0 - 3 * DAY_MS))
    assert late["data"]["decision"] == "sent"
    fresh = decide_at(redis_client, stage, clock, T0 + HOUR_MS, notification("n2", T0 + HOUR_MS))
    assert fresh["data"]["decision"] == "suppressed:cap:daily"


def test_de_dup_days_count_back_from_the_decision(redis_client):
    """De-dup of 7 days for the campaign. Ten days ago the campaign's message was sent; a late
    event from 8 days ago gives the same message now: outside the 7 days before now, sent. A day
    later a fresh event gives it again: within 7 days of the late one's sending, suppressed.
    (On event time the late one would be 2 days after the first, suppressed; and had it been
    sent, it would sit 9 days before the fresh one: sent.)"""
    clock = Clock(T0)
    stage = stage_with(redis_client, clock, dedupe_days=7)

    first = decide_at(redis_client, stage, clock, T0 - 10 * DAY_MS, notification("d0", T0 - 10 * DAY_MS))
    assert first["data"]["decision"] == "sent"
    late = decide_at(redis_client, stage, clock, T0, notification("d1", T0 - 8 * DAY_MS))
    assert late["data"]["decision"] == "sent"
    again = decide_at(redis_client, stage, clock, T0 + DAY_MS, notification("d2", T0 + DAY_MS))
    assert again["data"]["decision"] == "suppressed:dedupe"


QUIET = {"quiet_hours": {"start": "22:00", "end": "07:00", "timezone": "UTC", "action": "hold"}}


def test_quiet_hours_are_those_of_the_decision_not_of_the_event(redis_client):
    """Quiet hours 22:00-07:00 UTC. A notification from an event at 23:00 three nights ago,
    decided at midday, is sent; one from an event at midday three days ago, decided at 23:00
    tonight, is held until 07:00 tomorrow and sent when the stage's clock gets there. (On event
    time the first would be held and the second sent.)"""
    clock = Clock(T0)
    stage = stage_with(redis_client, clock, **QUIET)

    night_event = T0 - 3 * DAY_MS + 11 * HOUR_MS  # 23:00 UTC, three days ago
    assert decide_at(redis_client, stage, clock, T0, notification("q1", night_event))["data"]["decision"] == "sent"

    tonight = T0 + 11 * HOUR_MS  # 23:00 UTC today
    held = decide_at(redis_client, stage, clock, tonight, notification("q2", T0 - 3 * DAY_MS, customer="c2"))
    assert held["data"]["decision"] == "held:quiet_hours"
    assert held["data"]["release_at"] == format_time_ms(T0 + 19 * HOUR_MS)  # 07:00 UTC tomorrow

    # the hold is released on the stage's clock: not a minute before 07:00, and at 07:00
    reader = SubscriptionReader(redis_client, visibility_timeout_ms=60_000)
    clock.ms = T0 + 19 * HOUR_MS - 60_000
    stage.step(block_ms=20)
    assert reader.pull("dec", max_events=100, wait_ms=0)["events"] == []
    released = decide_at(redis_client, stage, clock, T0 + 19 * HOUR_MS, notification("q3", T0, customer="c3"))
    assert released["data"]["decision"] == "sent"  # q3: a fresh one outside quiet hours
    recorded = [(d["id"], d["outcome"], d["at"]) for d in stage.ledger.recent("c2")]  # newest first
    assert recorded == [("q2", "sent", T0 + 19 * HOUR_MS), ("q2", "held:quiet_hours", tonight)]


def test_with_the_real_clock_a_late_notification_is_decided_now(redis_client):
    """The stage's default clock is the wall clock: two notifications from events 4 and 3 days
    old are both decided now, the second capped by the first; each decision is dated now."""
    store = ConfigStore(redis_client)
    store.put({"kind": "subscription", "name": "dec", "topics": ["decisions"]})
    store.put({"kind": "campaign", "name": "offers", "priority": 50})
    store.put({"kind": "policy", "name": "default", "arbitration_window": "0s", **DAILY_CAP})
    stage = PolicyStage(url_of(redis_client), list(range(SHARDS)), total_shards=SHARDS, horizon_s=3600, maxlen=100_000)
    before = int(time.time() * 1000)
    _, docs = store.snapshot()
    router = TopicRouter.from_docs(docs, policy_shards=SHARDS)
    outbox = Outbox(redis_client, horizon_s=3600, maxlen=100_000)
    reader = SubscriptionReader(redis_client, visibility_timeout_ms=60_000)
    got: dict[str, dict] = {}
    for pub in (notification("r1", before - 4 * DAY_MS), notification("r2", before - 3 * DAY_MS)):
        outbox.publish([pub], router)
        deadline = time.monotonic() + 10
        while pub.id not in got and time.monotonic() < deadline:
            stage.step(block_ms=20)
            got.update({e["data"]["request"]: e for e in reader.pull("dec", max_events=100, wait_ms=0)["events"]})
    after = int(time.time() * 1000)

    assert (got["r1"]["data"]["decision"], got["r2"]["data"]["decision"]) == ("sent", "suppressed:cap:daily")
    for decision in got.values():
        at = parse_time_ms(decision["time"])
        assert at is not None and before <= at <= after
