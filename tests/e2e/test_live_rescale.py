"""Issue 15: the partition actors are rescaled while "``ab.a`` then ``ab.b`` within 60 s" streams
in over HTTP from 4 senders: 2 -> 4 actors, then 4 -> 2. Partitions move by checkpoint
hand-over under fenced ownership epochs; the outputs are exactly the ordered stream's (the
oracle in runtime/dev/sequence_oracle.py), none twice, and each move's pause is reported.
The figures go to .esp/test-reports/rescale.json."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import ray

from actors.factory import actor_name
from actors.platform import NAMESPACE
from runtime.dev.bench import send_from_queue
from runtime.dev.sequence_oracle import WITHIN_MS, expected_matches, score, sequence_rule
from runtime.dev.synthetic import START_MS, ab_sequence_events, ndjson_batches
from tests.e2e.conftest import SOURCE_KEY
from tests.e2e.helpers import event, read_exactly

EVENTS, CUSTOMERS, BATCH, SENDERS = 40_000, 400, 500, 4
RULE = sequence_rule(name="rescale-ab", topic="business.rescale_ab")
REPORT = Path(".esp/test-reports/rescale.json")
PLATFORM_SETTINGS = {"actor_num_cpus": 0.1}  # 4 partition actors fit next to the rest on the session's 2 CPUs


def test_rescaling_while_the_stream_goes_on_loses_and_doubles_nothing(platform, client):
    client.put_config(RULE)
    client.put_config({"kind": "subscription", "name": "rescale", "topics": [RULE["then"][0]["emit"]]})
    stream = list(ab_sequence_events(customers=CUSTOMERS, events=EVENTS, seed=15, prefix="rs-", start_ms=START_MS))
    expected = expected_matches(stream, WITHIN_MS)
    bodies = list(ndjson_batches(stream, BATCH))
    coordinator = platform.coordinator()
    rescales: list[dict[str, Any]] = []
    errors: list[BaseException] = []

    def rescale_twice() -> None:
        try:
            for count in (4, 2):
                result = coordinator.rescale(count)
                rescales.append({"to": count, "seconds": result.seconds, "moves": [vars(m) for m in result.moves]})
        except BaseException as exc:  # reported by the test, not lost in the thread
            errors.append(exc)

    totals = {"accepted": 0, "rejected": 0}
    scaler = threading.Thread(target=rescale_twice)
    chunk, during = len(bodies) // 8, 0
    for n, start in enumerate(range(0, len(bodies), chunk)):
        if n == 1:
            scaler.start()  # the moves happen while the later chunks stream in
        moving = scaler.is_alive()
        sent = send_from_queue(platform.base_url, SOURCE_KEY, bodies[start : start + chunk], senders=SENDERS)
        totals = {k: totals[k] + sent[k] for k in totals}
        during += moving
        if moving:
            scaler.join(timeout=0.5)  # pace the stream so that it spans the rescales
    scaler.join(timeout=120)
    assert not errors, errors
    assert during >= 2, "the rescales did not overlap the stream"
    assert totals == {"accepted": EVENTS, "rejected": 0}, totals
    assert [r["to"] for r in rescales] == [4, 2], rescales

    outputs = read_exactly(platform, client, "rescale", len(expected), timeout_s=60)
    outputs += client.drain("rescale", idle_s=3.0, timeout_s=30)
    result = score(outputs, stream, WITHIN_MS, expected=expected)
    pauses = [m["pause_ms"] for r in rescales for m in r["moves"]]
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    figures = {"events_acked": totals["accepted"], "chunks_sent_while_moving": during, **result, "rescales": rescales}
    REPORT.write_text(json.dumps(figures, indent=2))
    assert result["invalid"] == 0 and result["duplicates"] == 0, result
    assert (result["got"], result["missing"], result["unexpected"]) == (result["expected"], 0, 0), result
    assert pauses and all(p > 0 for p in pauses)

    statuses = [ray.get(ray.get_actor(actor_name("partition", i), namespace=NAMESPACE).status.remote()) for i in (0, 1)]
    assert sorted(p for s in statuses for p in s["partitions"]) == list(range(platform.settings.partitions))
    assert all(s["errors"] == 0 for s in statuses), statuses


def test_scaling_the_api_while_events_stream_in_loses_nothing(platform, client):
    """``esp scale --api 2``: the API is deployed again with two replicas while a sender posts;
    every event is acknowledged exactly once (the client retries what a replica being replaced
    refused) and both replicas end up serving."""
    from ray import serve

    events = [event(i, "api.tick", prefix="api-") for i in range(6_000)]
    totals: dict[str, int] = {}

    def post_all() -> None:
        sent = send_from_queue(platform.base_url, SOURCE_KEY, list(ndjson_batches(events, 100)), senders=1)
        totals.update(sent)

    sender = threading.Thread(target=post_all)
    sender.start()
    platform.scale_api(2)
    sender.join(timeout=120)
    assert (totals["accepted"], totals["duplicates"], totals["rejected"]) == (len(events), 0, 0), totals
    deployments = serve.status().applications["esp"].deployments
    assert [d.replica_states.get("RUNNING") for d in deployments.values()] == [2]
