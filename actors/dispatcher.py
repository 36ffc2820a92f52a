"""The dispatcher actor: a thin Ray shell around :class:`runtime.subscriptions.dispatch.Dispatcher`.

A background thread runs the dispatcher's asyncio loop. Ray restarts a crashed actor; the new
one takes back whatever its predecessor left pending (``runtime/subscriptions/dispatch.py``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from typing import Any

import ray

from actors.metrics import metric
from runtime import metrics as m
from runtime.policy.stage import PolicyStage
from runtime.settings import EspSettings
from runtime.subscriptions.dispatch import Dispatcher

logger = logging.getLogger(__name__)

NAMESPACE = "esp"


def actor_name(index: int) -> str:
    return f"esp-dispatcher-{index}"


class RayMetrics:
    def delivered(self, destination: str, count: int, latency_s: float) -> None:
        tags = {"destination": destination}
        metric(m.DELIVERED).inc(count, tags=tags)
        metric(m.DELIVERY_LATENCY).observe(latency_s, tags=tags)

    def retried(self, destination: str) -> None:
        metric(m.RETRIED).inc(1, tags={"destination": destination})

    def dead_lettered(self, destination: str, count: int) -> None:
        metric(m.DEAD_LETTERED).inc(count, tags={"destination": destination})

    def lag(self, destination: str, oldest_undelivered_s: float) -> None:
        metric(m.DELIVERY_LAG).set(oldest_undelivered_s, tags={"destination": destination})


class DispatcherActor:
    def __init__(self, settings: dict[str, Any], index: int, count: int) -> None:
        self._settings = EspSettings(**settings)
        self._dispatcher = Dispatcher(
            self._settings.effective_redis_url(),
            horizon_s=self._settings.idempotency_horizon_s,
            index=index,
            count=count,
            metrics=RayMetrics(),
            sealer=self._settings.sealer(),
        )
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="dispatcher-loop", daemon=True)
        self._thread.start()
        total = self._settings.policy_shards
        shards = [s for s in range(total) if s % count == index]
        self._stage = PolicyStage(
            self._settings.effective_redis_url(),
            shards,
            total_shards=total,
            horizon_s=self._settings.idempotency_horizon_s,
            maxlen=self._settings.subscription_maxlen,
        )
        self._stage_stop = threading.Event()
        self._stage_errors = 0
        self._stage_thread = threading.Thread(target=self._run_stage, name="policy-stage", daemon=True)
        self._stage_thread.start()

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

    def _run_stage(self) -> None:
        """The contact-policy stage of this dispatcher's shards; a failure retries (the
        unacknowledged requests are read again, their decisions stand). Requests whose decision
        keeps raising are quarantined by the stage after a bounded number of tries."""
        backoff = 0.1
        recorded = {"policy": 0, "delivery": 0}  # set aside so far, as counted in the metric
        while not self._stage_stop.is_set():
            try:
                for outcome, count in self._stage.step().items():
                    metric(m.CONTACT_DECISIONS).inc(count, tags={"outcome": outcome})
                self._record_poison(recorded)
                backoff = 0.1
            except Exception:
                logger.exception("policy stage step failed; retrying")
                self._stage_errors += 1
                self._stage.restart()
                self._stage_stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)

    def _record_poison(self, recorded: dict[str, int]) -> None:
        """Count in ``esp_poison_entries_total`` the policy requests and deliveries set aside
        since the last call (the delivery loop runs in another thread; its count only grows)."""
        for stage, total in (("policy", self._stage.poison), ("delivery", self._dispatcher.poisoned)):
            if total > recorded[stage]:
                metric(m.POISON).inc(total - recorded[stage], tags={"stage": stage})
                recorded[stage] = total

    def status(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "destinations": self._dispatcher.status(),
            "policy_shards": self._stage.shards,
            "decisions": dict(self._stage.totals),
            "policy_errors": self._stage_errors,
            "policy_poison": self._stage.poison,
            "delivery_poison": self._dispatcher.poisoned,
        }

    def stop(self) -> None:
        self._stage_stop.set()
        self._stage_thread.join(timeout=10)
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=10)


def create(settings: EspSettings, index: int, count: int, *, detached: bool) -> Any:
    remote = ray.remote(DispatcherActor).options(
        name=actor_name(index),
        namespace=NAMESPACE,
        lifetime="detached" if detached else None,
        max_restarts=-1,
        max_task_retries=3,
        num_cpus=settings.dispatcher_num_cpus,
        max_concurrency=4,
        get_if_exists=True,
    )
    return remote.remote(settings.to_wire(), index, count)


def start(settings: EspSettings, *, detached: bool) -> list[Any]:
    handles = [create(settings, i, settings.dispatchers, detached=detached) for i in range(settings.dispatchers)]
    ray.get([h.status.remote() for h in handles])
    return handles


def stop(count: int) -> None:
    for index in range(count):
        try:
            handle = ray.get_actor(actor_name(index), namespace=NAMESPACE)
        except ValueError:
            continue
        try:
            ray.get(handle.stop.remote(), timeout=15)
        except Exception:  # best effort: it may be gone already
            pass
        ray.kill(handle, no_restart=True)
