"""Deterministic synthetic behaviour events for the demo and the benchmark."""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from typing import Any

import orjson

START_MS = 1_790_000_000_000  # a fixed event-time origin, so runs are repeatable


def demo_events(*, customers: int, events: int, seed: int = 7, span_ms: int = 3_600_000) -> Iterator[dict[str, Any]]:
    """App logins (some failing), orders and web sessions, in event-time order."""
    rng = random.Random(seed)
    step = span_ms / max(events, 1)
    risky = {f"c{i:06d}" for i in rng.sample(range(customers), max(1, customers // 20))}
    for n in range(events):
        customer = f"c{rng.randrange(customers):06d}"
        time_ms = START_MS + int(n * step)
        roll = rng.random()
        if roll < 0.5:
            fail_rate = 0.7 if customer in risky else 0.05
            kind, data = "app.login", {"result": "fail" if rng.random() < fail_rate else "ok", "channel": "app"}
        elif roll < 0.7:
            kind, data = "order.placed", {"amount": round(rng.expovariate(1 / 180), 2), "currency": "CNY"}
        else:
            kind, data = "web.session", {"site": rng.choice(["official", "mall"]), "duration_s": rng.randrange(5, 600)}
        yield {"id": f"e{n:08d}", "type": kind, "time": time_ms, "subject": customer, "data": data}


def ab_events(*, users: int, events: int, seed: int = 11) -> Iterator[dict[str, Any]]:
    """The benchmark stream of DESIGN.md §6: types A and B over ``users`` users."""
    rng = random.Random(seed)
    for n in range(events):
        yield {
            "id": f"b{n:09d}",
            "type": "bench.a" if rng.random() < 0.5 else "bench.b",
            "time": START_MS + n,
            "subject": f"u{rng.randrange(users)}",
            "data": {"v": n % 100},
        }


SEQUENCE_TYPES = (("ab.a", 0.2), ("ab.b", 0.4), ("ab.c", 1.0))  # cumulative: a/b/c at 20/20/60 %
SEQUENCE_STEP_MS = 3


def ab_sequence_events(
    *, customers: int, events: int, seed: int = 14, prefix: str = "", start_ms: int = START_MS
) -> Iterator[dict[str, Any]]:
    """The "``ab.a`` then ``ab.b`` within 60 s" workload (issues 14 and 16): ``events`` events over
    ``customers`` customers, types ab.a/ab.b/ab.c at 20/20/60 %, event time +3 ms per event from
    ``start_ms``, in event-time order; the same seed gives the same stream. ``prefix`` starts
    every event id and customer (several runs on one platform without sharing state)."""
    rng = random.Random(seed)
    for n in range(events):
        roll = rng.random()
        kind = next(t for t, upto in SEQUENCE_TYPES if roll < upto)
        yield {
            "id": f"{prefix}s{n:09d}",
            "type": kind,
            "time": start_ms + n * SEQUENCE_STEP_MS,
            "subject": f"{prefix}c{rng.randrange(customers):06d}",
            "data": {},
        }


def ndjson_batches(events: Iterable[dict[str, Any]], batch_size: int) -> Iterator[bytes]:
    """Events as NDJSON request bodies of ``batch_size`` events each, in the order given."""
    batch: list[bytes] = []
    for event in events:
        batch.append(orjson.dumps(event))
        if len(batch) >= batch_size:
            yield b"\n".join(batch)
            batch = []
    if batch:
        yield b"\n".join(batch)


def ab_sequence_batches(*, batch_size: int, **workload: Any) -> list[bytes]:
    """:func:`ab_sequence_events` (``workload`` its arguments) as NDJSON bodies of ``batch_size``
    events, in event-time order."""
    return list(ndjson_batches(ab_sequence_events(**workload), batch_size))


def demo_phone(customer_index: int) -> str:
    return f"138{customer_index:08d}"


def demo_identity_links(customers: int) -> list[dict[str, Any]]:
    """Every demo customer's phone number (and a device for some)."""
    return [
        {"customer": f"c{i:06d}", "phone": demo_phone(i), **({"imei": f"86{i:013d}"} if i % 3 == 0 else {})}
        for i in range(customers)
    ]


def demo_consents(customers: int) -> list[dict[str, Any]]:
    """Four in five customers opted in to marketing; the rest opted out."""
    return [{"customer": f"c{i:06d}", "opted_in": i % 5 != 0, "purpose": "marketing"} for i in range(customers)]


def hotline_csv(*, customers: int, calls: int, seed: int = 3) -> bytes:
    """Call records as the hotline exports them: local time, line codes, no ids."""
    import datetime as dt

    rng = random.Random(seed)
    start = dt.datetime(2026, 9, 21, 22, 0, 0)  # Asia/Shanghai local time
    lines = ["msisdn,call_time,line_code,duration"]
    for n in range(calls):
        when = start + dt.timedelta(seconds=n * 3600 // max(calls, 1))
        who = rng.randrange(customers // 10 or 1)  # a tenth of the customers call, some often
        code = rng.choice("111223") if n != calls // 2 else "9"  # one unknown line code
        lines.append(f"{demo_phone(who)},{when:%Y-%m-%d %H:%M:%S},{code},{rng.randrange(10, 900)}")
    return "\n".join(lines).encode()


def cell_kv(*, customers: int, updates: int, seed: int = 5) -> bytes:
    """Location updates as key=value lines; a few from numbers nobody knows."""
    rng = random.Random(seed)
    cells = ["AIRPORT-T1", "AIRPORT-T2", "CBD-01", "CBD-02", "HOME-17", "MALL-03"]
    lines = []
    for n in range(updates):
        phone = demo_phone(rng.randrange(customers)) if n % 50 else f"199{n:08d}"
        ts = START_MS // 1000 + n * 3600 // max(updates, 1)
        lines.append(f"msisdn={phone}|cell={rng.choice(cells)}|lac=4601|ts={ts}")
    return "\n".join(lines).encode()
