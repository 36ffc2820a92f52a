"""The "``ab.a`` then ``ab.b`` within 60 s" workload's expected outputs, by brute force (no Ray).

Semantics (those of ``advance_sequence`` in runtime/rules/operators.py, on the event-time-ordered
stream): per customer, over the events since the sequence last fired, in event-time order (equal
times in arrival order), a ``b`` fires at the first ``b`` that has an ``a`` before it with
``0 <= t(b) - t(a) < within``; the match names the latest such ``a`` (the latest-started
partial); then the sequence restarts (the events before the ``b`` are forgotten).

:func:`expected_matches` computes that from the definition above, without the engine's data
structures; :func:`violation` and :func:`invalid` judge published outputs against the definition
of the operator alone (what no output may ever be, whatever the arrival order); :func:`score`
puts both together for the benchmark and the end-to-end test.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

FIRST, SECOND = "ab.a", "ab.b"
WITHIN_MS = 60_000

Match = tuple[str, str, str]  # (customer, id of the ab.a event, id of the ab.b event)


def sequence_rule(
    name: str = "ab-sequence", topic: str = "business.ab_sequence", within: str = "60s"
) -> dict[str, Any]:
    """The workload's rule: ``ab.a`` then ``ab.b`` within ``within``, one emit action to ``topic``
    (a ``business.`` topic)."""
    return {
        "kind": "rule",
        "name": name,
        "when": {"sequence": [{"event": FIRST}, {"event": SECOND}], "within": within},
        "then": [{"emit": topic}],
    }


def expected_matches(events: Iterable[Mapping[str, Any]], within_ms: int = WITHIN_MS) -> set[Match]:
    """The sequence's matches on the event-time-ordered stream of ``events`` (wire form: ``id``,
    ``type``, ``time``, ``subject``; the order given is the arrival order that breaks ties)."""
    ordered = sorted(((e["time"], n, e) for n, e in enumerate(events)), key=lambda item: item[:2])
    since_fired: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    matches: set[Match] = set()
    for _, _, e in ordered:
        customer = e["subject"]
        history = since_fired[customer]
        if e["type"] == SECOND:
            starts = [a for a in history if a["type"] == FIRST and 0 <= e["time"] - a["time"] < within_ms]
            if starts:
                matches.add((customer, starts[-1]["id"], e["id"]))  # the latest-started partial
                history.clear()  # the sequence restarts
                continue
        history.append(e)
    return matches


def violation(
    output: Mapping[str, Any], events_by_id: Mapping[str, Mapping[str, Any]], within_ms: int = WITHIN_MS
) -> str | None:
    """Why ``output`` (a published CloudEvent of the rule) is not a match of the sequence by its
    definition alone, or None: two events, an ``ab.a`` then an ``ab.b`` of the output's customer,
    with ``0 <= t(b) - t(a) < within``."""
    refs = output.get("data", {}).get("events") or []
    if len(refs) != 2:
        return f"{len(refs)} events, not 2"
    found = [events_by_id.get(ref["id"]) for ref in refs]
    if found[0] is None or found[1] is None:
        return "names an event that was not sent"
    a, b = found
    if (a["type"], b["type"]) != (FIRST, SECOND):
        return f"types {a['type']} then {b['type']}"
    if not a["subject"] == b["subject"] == output.get("subject"):
        return f"customers {a['subject']}, {b['subject']} in an output for {output.get('subject')}"
    delta = b["time"] - a["time"]
    if delta < 0:
        return f"{SECOND} {-delta} ms before {FIRST}"
    if delta >= within_ms:
        return f"{SECOND} {delta} ms after {FIRST} (within {within_ms} ms)"
    return None


def invalid(
    outputs: Iterable[Mapping[str, Any]], events_by_id: Mapping[str, Mapping[str, Any]], within_ms: int = WITHIN_MS
) -> list[Mapping[str, Any]]:
    """The outputs that violate the sequence's definition (see :func:`violation`)."""
    return [o for o in outputs if violation(o, events_by_id, within_ms) is not None]


def _ids(output: Mapping[str, Any]) -> list[str]:
    return [ref["id"] for ref in output.get("data", {}).get("events") or []]


def match_of(output: Mapping[str, Any]) -> Match:
    a, b = (ref["id"] for ref in output["data"]["events"][:2])
    return output["subject"], a, b


def score(
    outputs: list[Mapping[str, Any]],
    events: list[Mapping[str, Any]],
    within_ms: int = WITHIN_MS,
    *,
    expected: set[Match] | None = None,
) -> dict[str, Any]:
    """Outputs of the sequence rule against the ordered-stream oracle over ``events``:
    ``expected`` matches, ``outputs`` received, ``got`` (distinct output ids), ``invalid``
    (distinct outputs violating the definition), ``duplicates`` (outputs received again under an
    id already seen), ``missing`` (expected matches not received) and ``unexpected`` (valid
    matches the ordered stream does not have), with a few examples of each problem.
    ``expected``: :func:`expected_matches` of ``events`` if already known."""
    if expected is None:
        expected = expected_matches(events, within_ms)
    by_id = {e["id"]: e for e in events}
    unique = {o["id"]: o for o in outputs}
    ids = Counter(o["id"] for o in outputs)
    bad = [(o, violation(o, by_id, within_ms)) for o in unique.values()]
    bad = [(o, why) for o, why in bad if why is not None]
    bad_ids = {o["id"] for o, _ in bad}
    got = {match_of(o) for o in unique.values() if o["id"] not in bad_ids}
    missing, unexpected = expected - got, got - expected
    return {
        "expected": len(expected),
        "outputs": len(outputs),
        "got": len(unique),
        "invalid": len(bad),
        "duplicates": sum(n - 1 for n in ids.values()),
        "missing": len(missing),
        "unexpected": len(unexpected),
        "examples": {
            "invalid": [{"output": o["id"], "events": _ids(o), "why": why} for o, why in bad[:3]],
            "missing": sorted(missing)[:3],
            "unexpected": sorted(unexpected)[:3],
        },
    }
