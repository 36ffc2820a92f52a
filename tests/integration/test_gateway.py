"""runtime.dev.gateway: the local message gateway over real HTTP on a free port, recording to a
file."""

from __future__ import annotations

import http.client
import json
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from runtime.dev.gateway import LocalGateway, read_messages
from runtime.dev.redis_server import free_port


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[LocalGateway]:
    with LocalGateway(tmp_path / "messages.jsonl", port=free_port()) as running:
        yield running


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_a_json_post_is_recorded_with_its_webhook_headers(gateway):
    headers = {"webhook-id": "msg_1", "webhook-timestamp": "1790000000", "webhook-signature": "v1,abc", "x-other": "1"}
    payload = {"to": "+8613800000000", "text": '他说:"你好"\nbye'}
    answer = httpx.post(f"{gateway.url}/send/sms", json=payload, headers=headers)
    assert (answer.status_code, answer.json()) == (200, {"accepted": True, "id": 1})
    [record] = lines(gateway.path)
    assert record["received_at"].endswith("Z")
    assert {key: value for key, value in record.items() if key != "received_at"} == {
        "id": 1,
        "channel": "sms",
        "headers": {
            "content-type": "application/json",
            "webhook-id": "msg_1",
            "webhook-timestamp": "1790000000",
            "webhook-signature": "v1,abc",
        },
        "body": payload,
    }
    assert "你好" in gateway.path.read_text(encoding="utf-8")  # readable, not \u-escaped


def test_a_body_that_is_not_json_is_recorded_as_text(gateway):
    answer = httpx.post(
        f"{gateway.url}/send/email", content=b'{"broken": ', headers={"content-type": "application/json"}
    )
    assert answer.json() == {"accepted": True, "id": 1}
    httpx.post(f"{gateway.url}/send/email", content="plain text body")
    assert [r["body"] for r in read_messages(gateway.path)] == ['{"broken": ', "plain text body"]


def test_get_messages_returns_the_newest_of_a_channel_oldest_first(gateway):
    for i in range(5):
        httpx.post(f"{gateway.url}/send/sms", json={"n": i})
        httpx.post(f"{gateway.url}/send/app_push", json={"n": i})
    answer = httpx.get(f"{gateway.url}/messages", params={"channel": "sms", "limit": 3})
    assert answer.status_code == 200
    assert [(m["channel"], m["body"]["n"]) for m in answer.json()["messages"]] == [("sms", 2), ("sms", 3), ("sms", 4)]
    everything = httpx.get(f"{gateway.url}/messages").json()["messages"]
    assert [m["id"] for m in everything] == list(range(1, 11))
    assert read_messages(gateway.path, channel="app_push", limit=2) == everything[-3::2]


def test_health_and_errors(gateway):
    assert httpx.get(f"{gateway.url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{gateway.url}/messages", params={"limit": "0"}).json()["reason"] == "invalid_input"
    assert httpx.get(f"{gateway.url}/messages", params={"limit": "x"}).status_code == 400
    assert httpx.post(f"{gateway.url}/send/", json={}).status_code == 404
    assert httpx.post(f"{gateway.url}/send/sms/extra", json={}).status_code == 404
    assert httpx.get(f"{gateway.url}/nowhere").json()["reason"] == "not_found"
    assert httpx.post(f"{gateway.url}/send/sms", content=b"x" * (8 << 20)).status_code == 413
    assert not gateway.path.exists()  # nothing was recorded


def test_concurrent_posts_are_each_recorded_exactly_once(gateway):
    threads, per_thread = 8, 25

    def send(worker: int) -> None:
        with httpx.Client(base_url=gateway.url) as client:
            for i in range(per_thread):
                assert client.post("/send/webhook", json={"worker": worker, "i": i}).status_code == 200

    workers = [threading.Thread(target=send, args=(w,)) for w in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    records = lines(gateway.path)
    assert sorted((r["body"]["worker"], r["body"]["i"]) for r in records) == [
        (w, i) for w in range(threads) for i in range(per_thread)
    ]
    assert [r["id"] for r in records] == list(range(1, threads * per_thread + 1))  # in file order


def test_a_burst_of_new_connections_is_answered_without_resets(gateway):
    """64 senders at once, each request on a new connection: every one is answered and recorded
    (the threaded http.server this replaced had a listen backlog of 5 and reset some)."""
    senders, per_sender = 64, 5
    start = threading.Barrier(senders)

    def post_once(worker: int) -> int:
        connection = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=30)
        try:
            connection.request("POST", "/send/sms", json.dumps({"w": worker}), {"content-type": "application/json"})
            return connection.getresponse().status
        finally:
            connection.close()

    def send(worker: int) -> list[int]:
        start.wait()
        return [post_once(worker) for _ in range(per_sender)]

    with ThreadPoolExecutor(senders) as pool:
        statuses = [status for answers in pool.map(send, range(senders)) for status in answers]
    assert statuses == [200] * senders * per_sender
    assert len(lines(gateway.path)) == senders * per_sender


def test_ids_continue_after_a_restart_and_stop_releases_the_port(tmp_path):
    path, port = tmp_path / "messages.jsonl", free_port()
    with LocalGateway(path, port=port) as first:
        assert first.url == f"http://127.0.0.1:{port}"
        httpx.post(f"{first.url}/send/sms", json={})
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/healthz")
    with LocalGateway(path, port=port) as second:  # the same port binds again
        assert httpx.post(f"{second.url}/send/sms", json={}).json()["id"] == 2


def test_port_zero_picks_a_free_port(tmp_path):
    gateway = LocalGateway(tmp_path / "m.jsonl").start()
    try:
        assert gateway.port > 0
        assert httpx.get(f"{gateway.url}/healthz").status_code == 200
    finally:
        gateway.stop()
    gateway.stop()  # twice is harmless


def test_runs_as_its_own_process_and_stops_on_sigterm(tmp_path):
    path = tmp_path / "messages.jsonl"
    process = subprocess.Popen(
        [sys.executable, "-m", "runtime.dev.gateway", "--path", str(path), "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        first_line = process.stdout.readline()
        url = first_line.split(" on ")[1].split(",")[0]
        assert httpx.post(f"{url}/send/mms", json={"x": 1}).json() == {"accepted": True, "id": 1}
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        assert read_messages(path) == lines(path) and lines(path)[0]["body"] == {"x": 1}
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()


def test_read_messages_skips_partial_lines_and_reads_a_missing_file_as_empty(tmp_path):
    path = tmp_path / "m.jsonl"
    assert read_messages(path) == []
    path.write_text('{"id": 1, "channel": "sms"}\n{"id": 2, "chan')
    assert read_messages(path) == [{"id": 1, "channel": "sms"}]
    assert read_messages(path, limit=0) == []
