"""runtime.rules.engine and runtime.rules.compiled: hand-drawn timelines.

Timelines are drawn in event-time milliseconds; ``x`` is a matching event, ``o`` one the
rule's ``where`` refuses, ``!`` a firing. The brute-force comparison lives in
test_engine_oracle.py.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import msgspec
import pytest

from runtime.events.envelope import Event
from runtime.rules import CompiledRule, PartitionEngine, compile_rule
from runtime.rules.engine import output_id


def rule(name: str = "r", *, version: int = 1, **fields: Any) -> CompiledRule:
    when = {"event": "a", **fields.pop("when", {})}
    doc = {"kind": "rule", "name": name, "when": when, "then": [{"emit": f"{name}-out"}], **fields}
    return compile_rule({**doc, "version": version})


def ev(n: int, time: int, customer: str = "c1", *, type: str = "a", **data: Any) -> Event:
    return Event(
        id=f"e{n}",
        type=type,
        time=time,
        subject=customer,
        customer=customer,
        source="src",
        data=data,
        received_at=0,
    )


def fired(outputs) -> list[tuple[str, str, list[str]]]:
    """(rule, customer, matched event ids) of each output."""
    return [
        (o.event["data"]["rule"], o.event["subject"], [r["id"] for r in o.event["data"]["events"]]) for o in outputs
    ]


def feed(engine: PartitionEngine, *events: Event) -> list[tuple[str, str, list[str]]]:
    return fired(engine.on_events(list(events)))


# -- compile_rule --------------------------------------------------------------------------------


def test_compile_rule_units_and_defaults():
    compiled = compile_rule(
        {
            "kind": "rule",
            "name": "login-failures",
            "priority": 80,
            "when": {"event": "app.login", "where": "data.result == 'fail'", "count": {"gte": 3}, "within": "10m"},
            "then": [{"emit": "business.account_risk"}],
            "cooldown": "30m",
            "version": 7,
            "updated_at": 123,
        }
    )
    assert (compiled.name, compiled.version, compiled.priority, compiled.event_type) == (
        "login-failures",
        7,
        80,
        "app.login",
    )
    assert (compiled.threshold, compiled.window_ms, compiled.cooldown_ms) == (3, 600_000, 1_800_000)
    assert compiled.where is not None and compiled.where.source == "data.result == 'fail'"
    assert [a.topic for a in compiled.actions] == ["business.account_risk"]


def test_compile_rule_without_where_or_window():
    compiled = rule()
    assert (compiled.where, compiled.threshold, compiled.window_ms, compiled.cooldown_ms) == (None, 1, 0, 0)


def test_shape_ignores_priority_actions_cooldown_and_version():
    base = rule(when={"count": 2, "within": "1s", "where": "data.v > 1"})
    other = compile_rule(
        {
            "kind": "rule",
            "name": "r",
            "priority": 99,
            "when": {"event": "a", "count": 2, "within": "1000ms", "where": "data.v > 1"},
            "then": [{"notify": {"channel": "sms", "template": "t"}}],
            "cooldown": "1h",
            "version": 9,
        }
    )
    assert base.shape == other.shape
    for changed in (
        rule(when={"count": 3, "within": "1s", "where": "data.v > 1"}),
        rule(when={"count": 2, "within": "2s", "where": "data.v > 1"}),
        rule(when={"count": 2, "within": "1s", "where": "data.v > 2"}),
        rule(when={"count": 2, "within": "1s"}),
        rule(when={"event": "b", "count": 2, "within": "1s", "where": "data.v > 1"}),
    ):
        assert changed.shape != base.shape


# -- windows ---------------------------------------------------------------------------------


def test_count_over_sliding_window():
    # threshold 3, within 100 ms
    #
    #   t:   0    50   100  120
    #        x    x    x    x!        at 100 the event at 0 has left the window (0 > 100-100 fails)
    #             [---- 100 ms ---]   at 120 the window holds 50, 100, 120 -> fire
    engine = PartitionEngine([rule(when={"count": 3, "within": "100ms"})])
    assert feed(engine, ev(0, 0), ev(1, 50), ev(2, 100)) == []
    assert feed(engine, ev(3, 120)) == [("r", "c1", ["e1", "e2", "e3"])]
    # the window restarted: two more are not enough
    assert feed(engine, ev(4, 121), ev(5, 122)) == []
    assert feed(engine, ev(6, 123)) == [("r", "c1", ["e4", "e5", "e6"])]


def test_window_edge_is_exclusive():
    # within 100 ms: an event exactly 100 ms older than the newest is out.
    #   t:  0   100
    #       x   x      -> window {100}: no fire
    #   t:  0    99
    #       x    x!    -> window {0, 99}: fire
    engine = PartitionEngine([rule(when={"count": 2, "within": "100ms"})])
    assert feed(engine, ev(0, 0), ev(1, 100)) == []
    engine = PartitionEngine([rule(when={"count": 2, "within": "100ms"})])
    assert feed(engine, ev(0, 0), ev(1, 99)) == [("r", "c1", ["e0", "e1"])]


def test_where_filters_and_other_types_are_ignored():
    #   t:  0     1     2           3
    #       x     o     (type b)    x!
    engine = PartitionEngine([rule(when={"count": 2, "within": "1s", "where": "data.v >= 5"})])
    assert feed(engine, ev(0, 0, v=5), ev(1, 1, v=4), ev(2, 2, type="b", v=9)) == []
    assert feed(engine, ev(3, 3, v=7)) == [("r", "c1", ["e0", "e3"])]


def test_where_on_missing_field_does_not_match():
    engine = PartitionEngine([rule(when={"where": "data.v >= 5"})])
    assert feed(engine, ev(0, 0), ev(1, 1, w=9)) == []
    assert engine.customers == 0


def test_customers_are_independent():
    engine = PartitionEngine([rule(when={"count": 2, "within": "1s"})])
    assert feed(engine, ev(0, 0, "alice"), ev(1, 1, "bob")) == []
    assert engine.customers == 2
    assert feed(engine, ev(2, 2, "bob"), ev(3, 3, "alice")) == [
        ("r", "bob", ["e1", "e2"]),
        ("r", "alice", ["e0", "e3"]),
    ]
    assert engine.customers == 0


def test_cooldown_ignores_matches_and_counting_starts_afresh():
    # threshold 2, within 100 ms, cooldown 60 ms
    #
    #   t:   0   10!  20   30   69   70   80!
    #        x   x    -    -    -    x    x      fire at 10; matches before 70 are ignored;
    #            [cooldown 60 ms)                from 70 counting starts afresh -> fire at 80
    engine = PartitionEngine([rule(when={"count": 2, "within": "100ms"}, cooldown="60ms")])
    assert feed(engine, ev(0, 0), ev(1, 10)) == [("r", "c1", ["e0", "e1"])]
    assert feed(engine, ev(2, 20), ev(3, 30), ev(4, 69)) == []
    assert engine.snapshot()["customers"] == {"c1": {"r": [[], [], 70]}}  # nothing was kept
    assert feed(engine, ev(5, 70)) == []
    assert feed(engine, ev(6, 80)) == [("r", "c1", ["e5", "e6"])]


def test_cooldown_state_keeps_customer_until_it_ends():
    engine = PartitionEngine([rule(cooldown="1s")])
    assert feed(engine, ev(0, 5)) == [("r", "c1", ["e0"])]
    assert engine.customers == 1  # the running cooldown is state
    assert engine.snapshot()["customers"] == {"c1": {"r": [[], [], 1005]}}


def test_firing_without_cooldown_leaves_no_state():
    engine = PartitionEngine([rule(when={"count": 2, "within": "1s"})])
    feed(engine, ev(0, 0), ev(1, 1))
    assert engine.customers == 0
    assert engine.snapshot()["customers"] == {}


def test_single_event_rule_with_cooldown_does_not_hoard_events():
    """Regression: a 'count 1, no window, cooldown' rule used to keep every match of the
    cooldown (unbounded state) and then fire with all of them."""
    engine = PartitionEngine([rule(cooldown="1s")])
    assert feed(engine, ev(0, 10)) == [("r", "c1", ["e0"])]
    assert feed(engine, ev(1, 100), ev(2, 200), ev(3, 300)) == []
    assert engine.snapshot()["customers"]["c1"]["r"][0] == []
    assert feed(engine, ev(4, 1500)) == [("r", "c1", ["e4"])]


def test_events_before_1970_fire_and_cool_down():
    """Regression: 'no cooldown' used to be cooldown_until = 0, which held back negative times."""
    engine = PartitionEngine([rule(cooldown="500ms")])
    assert feed(engine, ev(0, -1000)) == [("r", "c1", ["e0"])]
    assert feed(engine, ev(1, -501)) == []
    assert feed(engine, ev(2, -500)) == [("r", "c1", ["e2"])]


def test_out_of_order_event_joins_the_window_in_time_order():
    # threshold 3, within 100 ms; arrival order 100, 30, 60
    #   t:  30  60  100
    #       x   x   x!     fires on the third arrival, refs in event-time order
    engine = PartitionEngine([rule(when={"count": 3, "within": "100ms"})])
    assert feed(engine, ev(0, 100), ev(1, 30)) == []
    assert feed(engine, ev(2, 60)) == [("r", "c1", ["e1", "e2", "e0"])]


def test_late_event_older_than_the_window_counts_for_nothing():
    engine = PartitionEngine([rule(when={"count": 2, "within": "100ms"})])
    assert feed(engine, ev(0, 500), ev(1, 400)) == []  # 400 <= 500 - 100: evicted at once
    assert engine.snapshot()["customers"]["c1"]["r"][1] == [["src", "e0"]]


# -- outputs ---------------------------------------------------------------------------------


def test_output_cloudevent_shape():
    compiled = compile_rule(
        {
            "kind": "rule",
            "name": "big-spender",
            "when": {"event": "order.placed", "count": 2, "within": "1h"},
            "then": [{"emit": "business.vip_lead"}, {"notify": {"channel": "sms", "template": "vip-welcome"}}],
            "version": 4,
        }
    )
    engine = PartitionEngine([compiled])
    outputs = engine.on_events(
        [ev(1, 1_704_067_200_000, type="order.placed"), ev(2, 1_704_067_260_500, type="order.placed")]
    )
    assert [o.topic for o in outputs] == ["business.vip_lead", "notifications.sms"]
    emit, notify = outputs
    assert emit.event == {
        "specversion": "1.0",
        "id": emit.id,
        "source": "esp/rule/big-spender",
        "type": "business.vip_lead",
        "time": "2024-01-01T00:01:00.500Z",
        "subject": "c1",
        "data": {
            "rule": "big-spender",
            "rule_version": 4,
            "count": 2,
            "events": [{"source": "src", "id": "e1"}, {"source": "src", "id": "e2"}],
        },
    }
    assert notify.event["data"]["notify"] == {"channel": "sms", "template": "vip-welcome", "priority": 50}
    assert notify.event["type"] == "notifications.sms"
    assert emit.id != notify.id  # one id per action
    assert len(emit.id) == 32 and int(emit.id, 16) >= 0


def test_output_id_is_the_documented_digest():
    # Subscribers de-duplicate on this id across versions and replays: it is a storage format.
    # Documented: SHA-256 of the compact JSON [rule, customer, action index, [[source, id], ...]].
    encoded = json.dumps(["r", "c1", 0, [["src", "e1"], ["src", "e2"]]], separators=(",", ":")).encode()
    assert output_id("r", "c1", [("src", "e1"), ("src", "e2")], 0) == hashlib.sha256(encoded).hexdigest()[:32]


def test_output_ids_are_deterministic_across_engines():
    events = [ev(i, i * 10, f"c{i % 3}") for i in range(30)]
    first = PartitionEngine([rule(when={"count": 2, "within": "1s"})]).on_events(events)
    again = PartitionEngine([rule(when={"count": 2, "within": "1s"})]).on_events(events)
    assert len(first) == 15
    assert [o.id for o in first] == [o.id for o in again]
    assert len({o.id for o in first}) == 15


@pytest.mark.parametrize(
    ("rule_name", "customer", "refs", "action"),
    [
        ("r2", "c1", [("s", "e1")], 0),
        ("r", "c2", [("s", "e1")], 0),
        ("r", "c1", [("s", "e2")], 0),
        ("r", "c1", [("t", "e1")], 0),
        ("r", "c1", [("s", "e1"), ("s", "e2")], 0),
        ("r", "c1", [("s", "e1")], 1),
    ],
)
def test_output_id_differs_when_any_input_differs(rule_name, customer, refs, action):
    assert output_id(rule_name, customer, refs, action) != output_id("r", "c1", [("s", "e1")], 0)


@pytest.mark.parametrize(
    ("left", "right"),
    [
        (("r", "c", [("s", "a\x1es\x1fb")]), ("r", "c", [("s", "a"), ("s", "b")])),
        (("r", "c", [("s", 'a"],["s","b')]), ("r", "c", [("s", "a"), ("s", "b")])),
        (("r\x1fc", "", [("s", "a")]), ("r", "c", [("s", "a")])),
        (("r", "c", [("s\x1fa", "b")]), ("r", "c", [("s", "a\x1fb")])),
    ],
)
def test_output_id_is_unambiguous_whatever_the_ids_contain(left, right):
    """Regression: parts joined with \\x1e/\\x1f made these pairs collide; event ids may
    contain any character, and a collision makes a subscriber drop a real output."""
    assert output_id(*left, 0) != output_id(*right, 0)


def test_rules_fire_in_priority_order_then_name():
    rules = [
        rule("low", priority=10),
        rule("high", priority=90),
        rule("b-mid", priority=50),
        rule("a-mid", priority=50),
    ]
    engine = PartitionEngine(rules)
    assert [f[0] for f in feed(engine, ev(0, 0))] == ["high", "a-mid", "b-mid", "low"]


# -- snapshot and resume ---------------------------------------------------------------------


def test_snapshot_resume_continues_the_window():
    # threshold 5 within 1 s: four events of c1 before the checkpoint, one after
    rules = [rule(when={"count": 5, "within": "1s"}, cooldown="5s")]
    engine = PartitionEngine(rules)
    feed(engine, ev(0, 0), ev(1, 100), ev(2, 100), ev(3, 150), ev(9, 200, "other"))
    snapshot = msgspec.msgpack.decode(msgspec.msgpack.encode(engine.snapshot()))
    c1_refs = [["src", "e0"], ["src", "e1"], ["src", "e2"], ["src", "e3"]]
    assert snapshot == {
        "customers": {"c1": {"r": [[0, 100, 100, 150], c1_refs, None]}, "other": {"r": [[200], [["src", "e9"]], None]}},
        "clocks": {"c1": 150, "other": 200},  # each customer's newest event time: lateness is per customer
        "offsets": {},
        "rules": {"r": 1},
        "shapes": {"r": ["a", None, 5, 1000]},
    }
    resumed = PartitionEngine(rules, resume_state=snapshot)
    assert resumed.customers == 2
    assert feed(resumed, ev(4, 300)) == [("r", "c1", ["e0", "e1", "e2", "e3", "e4"])]
    # the cooldown started after the resume is carried by the next checkpoint
    assert resumed.snapshot()["customers"]["c1"] == {"r": [[], [], 5300]}


def test_resume_ignores_rules_that_no_longer_exist():
    snapshot = {
        "customers": {"c1": {"gone": [[1], [["src", "e0"]], None], "r": [[1], [["src", "e1"]], None]}},
        "shapes": {"gone": ["a", None, 1, 0], "r": ["a", None, 2, 1000]},
    }
    engine = PartitionEngine([rule(when={"count": 2, "within": "1s"})], resume_state=snapshot)
    assert engine.snapshot()["customers"] == {"c1": {"r": [[1], [["src", "e1"]], None]}}


def test_resume_drops_windows_of_a_rule_whose_shape_changed_while_down():
    """Like update_rules: a window counted for 'count 2 within 1s' means nothing for 'count 3'."""
    snapshot = {"customers": {"c1": {"r": [[1], [["src", "e1"]], None]}}, "shapes": {"r": ["a", None, 2, 1000]}}
    changed = PartitionEngine([rule(when={"count": 3, "within": "1s"})], resume_state=snapshot)
    assert changed.customers == 0
    same = PartitionEngine([rule(when={"count": 2, "within": "1s"})], resume_state=snapshot)
    assert same.customers == 1


def test_resume_without_any_remaining_rule_holds_no_customer():
    """Regression: customers whose only state was for deleted rules used to stay counted."""
    snapshot = {"customers": {"c1": {"gone": [[1], [["src", "e0"]], None]}}}
    assert PartitionEngine([rule()], resume_state=snapshot).customers == 0


def test_empty_resume_state_is_a_fresh_engine():
    assert PartitionEngine([rule()], resume_state={}).customers == 0
    assert PartitionEngine([rule()], resume_state=None).snapshot() == {
        "customers": {},
        "clocks": {},
        "offsets": {},
        "rules": {"r": 1},
        "shapes": {"r": ["a", None, 1, 0]},
    }


# -- hot reload ------------------------------------------------------------------------------


def three_in_a_second(**changes: Any) -> CompiledRule:
    when = {"count": 3, "within": "1s", "where": "data.v > 0", **changes.pop("when", {})}
    return rule(when=when, **changes)


def test_reload_with_unchanged_shape_keeps_windows_and_uses_the_new_version():
    engine = PartitionEngine([three_in_a_second()])
    feed(engine, ev(0, 0, v=1), ev(1, 10, v=1))
    engine.update_rules([three_in_a_second(version=2, priority=5, cooldown="1m")])
    outputs = engine.on_events([ev(2, 20, v=1)])
    assert fired(outputs) == [("r", "c1", ["e0", "e1", "e2"])]
    assert outputs[0].event["data"]["rule_version"] == 2
    assert engine.snapshot()["rules"] == {"r": 2}


@pytest.mark.parametrize(
    "changed",
    [
        {"when": {"where": "data.v > 1"}},
        {"when": {"where": None}},
        {"when": {"count": 2}},
        {"when": {"within": "2s"}},
    ],
    ids=["where", "where-removed", "threshold", "window"],
)
def test_reload_with_changed_shape_drops_windows(changed):
    engine = PartitionEngine([three_in_a_second()])
    feed(engine, ev(0, 0, v=5), ev(1, 10, v=5))
    engine.update_rules([three_in_a_second(version=2, **changed)])
    assert engine.customers == 0
    threshold = 2 if changed == {"when": {"count": 2}} else 3
    events = [ev(n, 20 + n, v=5) for n in range(2, 2 + threshold)]
    assert feed(engine, *events[:-1]) == []
    assert feed(engine, events[-1]) == [("r", "c1", [e.id for e in events])]


def test_reload_removing_a_rule_drops_its_state_and_idle_customers():
    # alice has windows for r1 and r2 (r2 only sees alice), bob only for r1
    only_alice = rule("r2", when={"count": 2, "within": "1s", "where": "customer == 'alice'"})
    engine = PartitionEngine([rule("r1", when={"count": 2, "within": "1s"}), only_alice])
    feed(engine, ev(0, 0, "alice"), ev(1, 1, "bob"))
    assert engine.customers == 2
    assert set(engine.snapshot()["customers"]["alice"]) == {"r1", "r2"}
    assert set(engine.snapshot()["customers"]["bob"]) == {"r1"}

    engine.update_rules([only_alice])
    assert engine.customers == 1  # bob had no other window
    assert engine.snapshot()["customers"] == {"alice": {"r2": [[0], [["src", "e0"]], None]}}
    assert feed(engine, ev(2, 2, "bob")) == []  # r1 is gone
    assert feed(engine, ev(3, 3, "alice")) == [("r2", "alice", ["e0", "e3"])]


def test_reload_to_no_rules_empties_the_engine():
    engine = PartitionEngine([rule(when={"count": 2, "within": "1s"})])
    feed(engine, *(ev(i, i, f"c{i}") for i in range(10)))
    assert engine.customers == 10
    engine.update_rules([])
    assert engine.customers == 0
    assert engine.rules == {}
    assert feed(engine, ev(99, 99)) == []


def test_reload_keeps_a_running_cooldown_when_only_cooldown_changes():
    engine = PartitionEngine([rule(cooldown="100ms")])
    assert feed(engine, ev(0, 0)) == [("r", "c1", ["e0"])]
    engine.update_rules([rule(cooldown="10ms", version=2)])
    # The cooldown that started under version 1 runs to its end (100 ms).
    assert feed(engine, ev(1, 50)) == []


def test_rules_property_is_a_copy():
    engine = PartitionEngine([rule()])
    engine.rules.clear()
    assert list(engine.rules) == ["r"]


# -- expire ----------------------------------------------------------------------------------


def test_expire_forgets_windows_that_ended():
    # within 100 ms; newest event of c1 at 50, of c2 at 200
    #   watermark 150: c1's window ended (50 <= 150 - 100), c2's did not
    engine = PartitionEngine([rule(when={"count": 3, "within": "100ms"})])
    feed(engine, ev(0, 0, "c1"), ev(1, 50, "c1"), ev(2, 200, "c2"))
    engine.expire(149)
    assert engine.customers == 2  # 50 > 149 - 100: still open
    engine.expire(150)
    assert engine.snapshot()["customers"] == {"c2": {"r": [[200], [["src", "e2"]], None]}}


def test_expire_ends_cooldowns_at_the_watermark():
    engine = PartitionEngine([rule(cooldown="100ms")])
    feed(engine, ev(0, 0))  # cooldown until 100
    engine.expire(99)
    assert engine.customers == 1
    engine.expire(100)
    assert engine.customers == 0


def test_expire_treats_each_rule_of_a_customer_on_its_own():
    # c1: rule "short" (within 10 ms) has an ended window, rule "cool" a running cooldown
    engine = PartitionEngine(
        [rule("short", when={"count": 2, "within": "10ms"}), rule("cool", when={"event": "b"}, cooldown="1s")]
    )
    feed(engine, ev(0, 0), ev(1, 1, type="b"), ev(2, 500))  # short: window {0, 500} -> {500}; cool: fired at 1
    engine.expire(600)
    assert engine.snapshot()["customers"] == {"c1": {"cool": [[], [], 1001]}}
    engine.expire(1001)
    assert engine.customers == 0


def test_a_checkpoint_in_the_wire_format_of_earlier_versions_resumes():
    """Checkpoints are written as plain lists and dicts whose layout did not change when the
    in-memory state was compacted: a literal one, as an earlier version wrote it, resumes."""
    rules = [
        compile_rule({"name": "pair", "when": {"event": "t", "count": 2, "within": "1h"}, "then": [{"emit": "p"}]}),
        compile_rule(
            {
                "name": "seq",
                "when": {"sequence": [{"event": "a"}, {"event": "b"}], "within": "1h"},
                "then": [{"emit": "s"}],
            }
        ),
    ]
    shapes = PartitionEngine(rules).snapshot()["shapes"]
    wire = {
        "customers": {
            "c": {
                "pair": [[1_000], [["src", "e1"]], None],  # times, (source, id) refs, cooldown
                "seq": {"w": {}, "o": {}, "c": None, "p": {"when": {"1": [2_000, [["src", "a1"]]]}}, "t": {}, "i": {}},
            }
        },
        "rules": {"pair": 0, "seq": 0},
        "shapes": shapes,
    }
    engine = PartitionEngine(rules, resume_state=wire)
    out = engine.on_events(
        [Event("e2", "t", 3_000, "c", "c", "src", {}, 0), Event("b1", "b", 4_000, "c", "c", "src", {}, 0)]
    )
    assert sorted((o.topic, tuple(m["id"] for m in o.event["data"]["events"])) for o in out) == [
        ("business.p", ("e1", "e2")),
        ("business.s", ("a1", "b1")),
    ]
