"""``esp bench`` latency (issue 16, item 3): a steady open-loop load of ``rate`` events/s for
``duration_s`` seconds, in requests of ``size`` events posted by ``senders`` concurrent senders,
every event on an atomic subscription read over server-sent events by another process.

Request ``k`` is due at ``start + k * size / rate`` whatever happened to the requests before it
(open loop); sender ``k % senders`` posts it, over one of its connections that is not waiting
for an answer (see :func:`open_loop`). Each event's id carries its request number and the
time the request was posted, so the subscriber's arrival time gives per event:

- ``send_to_ack_ms``: from posting its request to the 202 (durable in the log);
- ``ack_to_subscriber_ms``: from that 202 to the event arriving on the SSE stream (negative when
  the event reached the subscriber before its request's answer reached the sender);
- ``send_to_subscriber_ms``: both together;
- ``ack_to_publish_ms`` and ``publish_to_subscriber_ms``: ``ack_to_subscriber_ms`` cut where the
  partition actor published the event to the subscription's stream (the stream entry id's
  milliseconds, Redis's wall clock on the same machine, set against the subscriber's), so a
  slow row says whether the time went to the actors or to the stream's way out through Serve.
  To the millisecond; the first is negative when the actor published before the 202 came back.

Every event must arrive exactly once: ``missing`` and ``unexpected`` (duplicates or ids never
sent) count the exceptions. ``behind_schedule_ms``: how late requests were posted against their
due time (the senders could not keep up when this grows). ``aof_rewrites``: how many rewrites of its
AOF the embedded Redis started while the load ran (the runs write about 0.8 KB of AOF per event,
and a rewrite takes a core for a second or two; its keeper rewrites at the lull after a run).
All times are ``time.monotonic()``, one clock for every process of the machine.

Alone: ``python -m runtime.dev.bench_latency [--quick] [--duration 60] [--sizes 500,100]``.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from runtime.dev.bench import in_threads

LATENCY_SOURCE_KEY = "bench-latency-key-0123456789"
LATENCY_TYPE = "lat.ping"
SUBSCRIPTION = "bench-latency"
QUANTILES = {"p50": 0.5, "p99": 0.99, "p999": 0.999}


def percentile(ordered: Sequence[float], q: float) -> float | None:
    """The nearest-rank ``q`` quantile of ``ordered`` (sorted ascending): the smallest value
    with at least ``q`` of the values at or below it. None for no values."""
    if not ordered:
        return None
    rank = max(int(-(-q * len(ordered) // 1)), 1)  # ceil(q * n), at least the first
    return ordered[min(rank, len(ordered)) - 1]


def summary_ms(seconds: Sequence[float]) -> dict[str, float | None]:
    """p50/p99/p999 and max of durations given in seconds, in milliseconds."""
    ordered = sorted(seconds)
    out = {name: _ms(percentile(ordered, q)) for name, q in QUANTILES.items()}
    out["max"] = _ms(ordered[-1]) if ordered else None
    return out


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 2)


def event_id(size: int, request: int, index: int, sent: float) -> str:
    """``l<size>-<request>-<index>-<send time in µs>``."""
    return f"l{size}-{request}-{index}-{round(sent * 1_000_000)}"


def parse_id(value: str) -> tuple[int, int, float] | None:
    """(request, index, send time in s) of an id made by :func:`event_id`, else None."""
    parts = value.split("-")
    if len(parts) != 4 or not parts[0].startswith("l"):
        return None
    try:
        return int(parts[1]), int(parts[2]), int(parts[3]) / 1_000_000
    except ValueError:
        return None


def body(size: int, request: int, sent: float, customers: int = 1000) -> bytes:
    """One NDJSON request of ``size`` events stamped with ``sent``."""
    now_ms = int(time.time() * 1000)
    return b"\n".join(
        orjson.dumps(
            {
                "id": event_id(size, request, i, sent),
                "type": LATENCY_TYPE,
                "time": now_ms,
                "subject": f"c{(request * size + i) % customers}",
                "data": {"n": i},
            }
        )
        for i in range(size)
    )


def score(sent: dict[int, tuple[float, float]], size: int, arrivals: list[tuple[str, float, float]]) -> dict[str, Any]:
    """Per-event latencies from ``sent`` (request -> (posted, acked)) and the subscriber's
    ``arrivals`` ((event id, arrival time, time it was published to the stream)), and the
    exactness of the outputs."""
    send_ack: list[float] = []
    ack_sub: list[float] = []
    send_sub: list[float] = []
    ack_pub: list[float] = []
    pub_sub: list[float] = []
    seen: set[tuple[int, int]] = set()
    unexpected = 0
    for eid, at, published in arrivals:
        parsed = parse_id(eid)
        if parsed is None or parsed[0] not in sent or not 0 <= parsed[1] < size or parsed[:2] in seen:
            unexpected += 1
            continue
        seen.add(parsed[:2])
        posted, acked = sent[parsed[0]]
        send_ack.append(acked - posted)
        ack_sub.append(at - acked)
        send_sub.append(at - posted)
        ack_pub.append(published - acked)
        pub_sub.append(at - published)
    expected = len(sent) * size
    return {
        "expected_outputs": expected,
        "outputs": len(seen),
        "missing": expected - len(seen),
        "unexpected": unexpected,
        "send_to_ack_ms": summary_ms(send_ack),
        "ack_to_subscriber_ms": summary_ms(ack_sub),
        "send_to_subscriber_ms": summary_ms(send_sub),
        "ack_to_publish_ms": summary_ms(ack_pub),
        "publish_to_subscriber_ms": summary_ms(pub_sub),
    }


CONNECTIONS = 4  # per sender: answers it may wait for at once before a request is posted late


class Poster:
    """One keep-alive connection that posts NDJSON bodies as a source, retrying while the
    platform asks to back off (as ``EspClient.post_body`` does). Plain ``http.client``: the
    load generator shares the machine's cores with the platform it measures, and httpx spent
    about a millisecond of CPU per request; this takes a third of that."""

    def __init__(self, base_url: str, key: str, *, max_retries: int = 60) -> None:
        import http.client
        from urllib.parse import urlsplit

        from runtime.dev.client import RETRY_STATUSES

        url = urlsplit(base_url)
        self._connection = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=60)
        self._headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/x-ndjson"}
        self._max_retries, self._retry_statuses = max_retries, RETRY_STATUSES

    def post(self, body: bytes) -> dict[str, Any]:
        for _ in range(self._max_retries + 1):
            try:
                self._connection.request("POST", "/v1/events", body, self._headers)
                response = self._connection.getresponse()
                answer = response.read()
            except OSError:  # connection refused or reset (http.client's errors are OSErrors too)
                self._connection.close()  # the next request connects again
                time.sleep(1.0)
                continue
            if response.status not in self._retry_statuses:
                if response.status >= 300:
                    raise RuntimeError(f"POST /v1/events: {response.status} {answer[:200]!r}")
                return orjson.loads(answer)  # type: ignore[no-any-return]
            time.sleep(min(float(response.getheader("Retry-After") or 1), 5.0))
        raise RuntimeError(f"POST /v1/events: gave up after {self._max_retries} retries")

    def close(self) -> None:
        self._connection.close()


def open_loop(
    base_url: str,
    key: str,
    *,
    size: int,
    rate: float,
    duration_s: float,
    senders: int,
    connections: int = CONNECTIONS,
) -> tuple[dict[int, tuple[float, float]], list[float], float]:
    """Post ``duration_s * rate / size`` requests on the open-loop schedule. Each sender posts
    its requests at their due times over up to ``connections`` connections, so a slow answer
    does not hold the next request back (a sender that waited for each answer would offer less
    load exactly when the platform is slow, and hide that in its latencies); a request is late
    only when all of its sender's connections are waiting. Returns request -> (posted, acked),
    how late each request was posted against its due time, and the seconds from the first due
    time to the last acknowledgement."""
    import queue
    from concurrent.futures import ThreadPoolExecutor

    requests = max(int(duration_s * rate / size), 1)
    interval = size / rate
    sent: dict[int, tuple[float, float]] = {}
    behind: list[float] = []
    lock = threading.Lock()
    start = time.monotonic() + 0.5

    def post(k: int, due: float, idle: queue.Queue[Poster], failed: threading.Event) -> None:
        client = idle.get_nowait()  # as many clients as posts at once: one is always idle
        try:
            posted = time.monotonic()
            answer = client.post(body(size, k, posted))
            if answer["accepted"] != size:
                raise RuntimeError(f"request {k}: {answer}")
        except BaseException:
            failed.set()
            raise
        finally:
            idle.put(client)
        acked = time.monotonic()
        with lock:
            sent[k] = (posted, acked)
            behind.append(posted - due)

    def sender(n: int, failed: threading.Event) -> None:
        clients = [Poster(base_url, key) for _ in range(connections)]  # before the first due time
        idle: queue.Queue[Poster] = queue.Queue()
        for client in clients:
            idle.put(client)
        try:
            with ThreadPoolExecutor(connections, thread_name_prefix=f"esp-latency-{n}") as pool:
                posts = []
                for k in range(n, requests, senders):
                    due = start + k * interval
                    wait = due - time.monotonic()
                    if wait > 0:
                        time.sleep(wait)
                    if failed.is_set():
                        break
                    posts.append(pool.submit(post, k, due, idle, failed))
                for p in posts:
                    p.result()  # the first failure is raised (and stops the other senders)
        finally:
            for client in clients:
                client.close()

    in_threads(sender, senders, "esp-latency")
    return sent, behind, max(acked for _, acked in sent.values()) - start


def subscriber_command(
    base_url: str, token: str, out: Path, expected: int, idle_s: float, timeout_s: float
) -> list[str]:
    return [
        sys.executable, "-m", "runtime.dev.bench_latency", "--subscribe", base_url,
        "--token", token, "--out", str(out), "--expected", str(expected),
        "--idle", str(idle_s), "--timeout", str(timeout_s),
    ]  # fmt: skip


def subscribe(base_url: str, token: str, out: Path, expected: int, idle_s: float, timeout_s: float) -> None:
    """Read the subscription's SSE stream, noting each event's id, arrival time and publication
    time; stop ``idle_s`` after ``expected`` events arrived (to see duplicates) or at
    ``timeout_s``; write ``[[id, time, published], ...]`` to ``out``. Writes ``out.ready`` once
    the stream is open."""
    import httpx

    arrivals: list[tuple[str, float, float]] = []
    wall = time.time() - time.monotonic()  # a stream entry id's milliseconds are wall-clock time
    deadline = time.monotonic() + timeout_s
    timeout = httpx.Timeout(10.0, read=1.0)
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout) as http:
        last_id: str | None = None
        published = 0.0  # the time of the frame's stream entry (its id comes before its data)
        ready = out.with_suffix(".ready")
        while time.monotonic() < deadline:
            headers = {"Last-Event-ID": last_id} if last_id else {}
            try:
                with http.stream("GET", f"/v1/subscriptions/{SUBSCRIPTION}/stream", headers=headers) as response:
                    response.raise_for_status()
                    ready.touch()
                    last_seen = time.monotonic()
                    buffer = b""
                    for chunk in response.iter_raw():
                        at = time.monotonic()
                        buffer += chunk
                        *frames, buffer = buffer.split(b"\n\n")
                        for frame in frames:
                            for line in frame.split(b"\n"):
                                if line.startswith(b"id: "):
                                    last_id = line[4:].decode()
                                    published = int(last_id.partition("-")[0]) / 1000 - wall
                                elif line.startswith(b"data: "):
                                    arrivals.append((orjson.loads(line[6:])["id"], at, published))
                                    last_seen = at
                        if (len(arrivals) >= expected and at - last_seen >= idle_s) or at > deadline:
                            break
            except httpx.ReadTimeout:
                pass  # no byte for a second: check whether we are done, then go on where we were
            now = time.monotonic()
            if len(arrivals) >= expected and now - (arrivals[-1][1] if arrivals else 0) >= idle_s:
                break
    out.write_bytes(orjson.dumps(arrivals))


def bench_latency_run(
    platform: Any, *, size: int, rate: float, duration_s: float, senders: int, work_dir: Path
) -> dict[str, Any]:
    """One open-loop run on a running platform (source and subscription configured)."""
    import os

    requests = max(int(duration_s * rate / size), 1)
    out = work_dir / f"arrivals-{size}.json"
    out.unlink(missing_ok=True)
    out.with_suffix(".ready").unlink(missing_ok=True)
    idle_s = 3.0
    # the reader ends 3 s after the last expected event; the timeout only bounds a run that
    # loses events, and must outlast senders that fall far behind their schedule
    timeout_s = max(10 * duration_s, 600.0)
    command = subscriber_command(platform.base_url, os.environ["ESP_TOKEN"], out, requests * size, idle_s, timeout_s)
    reader = subprocess.Popen(command, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not out.with_suffix(".ready").exists():
            if reader.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the SSE subscriber did not start")
            time.sleep(0.05)
        rewrites = aof_rewrites(platform)
        sent, behind, seconds = open_loop(
            platform.base_url, LATENCY_SOURCE_KEY, size=size, rate=rate, duration_s=duration_s, senders=senders
        )
        if rewrites is not None:  # while the load ran: one after it (at the lull) delays no event
            rewrites = aof_rewrites(platform) - rewrites
        reader.wait(timeout=timeout_s + 60)
    finally:
        if reader.poll() is None:
            reader.kill()
    arrivals = [(eid, at, published) for eid, at, published in orjson.loads(out.read_bytes())]
    return {
        "request_events": size,
        "senders": senders,
        "target_events_per_s": rate,
        "duration_s": duration_s,
        "requests": len(sent),
        "acked_events_per_s": round(len(sent) * size / seconds),
        "behind_schedule_ms": summary_ms(behind),
        "aof_rewrites": rewrites,
        **score(sent, size, arrivals),
    }


def aof_rewrites(platform: Any) -> int | None:
    """How many times the platform's embedded Redis has rewritten its AOF (None on a Redis
    Cluster). Each rewrite forks Redis and serializes its data on the platform's own cores."""
    if platform.redis_server is None:
        return None
    from runtime.redis_client import connect

    with connect(platform.redis_server.url) as client:
        return int(client.info("persistence")["aof_rewrites"])


def bench_latency(
    state_dir: Path,
    *,
    duration_s: float = 60.0,
    rate: float = 10_000,
    sizes: Sequence[int] = (500, 100),
    senders: int = 4,
) -> dict[str, Any]:
    """One private local ESP, one open-loop run per request size: ``requests_<size>`` each."""
    from runtime.dev.bench import _local_platform
    from runtime.dev.client import EspClient

    results: dict[str, Any] = {}
    with _local_platform(state_dir) as platform, EspClient(platform.base_url) as admin:
        admin.put_config({"kind": "source", "name": "bench-latency", "api_key": LATENCY_SOURCE_KEY})
        admin.put_config(
            {"kind": "subscription", "name": SUBSCRIPTION, "topics": [f"atomic.{LATENCY_TYPE}"], "mode": "sse"}
        )
        time.sleep(1.0)  # the actors pick the subscription up with the configuration
        for size in sizes:
            results[f"requests_{size}"] = bench_latency_run(
                platform, size=size, rate=rate, duration_s=duration_s, senders=senders, work_dir=state_dir
            )
    return results


def main(argv: Sequence[str] | None = None) -> None:
    import argparse
    import json

    parser = argparse.ArgumentParser(prog="python -m runtime.dev.bench_latency", description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=60.0, help="Seconds of load per request size.")
    parser.add_argument("--quick", action="store_true", help="10 s per request size instead of --duration.")
    parser.add_argument("--rate", type=float, default=10_000)
    parser.add_argument("--sizes", default="500,100")
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument("--out", type=Path, default=Path(".esp/bench"))
    parser.add_argument("--subscribe", help=argparse.SUPPRESS)  # the subscriber process
    parser.add_argument("--token", help=argparse.SUPPRESS)
    parser.add_argument("--expected", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--idle", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--timeout", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.subscribe:
        subscribe(args.subscribe, args.token, args.out, args.expected, args.idle, args.timeout)
        return
    from runtime.dev.local_ray import use_local_ray

    use_local_ray()
    result = bench_latency(
        args.out / "state" / "latency",
        duration_s=10.0 if args.quick else args.duration,
        rate=args.rate,
        sizes=[int(s) for s in args.sizes.split(",")],
        senders=args.senders,
    )
    print(json.dumps({"latency": result}, indent=2))


if __name__ == "__main__":
    main()
