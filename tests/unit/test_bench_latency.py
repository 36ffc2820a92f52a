"""The pure parts of ``esp bench``'s latency run: quantiles, event ids stamped with the send
time, the scoring of what the subscriber received (exactly once, or counted), and the load
generator against a local stand-in server."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
import pytest

from runtime.dev.bench_latency import body, event_id, parse_id, percentile, score, summary_ms


def test_nearest_rank_percentiles():
    values = list(range(1, 1001))  # 1..1000
    assert percentile(values, 0.5) == 500
    assert percentile(values, 0.99) == 990
    assert percentile(values, 0.999) == 999
    assert percentile(values, 1.0) == 1000
    assert percentile([7], 0.999) == 7
    assert percentile([], 0.5) is None
    assert percentile([1, 2], 0.0) == 1  # at least the first value


def test_summary_is_in_milliseconds():
    out = summary_ms([0.001 * i for i in range(1, 101)])
    assert (out["p50"], out["p99"], out["p999"], out["max"]) == (50.0, 99.0, 100.0, 100.0)
    assert summary_ms([]) == {"p50": None, "p99": None, "p999": None, "max": None}


def test_ids_carry_request_index_and_send_time():
    assert parse_id(event_id(500, 12, 499, 1234.5678901)) == (12, 499, 1234.56789)
    assert parse_id("b000001") is None
    assert parse_id("l5-x-1-2") is None


def test_a_body_is_one_event_per_line_with_stamped_ids():
    lines = [orjson.loads(line) for line in body(3, 7, 10.0).split(b"\n")]
    assert [parse_id(e["id"]) for e in lines] == [(7, 0, 10.0), (7, 1, 10.0), (7, 2, 10.0)]
    assert len({e["id"] for e in lines}) == 3


def test_score_counts_missing_doubled_and_foreign_outputs():
    sent = {0: (1.000, 1.010), 1: (1.050, 1.070)}  # request -> (posted, acked)
    arrivals = [  # (id, arrival, published to the stream)
        (event_id(2, 0, 0, 1.0), 1.020, 1.005),  # published before its 202 came back
        (event_id(2, 0, 1, 1.0), 1.030, 1.012),
        (event_id(2, 1, 0, 1.05), 1.080, 1.074),
        (event_id(2, 1, 0, 1.05), 1.090, 1.074),  # doubled
        ("someone-else", 1.1, 1.0),  # never sent
        (event_id(2, 9, 0, 1.0), 1.1, 1.0),  # a request that was never acked
    ]  # request 1's event 1 never arrives
    result = score(sent, 2, arrivals)
    assert (result["expected_outputs"], result["outputs"], result["missing"], result["unexpected"]) == (4, 3, 1, 3)
    assert result["send_to_ack_ms"]["max"] == 20.0
    assert result["ack_to_subscriber_ms"]["p50"] == 10.0  # 10, 20, 10 ms
    assert result["ack_to_subscriber_ms"]["max"] == 20.0
    assert result["send_to_subscriber_ms"]["max"] == 30.0
    # the same latencies cut at the publication: -5, 2, 4 ms, then 15, 18, 6 ms
    assert (result["ack_to_publish_ms"]["p50"], result["ack_to_publish_ms"]["max"]) == (2.0, 4.0)
    assert (result["publish_to_subscriber_ms"]["p50"], result["publish_to_subscriber_ms"]["max"]) == (15.0, 18.0)


@contextmanager
def answering(answer: Callable[[bytes, Any], tuple[int, dict[str, str], bytes]]) -> Iterator[str]:
    """A local HTTP/1.1 server whose POSTs are answered by ``answer(body, headers)`` ->
    (status, extra headers, body); yields its URL. A stand-in for the platform, for the load
    generator's own behaviour."""

    class Answering(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            status, headers, body = answer(self.rfile.read(int(self.headers["Content-Length"])), self.headers)
            self.send_response(status)
            for name, value in {**headers, "Content-Length": str(len(body))}.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Answering)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_the_load_is_open_loop_a_slow_answer_does_not_delay_the_next_request():
    """Answers take 150 ms and requests are due every 20 ms: a sender that waited for each
    answer would post the 16th request ~2 s late; an open-loop one posts every request on time
    while fewer than its connections wait, and counts as late only what none could take."""
    from runtime.dev.bench_latency import open_loop

    def slow(body: bytes, headers: Any) -> tuple[int, dict[str, str], bytes]:
        time.sleep(0.15)
        answer = {"accepted": len(body.split(b"\n")), "duplicates": 0, "rejected": []}
        return 202, {"Content-Type": "application/json"}, orjson.dumps(answer)

    with answering(slow) as url:
        sent, behind, _ = open_loop(url, "k", size=2, rate=100, duration_s=0.32, senders=1, connections=16)
        assert sorted(sent) == list(range(16))
        assert max(behind) < 0.1  # 16 connections cover 150 ms of answers at one request per 20 ms
        sent, behind, _ = open_loop(url, "k", size=2, rate=100, duration_s=0.32, senders=1, connections=2)
        assert max(behind) > 0.5  # two connections cannot: the last requests wait for answers


def test_the_poster_sends_as_a_source_and_retries_while_asked_to_back_off():
    from runtime.dev.bench_latency import Poster

    seen: list[tuple[str | None, str | None, bytes]] = []
    statuses = [429, 503, 202, 400]

    def flaky(body: bytes, headers: Any) -> tuple[int, dict[str, str], bytes]:
        seen.append((headers["Authorization"], headers["Content-Type"], body))
        status = statuses.pop(0)
        answer = orjson.dumps({"accepted": 1} if status == 202 else {"error": "no"})
        return status, {"Retry-After": "0"} if status in (429, 503) else {}, answer

    with answering(flaky) as url:
        poster = Poster(url, "the-key")
        try:
            assert poster.post(b'{"id": "a"}\n') == {"accepted": 1}  # after a 429 and a 503
            assert seen == [("Bearer the-key", "application/x-ndjson", b'{"id": "a"}\n')] * 3
            with pytest.raises(RuntimeError, match="400"):
                poster.post(b"{}")
        finally:
            poster.close()
