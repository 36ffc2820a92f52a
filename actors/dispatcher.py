"""The dispatcher actor: a thin Ray shell around :class:`runtime.subscriptions.dispatch.Dispatcher`.

A background thread runs the dispatcher's asyncio loop (uvloop where installed). Ray restarts a crashed actor; the new
one takes back whatever its predecessor left pending (``runtime/subscriptions/dispatch.py``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from typing import Any

from actors.factory import actor_started
from runtime import metrics as m
from runtime.subscriptions.dispatch import Dispatcher, new_event_loop
from serve.metrics import metric, observe

logger = logging.getLogger(__name__)

POISON_REFRESH_S = 1.0  # how often set-aside deliveries reach the metric


class RayMetrics:
    """The dispatcher's delivery metrics as Ray metrics."""

    def delivered(self, destination: str, count: int, latency_s: float) -> None:
        tags = {"destination": destination}
        metric(m.DELIVERED).inc(count, tags=tags)
        observe(m.DELIVERY_LATENCY, latency_s, tags)

    def retried(self, destination: str) -> None:
        metric(m.RETRIED).inc(1, tags={"destination": destination})

    def dead_lettered(self, destination: str, count: int) -> None:
        metric(m.DEAD_LETTERED).inc(count, tags={"destination": destination})

    def lag(self, destination: str, oldest_undelivered_s: float) -> None:
        metric(m.DELIVERY_LAG).set(oldest_undelivered_s, tags={"destination": destination})


class DispatcherActor:
    """Delivers the destinations with ``hash % count == index``; made by ``actors.factory`` as
    ``esp-dispatcher-<index>``."""

    def __init__(self, settings: dict[str, Any], index: int, count: int) -> None:
        self._settings = actor_started("dispatcher", index, settings)
        self._dispatcher = Dispatcher(
            self._settings.effective_redis_url(),
            horizon_s=self._settings.idempotency_horizon_s,
            index=index,
            count=count,
            metrics=RayMetrics(),
            sealer=self._settings.sealer(),
        )
        self._loop = new_event_loop()  # uvloop: a fraction of the per-request cost of the standard loop
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="dispatcher-loop", daemon=True)
        self._thread.start()
        self._done = threading.Event()
        self._poison_recorded = 0
        self._counter = threading.Thread(target=self._count_poison, name="poison-count", daemon=True)
        self._counter.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        while True:
            self._stop = asyncio.Event()
            try:
                self._loop.run_until_complete(self._dispatcher.run(self._stop))
                return
            except Exception:
                logger.exception("dispatcher loop failed; starting it again")
                time.sleep(1)

    def _count_poison(self) -> None:
        """Count in ``esp_poison_entries_total`` the deliveries set aside (the delivery loop's
        count only grows; this thread turns it into the metric, off the loop)."""
        while not self._done.wait(POISON_REFRESH_S):
            total = self._dispatcher.poisoned
            if total > self._poison_recorded:
                metric(m.POISON).inc(total - self._poison_recorded, tags={"stage": "delivery"})
                self._poison_recorded = total

    def status(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "destinations": self._dispatcher.status(),
            "delivery_poison": self._dispatcher.poisoned,
        }

    def stop(self) -> None:
        self._done.set()
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=10)
        self._counter.join(timeout=10)
