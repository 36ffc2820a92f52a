"""Issue 14: "``ab.a`` then ``ab.b`` within 60 s" over HTTP with 4 concurrent senders sharing one
queue of NDJSON batches (so a customer's events arrive a few requests out of order, as behind a
load balancer), on the platform with its default settings (no out-of-order bound raised).

Every output is checked against the sequence's definition and against the ordered-stream oracle
(runtime/dev/sequence_oracle.py): within the reorder wait the outputs are exactly those of the
event-time-ordered stream; a batch held back longer than the reorder wait may change which
matches are found, but no output may violate the definition and none may come twice.
"""

from __future__ import annotations

import time

from runtime.dev.bench import send_from_queue
from runtime.dev.sequence_oracle import WITHIN_MS, expected_matches, score, sequence_rule
from runtime.dev.synthetic import SEQUENCE_STEP_MS, START_MS, ab_sequence_events, ndjson_batches
from tests.e2e.conftest import SOURCE_KEY
from tests.e2e.helpers import read_exactly

EVENTS, CUSTOMERS, BATCH, SENDERS = 40_000, 400, 1_000, 4
RULE = sequence_rule(name="e2e-ab-sequence", topic="business.e2e_ab_sequence")
DEFAULT_REORDER_WAIT_MS = 2_000  # ESP_REORDER_WAIT_MS's default, if the settings do not say


def reorder_wait_s(platform) -> float:
    return getattr(platform.settings, "reorder_wait_ms", DEFAULT_REORDER_WAIT_MS) / 1000


def run(platform, client, name: str, start_ms: int, *, exact: bool, hold_s: float | None = None) -> dict:
    """Send the workload (ids and customers prefixed with ``name``) with 4 senders, read every
    output of the rule for those customers, and score them against the oracle."""
    client.put_config(RULE)
    client.put_config({"kind": "subscription", "name": name, "topics": [RULE["then"][0]["emit"]]})
    stream = list(ab_sequence_events(customers=CUSTOMERS, events=EVENTS, seed=14, prefix=f"{name}-", start_ms=start_ms))
    expected = expected_matches(stream, WITHIN_MS)
    hold = (2, hold_s) if hold_s is not None else None  # the third batch, taken early, posted late
    sent = send_from_queue(
        platform.base_url, SOURCE_KEY, list(ndjson_batches(stream, BATCH)), senders=SENDERS, hold=hold
    )
    assert (sent["accepted"], sent["rejected"]) == (EVENTS, 0), sent
    if hold is not None:
        order = sent["order"]
        assert order.index(hold[0]) > order.index(hold[0] + 1), order  # it arrived after newer events
    outputs = read_exactly(platform, client, name, len(expected) if exact else 0, timeout_s=25)
    # events still waiting in a reorder buffer may publish after the logs were read to the end
    outputs += client.drain(name, idle_s=reorder_wait_s(platform) + 1.0, timeout_s=30)
    result = score([o for o in outputs if o["subject"].startswith(f"{name}-")], stream, WITHIN_MS, expected=expected)
    result["requests_acked_out_of_order"] = sent["acked_out_of_order"]
    print(f"\n{name}: {result}")  # the numbers of the run, with -s
    return result


def test_concurrent_senders_get_exactly_the_ordered_streams_matches(platform, client):
    result = run(platform, client, "seq-concurrent", START_MS, exact=True)
    assert result["invalid"] == 0, result
    assert result["duplicates"] == 0, result
    assert (result["got"], result["missing"], result["unexpected"]) == (result["expected"], 0, 0), result
    # each partition reports how far behind its entries arrived (what the reorder wait is sized from)
    deadline = time.monotonic() + 10
    while True:
        partitions = client.request("GET", "/v1/status")["partitions"]
        values = list(partitions.values())
        if values and all(p["held"] == 0 for p in values) and any(p["delay_max_ms"] > 0 for p in values):
            break
        assert time.monotonic() < deadline, partitions
        time.sleep(0.5)
    assert len(partitions) == platform.settings.partitions


def test_a_batch_later_than_the_reorder_wait_never_makes_an_invalid_or_duplicate_output(platform, client):
    start_ms = START_MS + EVENTS * SEQUENCE_STEP_MS + 3_600_000  # after the other test's events
    result = run(platform, client, "seq-late", start_ms, exact=False, hold_s=reorder_wait_s(platform) + 1.0)
    assert result["invalid"] == 0, result
    assert result["duplicates"] == 0, result
