"""The partition actor: a thin Ray shell around :class:`runtime.partition.PartitionRunner`.

A background thread runs ``step`` in a loop. Any failure (Redis gone, a bug) makes it recover
from the checkpoints and replay, so a half-done step can never lose or double an output. Ray
restarts a crashed actor, whose constructor recovers the same way. A failure the input causes is
counted against its events (in Redis), and an event that keeps failing is quarantined by the
runner, so the loop never replays the same entry forever.

Partitions move between actors while the stream goes on (``esp scale``): the coordinator asks
the old owner to :meth:`PartitionActor.release` them (a checkpoint) and the new one to
:meth:`PartitionActor.adopt` them (from that checkpoint). An owner that missed the news is
fenced off (``runtime.log.partition_log``): it drops what it lost and goes on with the rest. A
restarted actor owns what the coordinator last recorded for its index, not what it was made with.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

import ray

from actors.factory import actor_name, actor_started
from runtime import metrics as m
from runtime.log.partition_log import Fenced
from runtime.log.partitioning import recorded_assignment
from runtime.partition import PartitionRunner
from runtime.process_gc import release_free_memory
from runtime.redis_client import connect
from serve.metrics import metric, observe

logger = logging.getLogger(__name__)

LAG_REFRESH_S = 1.0  # the lag gauges and esp_event_delay_seconds (see _record_lag)


class PartitionActor:
    """Steps its partitions' runner in a loop; made by ``actors.factory`` as ``esp-partition-<index>``."""

    def __init__(self, settings: dict[str, Any], partitions: list[int], index: int) -> None:
        self._settings = actor_started("partition", index, settings)
        self._index = index
        self._runner = PartitionRunner(self._settings, partitions, consumer=actor_name("partition", index))
        if ray.get_runtime_context().was_current_actor_reconstructed:  # partitions may have moved since
            recorded = recorded_assignment(connect(self._settings.effective_redis_url()))
            self._runner.partitions = sorted(recorded[index]) if index < len(recorded) else partitions
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._recovered = False
        self._errors = 0
        self._poison_recorded = 0
        self._lag: dict[int, int] = {}  # entries not yet read, per partition, as of the last refresh
        self._delays: dict[int, int] = {}  # per partition: the largest entry delay (ms) not yet observed
        self._node_id = ray.get_runtime_context().get_node_id()
        self._thread = threading.Thread(target=self._loop, name="partition-loop", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        backoff = 0.1
        last_lag = 0.0
        while not self._stop.is_set():
            try:
                with self._lock:
                    if not self._recovered:
                        self._runner.recover()
                        self._recovered = True
                    stats = self._runner.step(block_ms=100)
                    if time.monotonic() - last_lag > LAG_REFRESH_S:
                        self._record_lag()
                        self._runner.heartbeat(self._index)
                        last_lag = time.monotonic()
                self._record(stats)
                backoff = 0.1
            except Fenced as lost:  # another actor took these partitions: go on with the rest
                logger.warning(
                    "partition actor %s: %s; going on without them",
                    self._index,
                    lost,
                    extra={"partition": lost.partitions},
                )
                with self._lock:
                    self._runner.drop(lost.partitions)
                self._recovered = False
            except Exception:  # a poison event's failure is counted by the runner (StepFailed)
                logger.exception("partition actor %s: step failed; recovering from checkpoints", self._index)
                self._errors += 1
                self._recovered = False
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)

    def _record(self, stats: Any) -> None:
        tags = {"actor": str(self._index)}
        if stats.events:
            metric(m.PROCESSED).inc(stats.events, tags=tags)
        if stats.published:
            metric(m.PUBLISHED).inc(stats.published, tags=tags)
        if stats.late:
            metric(m.LATE).inc(stats.late, tags={"policy": self._runner.settings.late_events})
        poison = self._runner.totals.poison - self._poison_recorded  # set-asides of failed steps too
        if poison:
            metric(m.POISON).inc(poison, tags={"stage": "partition"})
            self._poison_recorded += poison
        for rule, count in stats.fired.items():
            metric(m.RULE_FIRES).inc(count, tags={"rule": rule})
        for rule, count in stats.retractions.items():
            metric(m.RETRACTIONS).inc(count, tags={"rule": rule})
        delays = self._delays
        for partition, delay_ms in stats.delays:
            if delay_ms >= delays.get(partition, 0):
                delays[partition] = delay_ms

    def _record_lag(self) -> None:
        """Refresh the per-partition gauges: log entries not yet read, and how far each
        watermark trails the wall clock (once the partition has seen an event); and observe each
        partition's largest entry delay since the last refresh in ``esp_event_delay_seconds``.
        One observation per entry (a thousand or more a second at 10 k events/s) made Ray's
        metrics agent, which replays every histogram observation when it exports, burst half a
        core every export and delay every event in flight."""
        for partition, delay_ms in self._delays.items():
            observe(m.EVENT_DELAY, delay_ms / 1000, {"partition": str(partition)})
        self._delays.clear()
        self._lag = self._runner.log.backlog(self._runner.partitions)
        for partition, lag in self._lag.items():
            metric(m.LAG).set(lag, tags={"partition": str(partition)})
        now_ms = time.time() * 1000
        for partition, clock in list(self._runner.clocks.items()):
            if clock.newest:
                delay_s = max(0.0, now_ms - clock.watermark) / 1000
                metric(m.WATERMARK_DELAY).set(delay_s, tags={"partition": str(partition)})
        release_free_memory()

    def status(self) -> dict[str, Any]:
        with self._lock:
            return {
                **self._runner.status(),
                "index": self._index,
                "pid": os.getpid(),
                "node_id": self._node_id,
                "lag": {str(p): n for p, n in self._lag.items()},
                "recovered": self._recovered,
                "errors": self._errors,
            }

    def explain(self, customer: str, rule: str | None = None) -> dict[str, Any]:
        with self._lock:
            return self._runner.explain(customer, rule)

    def checkpoint(self) -> int:
        with self._lock:
            return self._runner.checkpoint()

    def release(self, partitions: list[int]) -> dict[str, str]:
        """Checkpoint ``partitions`` and stop reading them (their new owner adopts them next)."""
        with self._lock:
            if not self._recovered:  # never read them: their checkpoints are as they were
                self._runner.drop(partitions)
                return {}
            return {str(p): offset for p, offset in self._runner.release(partitions).items()}

    def adopt(self, partitions: list[int]) -> dict[str, str]:
        """Own ``partitions`` from their checkpoints on; returns the offsets reading goes on after."""
        with self._lock:
            return {str(p): offset for p, offset in self._runner.adopt(partitions).items()}

    def stop(self) -> int:
        """Checkpoint and stop the loop (graceful shutdown)."""
        self._stop.set()
        self._thread.join(timeout=10)
        with self._lock:
            return self._runner.checkpoint() if self._recovered else 0
