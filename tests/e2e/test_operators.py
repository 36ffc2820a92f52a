"""The operator examples of configs/operators/ end to end over the public HTTP contract: the
catalogue, every example rule and the profiles are PUT, all fixtures are POSTed in one request,
and one pull subscription must receive exactly the outputs of the unit test's table
(tests/unit/test_operator_examples.py, the one source of truth). Timer-fired outputs (absence,
duration, dwell) come by the wall clock once the partitions have read their logs: the fixture
times are in the past."""

from __future__ import annotations

from runtime.config.documents import load_yaml_documents
from runtime.events.envelope import parse_time_ms
from runtime.rules.backtest import load_events
from runtime.rules.models import Action
from tests.e2e.helpers import read_exactly
from tests.unit.test_operator_examples import CATALOGUE, EXPECTED, PROFILES, fixture_file, rule_file


def put_profiles(client) -> None:
    for customer, attributes in PROFILES.items():
        client.request("PUT", f"/v1/profiles/{customer}", json=attributes)
        assert client.request("GET", f"/v1/profiles/{customer}")["attributes"] == attributes


def test_every_operator_example_end_to_end(platform, client):
    for _, raw in load_yaml_documents(CATALOGUE):
        client.put_config(raw)
    operator_of: dict[str, str] = {}  # rule name -> operator
    topics: set[str] = set()
    for operator in EXPECTED:
        [(_, raw)] = load_yaml_documents(rule_file(operator))
        assert client.put_config(raw)["name"] == raw["name"]
        operator_of[raw["name"]] = operator
        topics |= {Action.model_validate(action).topic for action in raw["then"]}
    client.put_config({"kind": "subscription", "name": "operators", "topics": sorted(topics)})
    put_profiles(client)

    events = sorted(
        (e for operator in EXPECTED for e in load_events(fixture_file(operator))),
        key=lambda e: parse_time_ms(e["time"]),
    )
    report = client.send(events)  # one request: each partition gets its events as one log entry
    assert (report.accepted, report.duplicates, report.rejected) == (len(events), 0, [])

    want = sorted((operator, *fire) for operator, fires in EXPECTED.items() for fire in fires)
    received = read_exactly(platform, client, "operators", len(want), timeout_s=60)
    got = sorted(
        (operator_of[e["data"]["rule"]], e["subject"], e["type"], [m["id"] for m in e["data"]["events"]])
        for e in received
    )
    assert got == want
    assert all(m["source"] == "e2e" for e in received for m in e["data"]["events"])
    assert len({e["id"] for e in received}) == len(want)  # every output once


def test_profile_scores_can_be_put_over_http(platform, client):
    scores = {"scores": {"5g-plan": 82}}
    client.request("PUT", "/v1/profiles/op-scores-over-http", json=scores)
    assert client.request("GET", "/v1/profiles/op-scores-over-http")["attributes"] == scores
