"""Fuzzing the API from its own OpenAPI against the real platform (DESIGN §3 invariant 10, issue 12):
no input may produce a 5xx.

Every operation of ``/openapi.json`` is called with schemathesis-generated requests, valid ones
(positive) and ones that break the schema (negative), as an admin (``POST /v1/events`` with a
source key). Some of the cases name documents that exist (a pull and an SSE subscription, a
channel, a campaign, the source, a quarantined event), so the fuzzer gets past "not found" into
the routes' work. Half the cases carry one hostile value (a lone surrogate, an integer past
2^64, deep nesting, a huge string, CR/LF, NUL, an out-of-range stream id) in their body, query
or path; every query and path parameter gets each hostile text once, and every JSON body each
hostile value once (as a new field of an object, in place of each of its fields, as the element
of an array). No 5xx of any kind is
allowed, ``503 store_unavailable`` included: Redis is up. A second, smaller run without
credentials must get only 401s. The SSE stream is called like the rest, but only its status is
read (a stream that opens never ends).

Bounded and reproducible: derandomised Hypothesis, ``EXAMPLES`` per operation and mode; an
operation and mode whose first ``GIVE_UP_AFTER`` draws are all rejected has nothing to generate
(negative cases of an operation with only free-text parameters) and is recorded as such. The
counts go to ``fuzz-report.json`` in the module's tmp dir and to stdout (``pytest -s``).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import hypothesis.strategies as st
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable, UnsatisfiedAssumption
from schemathesis import Case, GenerationMode

from tests.e2e.conftest import SOURCE_KEY
from tests.e2e.helpers import event

pytestmark = pytest.mark.timeout(900)

EXAMPLES = int(os.environ.get("ESP_FUZZ_EXAMPLES", "15"))  # per operation and mode; more on demand
# Rejected draws before an operation and mode counts as having nothing to generate. Operations
# that can generate are rejected at most about one draw in five, and their first draw rarely is;
# Hypothesis alone would only give up (Unsatisfiable) after some 460 rejections, ~2 s each time.
GIVE_UP_AFTER = 60
UNAUTHENTICATED_EXAMPLES = 5
PUBLIC = {("GET", "/healthz"), ("GET", "/readyz")}
READ_TIMEOUT_S = 20.0  # no route may take longer (long polls are capped below)

# Documents the fuzzer's known-name cases point at (stored again after each run of an operation
# that may have deleted or replaced them).
SEED: list[dict[str, Any]] = [
    {"kind": "source", "name": "e2e", "api_key": SOURCE_KEY},
    {"kind": "event-type", "name": "fuzz.tick", "attributes": {"n": {"type": "int"}}},
    {"kind": "rule", "name": "fuzz-rule", "when": {"event": "fuzz.tick"}, "then": [{"emit": "fuzz-rule"}]},
    {"kind": "subscription", "name": "fuzz-pull", "topics": ["business.fuzz-rule"]},
    {"kind": "subscription", "name": "fuzz-sse", "topics": ["business.fuzz-rule"], "mode": "sse"},
    {
        "kind": "channel",
        "name": "fuzz-ch",
        "type": "sms",
        "endpoint": {"url": "http://127.0.0.1:9/send", "internal": True},
        "templates": {"t": "hi {{ customer }}"},
    },
    {"kind": "campaign", "name": "fuzz-camp", "priority": 50},
]


def known_path_parameters(qid: str) -> dict[str, list[dict[str, str]]]:
    """Path parameter sets that name things that exist, per path template."""
    documents = [{"kind": d["kind"], "name": d["name"]} for d in SEED]
    return {
        "/v1/events/{source}/{event_id}/trace": [{"source": "e2e", "event_id": "fz0"}],
        "/v1/decisions/{customer}": [{"customer": "c-fuzz"}],
        "/v1/campaigns/{name}/contacts": [{"name": "fuzz-camp"}],
        "/v1/config/{kind}/{name}": documents,
        "/v1/config/{kind}/{name}/history": documents,
        "/v1/config/{kind}": [{"kind": d["kind"]} for d in documents],
        "/v1/identities/{kind}/{identifier}": [{"kind": "phone", "identifier": "+15550100"}],
        "/v1/profiles/{customer}": [{"customer": "c-fuzz"}],
        "/v1/quarantine/{qid}": [{"qid": qid}],
        **{
            f"/v1/subscriptions/{{name}}{tail}": [{"name": "fuzz-pull"}, {"name": "fuzz-sse"}]
            for tail in ("", "/events", "/stream", "/deadletters", "/deadletters/replay", "/ack")
        },
        **{
            f"/v1/channels/{{name}}{tail}": [{"name": "fuzz-ch"}]
            for tail in ("", "/deadletters", "/deadletters/replay")
        },
    }


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"a": [value]}
    return value


# What schema-driven generation rarely produces but hostile callers send (issue 12): lone
# surrogates, integers past 2^64, deep nesting, huge strings, CR/LF and NUL.
HOSTILE_JSON = ["\ud800", "x\udfffy", 2**70, -(2**64), 1e308, nested(400), "a" * 200_000, "x\r\ndata: forged", "\x00"]
HOSTILE_TEXT = ["x\r\ny", "\x00", "a" * 5000, "..", "%00", "1700000000000-0-0", "99999999999999999999-0", "-"]

HOSTILE_PATH = [quote(text, safe="") for text in HOSTILE_TEXT]  # path parameters travel percent-encoded


def leaves(node: Any) -> list[tuple[Any, Any]]:
    """(container, key) of every value inside a JSON body, containers included."""
    found: list[tuple[Any, Any]] = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        found.append((node, key))
        found += leaves(value)
    return found


@st.composite
def spiked(draw: st.DrawFn, cases: st.SearchStrategy[Case]) -> Case:
    """A generated case, half the time with one hostile value put in its body, query or path."""
    case = draw(cases)
    if not draw(st.booleans()):
        return case
    spots: list[tuple[Any, Any, list[Any]]] = [(container, key, HOSTILE_JSON) for container, key in leaves(case.body)]
    if isinstance(case.body, dict):
        spots.append((case.body, "fz", HOSTILE_JSON))  # a new field too: open objects take any
    if isinstance(case.query, dict):
        spots += [(case.query, key, HOSTILE_TEXT) for key, value in case.query.items() if isinstance(value, str)]
    if isinstance(case.path_parameters, dict):
        spots += [(case.path_parameters, key, HOSTILE_PATH) for key in case.path_parameters]
    if spots:
        container, key, values = draw(st.sampled_from(spots))
        container[key] = draw(st.sampled_from(values))
    return case


def tame(case: Case) -> Case:
    """Long polls on a real subscription wait at most a moment (they may wait 30 s by design)."""
    if case.path.endswith("/events") and case.method == "GET" and isinstance(case.query, dict):
        wait = case.query.get("wait")
        if isinstance(wait, int | float) and not isinstance(wait, bool) and wait > 0.2:
            case.query["wait"] = 0.2
    return case


class Recorder:
    """Every request made and every server error (or missing answer) found."""

    def __init__(self) -> None:
        self.statuses: Counter[tuple[str, int]] = Counter()
        self.failures: list[dict[str, Any]] = []
        self.skipped: dict[str, str] = {}

    def send(self, case: Case, base_url: str, headers: dict[str, str]) -> int | None:
        label = f"{case.method} {case.path}"
        try:
            if case.path.endswith("/stream"):  # an open stream never ends: status only
                kwargs = case.as_transport_kwargs(base_url=base_url, headers=headers)
                with requests.request(**kwargs, stream=True, timeout=(5, READ_TIMEOUT_S)) as response:
                    status = response.status_code
                    body = "" if status == 200 else response.text[:300]
            else:
                response = case.call(base_url=base_url, headers=headers, timeout=READ_TIMEOUT_S)
                status, body = response.status_code, response.text[:300]
        except requests.RequestException as exc:
            status, body = 0, f"no answer: {exc!r}"[:300]
        self.statuses[label, status] += 1
        if status == 0 or status >= 500:
            self.failures.append({"operation": label, "status": status, "body": body, "curl": case.as_curl_command()})
        return status

    @property
    def requests(self) -> int:
        return sum(self.statuses.values())


def sweep(operation: Any, fixed: dict[str, str] | None, send: Callable[[Case], Any]) -> None:
    """Every hostile text once in every query and path parameter of ``operation``, and every
    hostile JSON value once in its body (see ``body_spots``), the rest of the request being one
    valid example: what random generation may take long to hit."""
    drawn: list[Case] = []
    fuzz(operation.as_strategy(generation_mode=GenerationMode.POSITIVE, path_parameters=fixed), 1, drawn.append)
    case = drawn[0]
    places = [("query", p.name, HOSTILE_TEXT) for p in operation.query]
    places += [("path_parameters", p.name, HOSTILE_PATH) for p in operation.path_parameters]
    for part, name, values in places:
        container = getattr(case, part)
        if container is None:
            container = {}
            setattr(case, part, container)
        before = container.get(name)
        for value in values:
            container[name] = value
            send(case)
        if before is None:
            container.pop(name)
        else:
            container[name] = before
    if isinstance(case.body, dict | list):
        with deep_stack():
            body_sweep(case.body, send=lambda: send(case))


@contextlib.contextmanager
def deep_stack() -> Iterator[None]:
    """Room for the recursion of Case's own hashing of a nested body (Hypothesis gives its tests
    the same room; ``sweep`` runs outside of it)."""
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(limit + 5000)
    try:
        yield
    finally:
        sys.setrecursionlimit(limit)


def body_sweep(body: dict[str, Any] | list[Any], send: Callable[[], Any]) -> None:
    """Each hostile JSON value once as a new field of an object body and once in place of each of
    its fields; once as an array body's only element, and in place of its first. The body is
    changed in place (as in ``spiked``: a Case hashes a body assigned to it, and the nested value
    is too deep for that) and restored at the end."""
    if isinstance(body, dict):
        saved = dict(body)
        for key in ["fz", *saved]:
            for value in HOSTILE_JSON:
                body.clear()
                body.update({**saved, key: value})
                send()
        body.clear()
        body.update(saved)
        return
    saved_items = list(body)
    for value in HOSTILE_JSON:
        body[:] = [value]
        send()
        if len(saved_items) > 1:
            body[:] = [value, *saved_items[1:]]
            send()
    body[:] = saved_items


class NothingToGenerate(Exception):
    """The first ``GIVE_UP_AFTER`` draws of a strategy were all rejected."""


def fuzz(strategy: st.SearchStrategy[Case], examples: int, send: Callable[[Case], Any]) -> None:
    """``examples`` cases of ``strategy``, each sent. Raises ``Unsatisfiable`` or ``NothingToGenerate``
    when the strategy yields none."""
    tally = Counter[str]()

    @st.composite
    def counted(draw: st.DrawFn) -> Case:
        try:
            case = draw(strategy)
        except UnsatisfiedAssumption:  # a rejected draw, counted, then left to Hypothesis as before
            tally["rejected"] += 1
            if not tally["drawn"] and tally["rejected"] >= GIVE_UP_AFTER:
                raise NothingToGenerate from None
            raise
        tally["drawn"] += 1
        return case

    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],  # failures are collected, not raised: nothing to shrink
        suppress_health_check=list(HealthCheck),
    )
    @given(case=counted())
    def run(case: Case) -> None:
        send(case)

    run()


@pytest.fixture(scope="module")
def http(platform) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {platform.admin_token}"}
    with httpx.Client(base_url=platform.base_url, headers=headers, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def fuzz_token(http) -> str:
    """The fuzzer's own admin token, so that fuzzed token revocations cannot lock it out."""
    answer = http.post("/v1/tokens", json={"name": "fuzz-admin", "role": "admin"})
    assert answer.status_code == 201, answer.text
    return answer.json()["token"]


@pytest.fixture(scope="module")
def schema(http) -> schemathesis.BaseSchema:
    raw = http.get("/openapi.json")
    assert raw.status_code == 200
    return schemathesis.openapi.from_dict(raw.json())


def seed(http: httpx.Client) -> None:
    for doc in SEED:
        answer = http.put(f"/v1/config/{doc['kind']}/{doc['name']}", json=doc)
        assert answer.status_code == 200, answer.text


def quarantined_id(http: httpx.Client) -> str:
    """A real quarantine id: an event without a type is rejected and kept."""
    bad = {k: v for k, v in event(0, "fuzz.tick", prefix="fzq").items() if k != "type"}
    answer = http.post("/v1/events", json=[bad, event(0, "fuzz.tick", prefix="fz")], headers=source_headers())
    assert answer.status_code == 202 and answer.json()["rejected"], answer.text
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        items = http.get("/v1/quarantine", params={"source": "e2e"}).json()["items"]
        if items:
            return items[0]["qid"]
        time.sleep(0.2)
    raise AssertionError("the rejected event was not quarantined")


def source_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {SOURCE_KEY}"}


def test_no_input_gets_a_server_error(platform, http, fuzz_token, schema, tmp_path_factory) -> None:
    seed(http)
    known = known_path_parameters(quarantined_id(http))
    recorder = Recorder()
    operations = 0
    started = time.monotonic()
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        headers = source_headers() if operation.path == "/v1/events" else {"Authorization": f"Bearer {fuzz_token}"}
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            strategies = [operation.as_strategy(generation_mode=mode)]
            if operation.path in known:
                named = st.sampled_from(known[operation.path])
                strategies.append(
                    named.flatmap(lambda p, o=operation, m=mode: o.as_strategy(generation_mode=m, path_parameters=p))
                )
            try:
                fuzz(
                    spiked(st.one_of(strategies)).map(tame),
                    EXAMPLES,
                    lambda case, h=headers: recorder.send(case, platform.base_url, h),
                )
            except (Unsatisfiable, NothingToGenerate):  # nothing in the operation can break its schema
                recorder.skipped[f"{operation.method.upper()} {operation.path} {mode.value}"] = "no such input"
            if operation.method.upper() in ("PUT", "DELETE") and operation.path.startswith("/v1/config/"):
                seed(http)  # the fuzzer may have changed documents the next operations are meant to find
        fixed = known.get(operation.path, [None])[0]
        sweep(operation, fixed, lambda case, h=headers: recorder.send(case, platform.base_url, h))
    report = {
        "operations": operations,
        "requests": recorder.requests,
        "seconds": round(time.monotonic() - started, 1),
        "server_errors": len(recorder.failures),
        "by_status": dict(Counter(status for (_, status) in recorder.statuses.elements())),
        "failures": recorder.failures[:50],
        "not_generated": recorder.skipped,
    }
    write_report(tmp_path_factory.getbasetemp() / "fuzz-report.json", report)
    assert recorder.requests >= operations * EXAMPLES, f"too few requests ran: {report}"
    assert not recorder.failures, json.dumps(report, indent=1)


def test_without_credentials_everything_is_refused(platform, schema, tmp_path_factory) -> None:
    recorder = Recorder()
    for result in schema.get_all_operations():
        operation = result.ok()
        if (operation.method.upper(), operation.path) in PUBLIC:
            continue
        fuzz(
            operation.as_strategy(generation_mode=GenerationMode.POSITIVE).map(tame),
            UNAUTHENTICATED_EXAMPLES,
            lambda case: recorder.send(case, platform.base_url, {}),
        )
    not_refused = {label: n for (label, status), n in recorder.statuses.items() if status != 401}
    report = {"requests": recorder.requests, "not_401": {f"{k}": n for k, n in not_refused.items()}}
    write_report(tmp_path_factory.getbasetemp() / "fuzz-unauthenticated-report.json", report)
    assert recorder.requests > 0 and not not_refused, report


def write_report(path: Path, report: dict[str, Any]) -> None:
    path.write_text(json.dumps(report, indent=1))
    print(f"\nfuzz report ({path}):", json.dumps({k: v for k, v in report.items() if k != "failures"}))
