"""The policy actor: a thin Ray shell around :class:`runtime.policy.stage.PolicyStage`.

Instance ``index`` of ``count`` decides the policy shards ``shard % count == index`` (of
``settings.policy_shards``), so each customer's requests meet in one stage. A background thread
steps the stage; a failed step retries (the unacknowledged requests are read again, decisions
already made stand), and requests whose decision keeps raising are quarantined by the stage
after a bounded number of tries. Ray restarts a crashed actor, which reads its shards again.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from actors.factory import actor_started
from runtime import metrics as m
from runtime.policy.stage import PolicyStage
from serve.metrics import metric

logger = logging.getLogger(__name__)


def shards_of(index: int, count: int, total: int) -> list[int]:
    """The policy shards instance ``index`` of ``count`` decides."""
    return [shard for shard in range(total) if shard % count == index]


class PolicyActor:
    """Decides contact requests of its shards; made by ``actors.factory`` as ``esp-policy-<index>``."""

    def __init__(self, settings: dict[str, Any], index: int, count: int) -> None:
        self._settings = actor_started("policy", index, settings)
        total = self._settings.policy_shards
        self._index = index
        self._stage = PolicyStage(
            self._settings.effective_redis_url(),
            shards_of(index, count, total),
            total_shards=total,
            horizon_s=self._settings.idempotency_horizon_s,
            maxlen=self._settings.subscription_maxlen,
            partitions=self._settings.partitions,
        )
        self._stop = threading.Event()
        self._errors = 0
        self._poison_recorded = 0
        self._thread = threading.Thread(target=self._loop, name="policy-stage", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        backoff = 0.1
        while not self._stop.is_set():
            try:
                for outcome, count in self._stage.step().items():
                    metric(m.CONTACT_DECISIONS).inc(count, tags={"outcome": outcome})
                self._record_poison()
                backoff = 0.1
            except Exception:
                logger.exception("policy actor %s: step failed; retrying", self._index)
                self._errors += 1
                self._stage.restart()
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)

    def _record_poison(self) -> None:
        """Count in ``esp_poison_entries_total`` the requests set aside since the last call."""
        if self._stage.poison > self._poison_recorded:
            metric(m.POISON).inc(self._stage.poison - self._poison_recorded, tags={"stage": "policy"})
            self._poison_recorded = self._stage.poison

    def status(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "index": self._index,
            "policy_shards": self._stage.shards,
            "decisions": dict(self._stage.totals),
            "errors": self._errors,
            "poison": self._stage.poison,
        }

    def stop(self) -> None:
        """End the loop after its current step (what it read and did not decide is read again)."""
        self._stop.set()
        self._thread.join(timeout=10)
