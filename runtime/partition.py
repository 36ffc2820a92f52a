"""The work of a partition actor, as plain Python: recover, then step.

``PartitionRunner`` owns a set of virtual partitions. ``recover`` loads each partition's
checkpoint and rewinds the log cursor to the checkpoint's offset, so state is exactly
checkpoint + replay (invariant 2). ``step`` reads a batch of log entries, runs the rules,
publishes outputs (de-duplicated by id, invariant 3), and checkpoints on schedule. Outputs are
published before the offset that produced them can reach a checkpoint.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis

from runtime import keys
from runtime.checkpoint import Checkpoint, CheckpointStore
from runtime.config.store import ConfigStore
from runtime.envelope import Event
from runtime.eventtime import EventClock
from runtime.log import DAY_MS, PartitionLog
from runtime.outbox import Outbox, Publication
from runtime.profiles import ProfileStore
from runtime.quarantine import Quarantined, QuarantineStore
from runtime.rules import CompiledRule, Output, PartitionEngine, compile_rule
from runtime.settings import EspSettings
from runtime.streams import entry_id_key
from runtime.topics import TopicRouter, atomic_topic

logger = logging.getLogger(__name__)

CONFIG_POLL_S = 0.5  # how quickly a config change reaches a running actor


@dataclass(slots=True)
class StepStats:
    """What one step did; the actor turns this into metrics."""

    entries: int = 0
    events: int = 0
    fired: dict[str, int] = field(default_factory=dict)  # rule -> outputs
    published: int = 0
    checkpointed: int = 0
    late: int = 0


def load_rules(docs: list[dict[str, Any]]) -> list[CompiledRule]:
    rules = []
    for doc in docs:
        if not doc.get("enabled", True):
            continue
        try:
            rules.append(compile_rule(doc))
        except Exception:  # a stored rule was valid when applied; never stop the partition for it
            logger.exception("rule %r does not compile; skipped", doc.get("name"))
    return rules


class PartitionRunner:
    def __init__(
        self,
        settings: EspSettings,
        partitions: list[int],
        *,
        consumer: str,
        client: redis.Redis | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.partitions = sorted(partitions)
        self.consumer = consumer
        self._redis = client or redis.Redis.from_url(settings.effective_redis_url())
        self._clock = clock
        self.log = PartitionLog(self._redis, horizon_s=settings.idempotency_horizon_s)
        self.outbox = Outbox(self._redis, horizon_s=settings.idempotency_horizon_s, maxlen=settings.subscription_maxlen)
        self.config = ConfigStore(self._redis)
        self.profiles = ProfileStore(self._redis)
        self.checkpoints = CheckpointStore(settings.checkpoint_location)
        self.quarantine = QuarantineStore(self._redis)
        self.engines: dict[int, PartitionEngine] = {}
        self.offsets: dict[int, str] = {}
        self.clocks: dict[int, EventClock] = {}
        self._dirty: set[int] = set()
        self._config_version = -1
        self._rules: list[CompiledRule] = []
        self._configs: list[tuple[int, list[CompiledRule]]] = []  # loaded config versions, oldest first
        self._applied: dict[int, int] = {}  # partition -> the config version its engine runs
        self.router = TopicRouter({})
        self._last_checkpoint = clock()
        self._config_checked = clock()
        self.totals = StepStats()

    # --- lifecycle -----------------------------------------------------------------------

    def recover(self) -> dict[int, str]:
        """Load checkpoints and rewind the log to them. Returns the offsets replay starts from."""
        self.refresh_config(force=True)
        self.log.ensure_groups(self.partitions)
        for p in self.partitions:
            checkpoint = self.checkpoints.load(p)
            state = checkpoint.state if checkpoint else None
            self.engines[p] = PartitionEngine(self._rules, resume_state=state)
            self._applied[p] = self._config_version
            self.offsets[p] = checkpoint.offset if checkpoint else "0"
            self.clocks[p] = self._clock_for(state or {})
        self.log.rewind(self.offsets)
        return dict(self.offsets)

    def _clock_for(self, state: dict[str, Any]) -> EventClock:
        resume = state.get("clock") or {"newest": state.get("watermark", 0)}
        out_of_order_ms = int(self.settings.max_out_of_order_s * 1000)
        return EventClock(
            out_of_order_ms=out_of_order_ms, lateness_ms=self.settings.allowed_lateness_s * 1000, resume=resume
        )

    def refresh_config(self, *, force: bool = False) -> bool:
        """Load new config if the store's version moved (cheap when nothing changed).
        Subscriptions and channels apply at once; rules reach each partition in log order
        (``_rules_for``)."""
        if not force and self.config.version() == self._config_version:
            return False
        version, docs = self.config.snapshot()
        self._rules = load_rules(docs["rule"])
        self._configs.append((version, self._rules))
        self.router = TopicRouter.from_docs(docs, policy_shards=self.settings.policy_shards)
        self._config_version = version
        return True

    def _rules_for(self, partition: int, accepted_under: int | None) -> None:
        """Bring a partition's rules to the config its next log entry was accepted under (None:
        the newest), so an event accepted before a change is evaluated without it and one
        accepted after it with it. Engines only move forward."""
        engine = self.engines.get(partition)
        if engine is None:
            return
        applied = self._applied.get(partition, -1)
        target = next((c for c in reversed(self._configs) if accepted_under is None or c[0] <= accepted_under), None)
        if target is not None and target[0] > applied:
            engine.update_rules(target[1])
            self._applied[partition] = target[0]
            oldest = min(self._applied.get(p, -1) for p in self.partitions)
            self._configs = [c for i, c in enumerate(self._configs) if c[0] >= oldest or i == len(self._configs) - 1]

    # --- the loop body -------------------------------------------------------------------

    def step(self, *, block_ms: int = 100) -> StepStats:
        stats = StepStats()
        if self._clock() - self._config_checked >= CONFIG_POLL_S:
            self.refresh_config()
            self._config_checked = self._clock()
        entries = self.log.read(
            self.partitions, consumer=self.consumer, count=self.settings.read_batch_entries, block_ms=block_ms
        )
        publications: list[Publication] = []
        for entry in entries:
            if entry.config_version > self._config_version:
                self.refresh_config()
            self._rules_for(entry.partition, entry.config_version)
            publications += self._process(entry.partition, entry.events, stats)
            self.offsets[entry.partition] = entry.entry_id
            self._dirty.add(entry.partition)
            stats.entries += 1
        if not entries:  # caught up: nothing accepted before the newest config is still waiting
            for p in self.partitions:
                self._rules_for(p, None)
        publications += self._timers(stats, caught_up=not entries)
        if publications:
            stats.published = self.outbox.publish(publications, self.router)
        if self._clock() - self._last_checkpoint >= self.settings.checkpoint_interval_s:
            stats.checkpointed = self.checkpoint()
        self._accumulate(stats)
        return stats

    def _process(self, partition: int, events: list[Event], stats: StepStats) -> list[Publication]:
        publications = []
        if self.router.any_atomic:
            wants = self.router.wants_atomic
            publications = [
                Publication(f"atomic/{e.source}/{e.id}", atomic_topic(e.type), e.to_cloudevent())
                for e in events
                if wants(e.type)
            ]
        clock = self.clocks[partition]
        late = clock.late(events)
        if late:
            self._late(partition, late, clock, stats)
            if self.settings.late_events != "accept":
                gone = {id(e) for e in late}
                events = [e for e in events if id(e) not in gone]
        stats.events += len(events)
        return publications + self._evaluate(partition, clock.push(events), stats)

    def _evaluate(self, partition: int, events: list[Event], stats: StepStats) -> list[Publication]:
        """Run the rules over events the watermark has released (in event-time order)."""
        if not events:
            return []
        engine = self.engines[partition]
        profiles = None
        if engine.reads_profiles:  # enrichment: one round trip per batch
            profiles = self.profiles.get_many(sorted({e.customer for e in events}))
        return [_publication(out, stats) for out in engine.on_events(events, profiles)]

    def _late(self, partition: int, late: list[Event], clock: EventClock, stats: StepStats) -> None:
        """Count late events and record them for the trace (one round trip); under the drop and
        quarantine policies, record why they did not reach the rules."""
        stats.late += len(late)
        policy = self.settings.late_events
        now_ms = int(self._clock() * 1000)
        day = now_ms // DAY_MS
        pipe = self._redis.pipeline(transaction=False)
        for e in late:
            pipe.hset(keys.late(e.source, day), e.id, clock.watermark - e.time)
            pipe.expire(keys.late(e.source, day), self.settings.idempotency_horizon_s)
            if policy == "drop":
                pipe.hset(keys.dropped(e.source, day), e.id, "late_event")
        pipe.execute()
        if policy == "quarantine":
            message = (
                f"event time is more than {self.settings.allowed_lateness_s} s behind partition {partition}'s watermark"
            )
            self.quarantine.add(
                [
                    Quarantined(e.source, 0, e.id, "late_event", message, orjson.dumps(e.to_cloudevent()), "json")
                    for e in late
                ],
                at_ms=now_ms,
            )

    def _timers(self, stats: StepStats, *, caught_up: bool) -> list[Publication]:
        """Release held events and fire due timers (absence, dwell, duration) up to the
        partition's watermark; once the partition has read all of its log, up to wall-clock time
        minus the out-of-order bound too, so a quiet customer's wait still ends. (During a replay
        only event time counts, so a replay cannot fire early.)"""
        wall_ms = int(self._clock() * 1000)
        publications = []
        for p, engine in self.engines.items():
            clock = self.clocks[p]
            due = engine.next_timer_at()
            if due is None and not clock.held:
                continue
            now = max(clock.watermark, wall_ms - clock.out_of_order_ms) if caught_up else clock.watermark
            released = clock.release(now)
            if released:
                publications += self._evaluate(p, released, stats)
                due = engine.next_timer_at()
                self._dirty.add(p)
            if due is not None and due <= now:
                publications += [_publication(out, stats) for out in engine.on_timer(now)]
                self._dirty.add(p)
        return publications

    def checkpoint(self) -> int:
        """Write a checkpoint for every partition that changed, then trim what they cover."""
        now_ms = int(self._clock() * 1000)
        written = 0
        for p in sorted(self._dirty):
            engine, clock = self.engines[p], self.clocks[p]
            engine.expire(clock.watermark - clock.lateness_ms)
            state = {**engine.snapshot(), "clock": clock.snapshot()}
            self.checkpoints.save(Checkpoint(p, self.offsets[p], state, now_ms))
            written += 1
        self._dirty.clear()
        self._last_checkpoint = self._clock()
        retention_id = f"{max(now_ms - self.settings.log_retention_s * 1000, 0)}-0"
        trims = {p: min(off, retention_id, key=entry_id_key) for p, off in self.offsets.items() if off != "0"}
        if trims:
            self.log.trim(trims)
        return written

    def _accumulate(self, stats: StepStats) -> None:
        totals = self.totals
        totals.entries += stats.entries
        totals.events += stats.events
        totals.published += stats.published
        totals.checkpointed += stats.checkpointed
        totals.late += stats.late
        for rule, n in stats.fired.items():
            totals.fired[rule] = totals.fired.get(rule, 0) + n

    def explain(self, customer: str, rule: str | None = None) -> dict[str, Any]:
        from runtime.partitioning import partition_of

        partition = partition_of(customer, self.settings.partitions)
        engine = self.engines.get(partition)
        if engine is None:
            return {"customer": customer, "partition": partition, "rules": [], "owner": False}
        return {"customer": customer, "partition": partition, "rules": engine.explain(customer, rule)}

    def heartbeat(self, index: int) -> None:
        """Tell readiness checks this actor is alive and stepping."""
        self._redis.hset(keys.HEARTBEATS, str(index), int(self._clock() * 1000))

    def status(self) -> dict[str, Any]:
        return {
            "partitions": self.partitions,
            "config_version": self._config_version,
            "rules": sorted(r.name for r in self._rules),
            "customers": sum(e.customers for e in self.engines.values()),
            "events": self.totals.events,
            "entries": self.totals.entries,
            "published": self.totals.published,
            "late": self.totals.late,
            "held": sum(c.held for c in self.clocks.values()),
            "fired": dict(self.totals.fired),
            "offsets": dict(self.offsets),
        }


def _publication(output: Output, stats: StepStats) -> Publication:
    """An engine output, counted per rule, as the outbox publishes it (with its events, for the trace)."""
    rule = output.event["data"]["rule"]
    stats.fired[rule] = stats.fired.get(rule, 0) + 1
    refs = tuple((m["source"], m["id"]) for m in output.event["data"]["events"])
    return Publication(output.id, output.topic, output.event, refs)
