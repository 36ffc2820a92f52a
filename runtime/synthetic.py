"""Deterministic synthetic behaviour events for the demo and the benchmark."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

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
