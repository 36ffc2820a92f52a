"""The operator examples of configs/operators/: one rule per operator, each on its own fixture,
in-process with the partition actors' engine. The expected outputs are written out by hand from
the fixtures and the documented semantics (the comment header of each rule file says why each
customer fires or not); tests/e2e/test_operators.py checks the same table end to end."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from runtime.config.documents import check_fields_against_type, load_yaml_documents
from runtime.events.catalogue import Catalogue
from runtime.events.envelope import Event, validate_batch
from runtime.rules import PartitionEngine, compile_rule
from runtime.rules.backtest import load_events, load_rule
from runtime.rules.models import Rule

OPERATORS = Path(__file__).resolve().parents[2] / "configs" / "operators"
FIXTURES = OPERATORS / "fixtures"
CATALOGUE = Path(__file__).resolve().parents[2] / "configs" / "catalogue"
PROFILES: dict[str, dict[str, Any]] = orjson.loads((FIXTURES / "profiles.json").read_bytes())
SOURCE = "operators"
YEAR_MS = 365 * 86_400_000

Fire = tuple[str, str, list[str]]  # (customer, topic, ids of the matched events)

# Per operator file (configs/operators/<operator>.yaml), every output in the order the engine
# produces it: fires in event-time order, one output per action in the order of 'then'.
EXPECTED: dict[str, list[Fire]] = {
    # 3 failed logins within 10 min: op-count-1 at once; op-count-2 only with its 4th failure,
    # since cnt-5 is exactly 10 min older than cnt-7 and leaves the window; op-count-3 has 2.
    "count": [
        ("op-count-1", "notifications.sms", ["cnt-1", "cnt-2", "cnt-3"]),
        ("op-count-1", "business.login_risk", ["cnt-1", "cnt-2", "cnt-3"]),
        ("op-count-2", "notifications.sms", ["cnt-6", "cnt-7", "cnt-8"]),
        ("op-count-2", "business.login_risk", ["cnt-6", "cnt-7", "cnt-8"]),
    ],
    # card spend >= 5,000 within 1 h: 1,200 + 2,500 + 1,800; op-sum-2's 3,000 left the window,
    # op-sum-3 reaches 4,999.99.
    "sum": [
        ("op-sum-1", "tasks.fraud-review", ["sum-1", "sum-2", "sum-3"]),
        ("op-sum-1", "business.card_spend_spike", ["sum-1", "sum-2", "sum-3"]),
    ],
    # 3 service calls on one UTC day: op-tumbling-2's third call is past midnight, op-tumbling-3
    # made a sales call in between.
    "tumbling": [("op-tumbling-1", "tasks.care-callback", ["tmb-1", "tmb-2", "tmb-6"])],
    # 3 withdrawals at one ATM within 30 min: BJ-0412 and then BJ-0977, each its own window.
    "group-by": [
        ("op-group-by-1", "tasks.fraud-review", ["grp-1", "grp-3", "grp-4"]),
        ("op-group-by-1", "tasks.fraud-review", ["grp-2", "grp-5", "grp-6"]),
    ],
    # (complaint call | porting page) and bill shock within 3 d, listed in condition order:
    # op-all-any-2's page view (aa-10) comes before its earlier bill (aa-4).
    "all-any": [
        ("op-all-any-1", "tasks.retention", ["aa-3", "aa-7"]),
        ("op-all-any-1", "business.churn_risk", ["aa-3", "aa-7"]),
        ("op-all-any-2", "tasks.retention", ["aa-10", "aa-4"]),
        ("op-all-any-2", "business.churn_risk", ["aa-10", "aa-4"]),
    ],
    # maturity -> (no wealth page view) -> transfer to another bank within 7 d.
    "sequence": [("op-sequence-1", "tasks.wealth-advisers", ["seq-1", "seq-7"])],
    # service call directly followed by a complaint call within 2 h; an app session in between
    # does not break it (op-strict-4), a sales call does (op-strict-2).
    "strict-sequence": [
        ("op-strict-1", "tasks.complaints-desk", ["str-1", "str-4"]),
        ("op-strict-1", "business.unresolved_issue", ["str-1", "str-4"]),
        ("op-strict-4", "tasks.complaints-desk", ["str-8", "str-10"]),
        ("op-strict-4", "business.unresolved_issue", ["str-8", "str-10"]),
    ],
    # started and not submitted within 1 d: deadlines 12 Nov 10:00 (op-absence-1) and 12:00
    # (op-absence-3, whose submission at 13:00 is too late); op-absence-2 submitted in time.
    "absence": [
        ("op-absence-1", "notifications.app_push", ["abs-1"]),
        ("op-absence-3", "notifications.app_push", ["abs-3"]),
    ],
    # 5 min or more in the queue: answered after 7 min, and never answered (timer at 12:05).
    "duration": [
        ("op-duration-1", "notifications.sms", ["dur-1"]),
        ("op-duration-3", "notifications.sms", ["dur-5"]),
    ],
    # entering the store's cells: once on 13 Nov (not again on the second store cell), again
    # after leaving, on 14 Nov.
    "geofence-enter": [
        ("op-geo-enter-1", "notifications.app_push", ["gen-2"]),
        ("op-geo-enter-1", "notifications.app_push", ["gen-7"]),
    ],
    # 15 min in the branch polygon: op-geo-dwell-1 at 10:15 (seen by dwl-3 at 10:20),
    # op-geo-dwell-4 by the final timer at 13:15.
    "geofence-dwell": [
        ("op-geo-dwell-1", "tasks.branch-lujiazui-rm", ["dwl-1"]),
        ("op-geo-dwell-4", "tasks.branch-lujiazui-rm", ["dwl-8"]),
    ],
    # arriving in the H3 zone: the Bird's Nest (resolution 9) and the Water Cube (resolution 8).
    "geofence-h3": [
        ("op-geo-h3-1", "notifications.sms", ["hex-4"]),
        ("op-geo-h3-3", "notifications.sms", ["hex-6"]),
    ],
    # prepaid, app-user and 5G score >= 70: only op-audience-1.
    "audience": [("op-audience-1", "notifications.app_push", ["aud-1"])],
    # one offer per 3 days: cdn-3 falls in the cooldown of cdn-1, cdn-4 after it.
    "cooldown": [
        ("op-cooldown-1", "notifications.sms", ["cdn-1"]),
        ("op-cooldown-1", "notifications.sms", ["cdn-4"]),
    ],
    # Double Eleven, [10 Nov 16:00Z, 11 Nov 16:00Z), amount >= 300.
    "validity": [
        ("op-validity-2", "notifications.app_push", ["val-2"]),
        ("op-validity-3", "notifications.app_push", ["val-3"]),
    ],
}


def rule_file(operator: str) -> Path:
    return OPERATORS / f"{operator}.yaml"


def fixture_file(operator: str) -> Path:
    return FIXTURES / f"{operator}.ndjson"


def operator_rule(operator: str) -> Rule:
    return load_rule(rule_file(operator))


def fixture_events(operator: str) -> list[Event]:
    batch = validate_batch(load_events(fixture_file(operator)), source=SOURCE, received_at=0)
    assert not batch.rejected, batch.rejected
    return batch.events


def run(rule: Rule, events: list[Event]) -> list[Fire]:
    """The rule over the events in the given order, then every timer (far past the last event)."""
    engine = PartitionEngine([compile_rule(rule, version=1)])
    outputs = engine.on_events(events, PROFILES if engine.reads_profiles else None)
    if events:
        outputs += engine.on_timer(max(e.time for e in events) + YEAR_MS)
    return [(o.event["subject"], o.topic, [m["id"] for m in o.event["data"]["events"]]) for o in outputs]


@pytest.mark.parametrize("operator", sorted(EXPECTED))
def test_operator_example(operator: str) -> None:
    assert run(operator_rule(operator), fixture_events(operator)) == EXPECTED[operator]


def test_every_example_has_a_fixture_and_an_expectation() -> None:
    """A new example cannot ship untested, and no fixture or expectation is left over."""
    rules = {p.stem for p in OPERATORS.iterdir() if p.suffix in {".yaml", ".yml"}}
    fixtures = {p.stem for p in FIXTURES.glob("*.ndjson")}
    assert rules == set(EXPECTED)
    assert fixtures == rules
    for operator in rules:
        assert rule_file(operator).read_text().startswith("# Operator: "), f"{operator}: no comment header"
        assert [d.get("kind") for _, d in load_yaml_documents(rule_file(operator))] == ["rule"]
        assert EXPECTED[operator], f"{operator}: an example should fire at least once"


def test_fixtures_are_time_ordered_with_unique_ids_and_customers() -> None:
    """File order is event-time order (so the in-process run sees what a partition sees); ids are
    unique over all fixtures (they share one source end to end) and so are customers across
    files (so the examples cannot disturb each other when they all run together)."""
    ids: set[str] = set()
    owner: dict[str, str] = {}
    for operator in EXPECTED:
        events = fixture_events(operator)
        assert [e.time for e in events] == sorted(e.time for e in events), operator
        for e in events:
            assert e.id not in ids, f"{operator}: id {e.id} is used twice"
            ids.add(e.id)
            assert owner.setdefault(e.customer, operator) == operator, f"{e.customer} in two fixtures"
        assert {e.customer for e in events} >= {customer for customer, _, _ in EXPECTED[operator]}
    assert set(PROFILES) <= set(owner), "profiles of customers no fixture uses"


def test_each_rule_is_silent_on_the_other_examples() -> None:
    """Every rule over all fixtures together (time order) gives exactly its own expectation: what
    the end-to-end test relies on, with all examples loaded and all fixtures posted at once."""
    merged = sorted((e for operator in EXPECTED for e in fixture_events(operator)), key=lambda e: e.time)
    for operator, expected in EXPECTED.items():
        assert run(operator_rule(operator), merged) == expected, operator


def test_rules_and_fixtures_fit_the_catalogue() -> None:
    """The examples apply on top of configs/catalogue: each 'where' reads declared attributes and
    each fixture event of a catalogued type satisfies its schema."""
    types = {raw["name"]: raw for _, raw in load_yaml_documents(CATALOGUE) if raw.get("kind") == "event-type"}
    catalogue = Catalogue(list(types.values()))
    for operator in EXPECTED:
        rule = operator_rule(operator)
        check_fields_against_type(rule, {t: types.get(t) for t in compile_rule(rule).event_types})
        for e in fixture_events(operator):
            assert catalogue.check(e.type, e.data, unknown="accept") is None, (operator, e.id)
