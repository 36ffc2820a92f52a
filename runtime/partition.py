"""The work of a partition actor, as plain Python: recover, then step.

``PartitionRunner`` owns a set of virtual partitions. ``recover`` loads each partition's
checkpoint and rewinds the log cursor to the checkpoint's offset, so state is exactly
checkpoint + replay (invariant 2). ``step`` reads a batch of log entries, runs the rules,
publishes outputs (de-duplicated by id, invariant 3), and checkpoints on schedule. Outputs are
published before the offset that produced them can reach a checkpoint.

Poison entries. A step that raises is retried from the checkpoint (the actor recovers), and the
failure is counted against the events that may have caused it (all of an entry's or an
evaluated batch's, or those an unpublishable output came from), in Redis, so a crash loop is
bounded too. An event counted once is taken on its own from then on; one that fails on its own
for the ``POISON_ATTEMPTS``-th time goes to the quarantine (reason ``processing_error``) and
the partition moves on; the events around it go through. Outputs keep their deterministic ids,
so the retries publish nothing twice. A log entry that does not even decode is moved from the
log to the quarantine at once (decoding the same bytes cannot go differently).
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NoReturn, TypeVar

import msgspec
import orjson
import redis

from runtime import keys
from runtime.config.store import ConfigStore
from runtime.events.columns import EventColumns
from runtime.events.envelope import Event
from runtime.events.profiles import ProfileStore
from runtime.log.checkpoint import Checkpoint, CheckpointStore
from runtime.log.eventtime import EventClock
from runtime.log.partition_log import DAY_MS, DAY_S, Fenced, LogEntry, PartitionLog, decode_entry
from runtime.log.streams import entry_id_key
from runtime.process_logging import fields as log_fields
from runtime.redis_client import connect
from runtime.rules import CompiledRule, Output, PartitionEngine, compile_rule
from runtime.rules.engine import Retraction
from runtime.settings import EspSettings
from runtime.sources.quarantine import (
    POISON_ATTEMPTS,
    PROCESSING_ERROR,
    Quarantined,
    QuarantineStore,
    error_text,
    transient,
)
from runtime.subscriptions.outbox import Outbox, Publication
from runtime.subscriptions.topics import TopicRouter, atomic_topic

logger = logging.getLogger(__name__)

CONFIG_POLL_S = 0.5  # how quickly a config change reaches a running actor
# A runner checkpoints its partitions an eighth at a time, each once per checkpoint interval: all
# at once, the checkpoints stalled the step for tens of ms every interval (the latency's p99)
CHECKPOINT_SLICES = 8

UNREADABLE_SOURCE = "esp/log"  # the quarantine's source for a log entry that does not decode
T = TypeVar("T")
Suspects = tuple[tuple[str, str], ...]  # (source, id) of the events a failure may come from


class StepFailed(Exception):
    """A step failed and the failure is counted against its suspect events: recover from the
    checkpoints and step again."""


def poison_key(partition: int) -> str:
    """Failed tries of the partition's events and the events it set aside (one hash)."""
    return f"{keys.log_stream(partition)}:poison"


def _tries_field(source: str, event_id: str) -> str:
    return orjson.dumps(["tries", source, event_id]).decode()


def _set_aside_field(source: str, event_id: str) -> str:
    return orjson.dumps(["quarantined", source, event_id]).decode()


@dataclass(slots=True)
class StepStats:
    """What one step did; the actor turns this into metrics."""

    entries: int = 0
    events: int = 0
    fired: dict[str, int] = field(default_factory=dict)  # rule -> outputs
    retractions: dict[str, int] = field(default_factory=dict)  # rule -> late events contradicting its outputs
    delays: list[tuple[int, int]] = field(default_factory=list)  # (partition, ms its entry's oldest event was behind)
    published: int = 0
    checkpointed: int = 0
    late: int = 0
    poison: int = 0  # events set aside after failing POISON_ATTEMPTS times


def load_rules(docs: list[dict[str, Any]]) -> list[CompiledRule]:
    rules = []
    for doc in docs:
        if not doc.get("enabled", True):
            continue
        try:
            rules.append(compile_rule(doc))
        except Exception:  # a stored rule was valid when applied; never stop the partition for it
            logger.exception(
                "rule %r does not compile; skipped", doc.get("name"), extra=log_fields(rule=doc.get("name"))
            )
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
        self.owner = f"{consumer}.{secrets.token_hex(4)}"  # this runner's name as the owner of its partitions
        self.epochs: dict[int, int] = {}  # partition -> the ownership epoch this runner took it with
        self._redis = client or connect(settings.effective_redis_url())
        self._clock = clock
        self.log = PartitionLog(self._redis, horizon_s=settings.idempotency_horizon_s)
        self.outbox = Outbox(
            self._redis,
            partitions=settings.partitions,
            horizon_s=settings.idempotency_horizon_s,
            maxlen=settings.subscription_maxlen,
        )
        self.config = ConfigStore(self._redis)
        self.profiles = ProfileStore(self._redis)
        self.checkpoints = CheckpointStore(settings.checkpoint_location)
        self.quarantine = QuarantineStore(self._redis)
        self.engines: dict[int, PartitionEngine] = {}
        self.offsets: dict[int, str] = {}
        self.clocks: dict[int, EventClock] = {}
        self._watermark_before: dict[int, int] = {}  # partition -> its watermark before the entry being read
        self._dirty: set[int] = set()
        self._config_version = -1
        self._rules: list[CompiledRule] = []
        self._configs: list[tuple[int, list[CompiledRule]]] = []  # loaded config versions, oldest first
        self._rule_docs: dict[str, dict[str, Any]] = {}  # rule name -> record, as of _config_version
        self._applied: dict[int, int] = {}  # partition -> the config version its engine runs
        self.router = TopicRouter({})
        self._checkpoint_due: dict[int, float] = {}  # partition -> when its next checkpoint is due
        self._next_checkpoint = float("inf")  # the earliest of them
        self._config_checked = clock()
        self.totals = StepStats()
        self._pending: list[tuple[int, Suspects, Publication]] = []  # the step's outputs, to publish
        self._poison: dict[int, dict[str, int]] = {}  # partition -> poison_key fields (tries, set aside)
        self._settled: dict[int, set[str]] = {}  # poison_key fields of suspects processed since recovery

    # --- lifecycle -----------------------------------------------------------------------

    def recover(self, partitions: list[int] | None = None) -> dict[int, str]:
        """Take ``partitions`` (default: all of this runner's) from their checkpoints: load them
        and read the log on after them, as the partitions' owner from now on. Returns the
        offsets replay starts from."""
        parts = self.partitions if partitions is None else sorted(partitions)
        self.refresh_config(force=True)
        for p in parts:
            checkpoint = self.checkpoints.load(p)
            state = checkpoint.state if checkpoint else None
            version, rules = self._config_version, self._rules
            ran_under = (state or {}).get("config")
            if ran_under and ran_under["version"] < self._config_version:
                # replay the log after the checkpoint under the rules its entries were accepted under
                version, docs = ran_under["version"], {d["name"]: d for d in ran_under["rules"]}
                rules = load_rules(list(docs.values()))
                self._configs = sorted(
                    {
                        c[0]: c
                        for c in [*self._configs, *self._versions_between(version, docs, self._config_version - 1)]
                    }.values(),
                    key=lambda c: c[0],
                )
            self.engines[p] = PartitionEngine(
                rules, resume_state=state, lateness_ms=self.settings.allowed_lateness_s * 1000
            )
            self._applied[p] = version
            self.offsets[p] = checkpoint.offset if checkpoint else "0"
            self.clocks[p] = self._clock_for(state or {})
            self._settled.pop(p, None)
        self._stagger_checkpoints(parts)
        self.epochs.update(self.log.take({p: self.offsets[p] for p in parts}, owner=self.owner))
        self.outbox.forward(parts)  # what a previous owner published but had not forwarded yet
        self._pending = []
        self._load_poison()
        return {p: self.offsets[p] for p in parts}

    def adopt(self, partitions: list[int]) -> dict[int, str]:
        """Take over ``partitions`` from their checkpoints (a hand-over: their previous owner
        released them, or is fenced off by the epochs this raises). Returns their offsets."""
        self.partitions = sorted(set(self.partitions) | set(partitions))
        return self.recover(partitions)

    def release(self, partitions: list[int]) -> dict[int, str]:
        """Hand ``partitions`` over: checkpoint them as they are now (between steps, so every
        output of what they read is published) and stop reading them. Returns their offsets."""
        mine = [p for p in partitions if p in self.engines]
        self._dirty |= set(mine)
        self._save(mine)
        offsets = {p: self.offsets[p] for p in mine}
        self.drop(mine)
        return offsets

    def drop(self, partitions: Iterable[int]) -> None:
        """Forget ``partitions`` without a checkpoint (another runner owns them now)."""
        gone = set(partitions)
        self.partitions = [p for p in self.partitions if p not in gone]
        for table in (self.engines, self.offsets, self.clocks, self.epochs, self._applied, self._watermark_before):
            for p in gone:
                table.pop(p, None)
        for p in gone:
            self._poison.pop(p, None)
            self._settled.pop(p, None)
        self._dirty -= gone
        for p in gone:
            self._checkpoint_due.pop(p, None)
        self._schedule_checkpoints({})

    def moved(self) -> list[int]:
        """This runner's partitions that another runner has taken since (one round trip)."""
        if not self.epochs:
            return []
        parts = list(self.epochs)
        current = self.log.epochs(parts)
        return [p for p, e in zip(parts, current, strict=True) if e is None or int(e) != self.epochs[p]]

    def _load_poison(self) -> None:
        """Read the partitions' failure counts, keeping the higher of Redis's and this process's
        (a count Redis could not take is not lost while the process lives)."""
        pipe = self._redis.pipeline(transaction=False)
        for p in self.partitions:
            pipe.hgetall(poison_key(p))
        for p, stored in zip(self.partitions, pipe.execute(), strict=True):
            known = self._poison.setdefault(p, {})
            for name, value in stored.items():
                known[name.decode()] = max(known.get(name.decode(), 0), int(value))

    def _clock_for(self, state: dict[str, Any]) -> EventClock:
        resume = state.get("clock") or {"newest": state.get("watermark", 0)}
        return EventClock(
            out_of_order_ms=int(self.settings.max_out_of_order_s * 1000),
            lateness_ms=self.settings.allowed_lateness_s * 1000,
            reorder_wait_ms=self.settings.reorder_wait_ms,
            resume=resume,
        )

    def refresh_config(self, *, force: bool = False) -> bool:
        """Load new config if the store's version moved (cheap when nothing changed).
        Subscriptions and channels apply at once; rules reach each partition in log order
        (``_rules_for``).

        Log entries carry the global version they were accepted under, which may be one this
        runner never polled (two changes between polls): the rules of every version since the last
        load are rebuilt from the store's change log, one snapshot per rule change, so each entry
        finds exactly its own (invariant 7)."""
        if not force and self.config.version() == self._config_version:
            return False
        previous = self._config_version
        version, docs = self.config.snapshot()
        if 0 <= previous < version - 1:
            self._configs += self._versions_between(previous, self._rule_docs, version - 1)
        self._rule_docs = {doc["name"]: doc for doc in docs["rule"]}
        self._rules = load_rules(docs["rule"])
        self._configs.append((version, self._rules))
        self.router = TopicRouter.from_docs(docs, policy_shards=self.settings.policy_shards)
        self._config_version = version
        return True

    def _versions_between(
        self, version: int, rule_docs: dict[str, dict[str, Any]], upto: int
    ) -> list[tuple[int, list[CompiledRule]]]:
        """The rules of every config version after ``version`` (whose rule documents are
        ``rule_docs``) up to ``upto``, from the store's change log: one snapshot per rule change."""
        changes = self.config.rule_changes(version, upto)
        if changes is None:
            logger.warning(
                "config versions %s..%s left the change log; entries stamped with them get the rules of %s",
                version + 1,
                upto,
                version,
            )
        rule_docs, found = dict(rule_docs), []
        for at, name, record in changes or []:
            if record is None:
                rule_docs.pop(name, None)
            else:
                rule_docs[name] = record
            found.append((at, load_rules([rule_docs[n] for n in sorted(rule_docs)])))
        return found

    def _rules_for(self, partition: int, accepted_under: int | None, stats: StepStats) -> None:
        """Bring a partition's rules to the config its next log entry was accepted under (None:
        the newest), so an event accepted before a change is evaluated without it and one
        accepted after it with it. Engines only move forward, and a change is a barrier for the
        reorder buffer: the events it holds were accepted before the change, so they are
        evaluated first, under the rules they were accepted under."""
        engine = self.engines.get(partition)
        if engine is None:
            return
        applied = self._applied.get(partition, -1)
        target = next((c for c in reversed(self._configs) if accepted_under is None or c[0] <= accepted_under), None)
        if target is not None and target[0] > applied:
            clock = self.clocks[partition]
            if clock.held:
                self._evaluate(partition, clock.release(clock.newest), stats)
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
        if not self.partitions:  # all handed over: idle until given some
            time.sleep(block_ms / 1000)
            return stats
        try:
            entries = self.log.read(
                self.partitions, owner=self.owner, count=self.settings.read_batch_entries, block_ms=block_ms
            )
        except Exception as exc:
            if transient(exc):
                raise
            if isinstance(exc, redis.ResponseError) and str(exc).startswith("NOGROUP"):
                raise Fenced(self.moved() or self.partitions) from exc  # another runner took a partition
            self._drop_unreadable()
            raise StepFailed(f"a log entry could not be read: {error_text(exc)}") from exc
        self._pending = []
        for entry in entries:
            if entry.config_version > self._config_version:
                self.refresh_config()
            self._rules_for(entry.partition, entry.config_version, stats)
            self._process(entry, stats)
            self.offsets[entry.partition] = entry.entry_id
            self._dirty.add(entry.partition)
            stats.entries += 1
        if not entries:  # caught up: nothing accepted before the newest config is still waiting
            for p in self.partitions:
                self._rules_for(p, None, stats)
        self._timers(stats, {entry.partition for entry in entries} if entries else None)
        self._flush(stats)
        if self._clock() >= self._next_checkpoint:
            stats.checkpointed = self.checkpoint(self._checkpoints_due())
        self._accumulate(stats)
        return stats

    def _process(self, entry: LogEntry, stats: StepStats) -> None:
        """One log entry: its atomic re-publications, late events, and the rules over what the
        watermark releases. An entry holding a suspect event is taken event by event."""
        p, entry_id = entry.partition, entry.entry_id
        if not self._suspect(p, entry.events):
            try:
                released = self._admit(p, entry.events, (entry_id, 0), stats, careful=False)
            except Exception as exc:
                self._failed(p, _refs(entry.events), exc)
            self._evaluate(p, released, stats)
            return
        for index, event in enumerate(entry.events):
            self._evaluate(
                p,
                self._careful(
                    p, event, stats, lambda e=event, i=index: self._admit(p, [e], (entry_id, i), stats, careful=True)
                ),
                stats,
            )

    def _admit(
        self, partition: int, events: list[Event], at: tuple[str, int], stats: StepStats, *, careful: bool
    ) -> list[Event]:
        """Re-publish the events atomic subscriptions want (at once when ``careful``), sort out
        the late ones, and return what the watermark releases. ``at``: the log entry the events
        come from and the index of the first of them in it."""
        entry_id, first = at
        arrival_ms = entry_id_key(entry_id)[0]
        if self.router.any_atomic:
            wants, columns = self.router.wants_atomic, EventColumns.of(events)
            atomic = []
            for index, kind in enumerate(columns.types):
                if not wants(kind):
                    continue
                e = columns.event(index)
                publication = Publication(
                    f"atomic/{e.source}/{e.id}",
                    atomic_topic(e.type),
                    e.to_cloudevent(),
                    partition=partition,
                    position=(entry_id, first + index),
                )
                atomic.append((partition, ((e.source, e.id),), publication))
            if careful:
                self._publish_now([pub for _, _, pub in atomic], stats)
            else:
                self._pending += atomic
        late = self.engines[partition].late(events, self.clocks[partition].newest)  # before this entry's events
        if late:
            self._late(partition, late, stats)
            if self.settings.late_events != "accept":
                gone = {id(e) for e, _ in late}
                events = [e for e in events if id(e) not in gone]
        stats.events += len(events)
        clock = self.clocks[partition]
        self._watermark_before[partition] = clock.watermark
        released = clock.push(events, arrival_ms)
        if clock.last_delay_ms is not None:
            stats.delays.append((partition, clock.last_delay_ms))
        return released

    def _evaluate(self, partition: int, events: list[Event], stats: StepStats) -> None:
        """Run the rules over events the watermark has released (in event-time order). Batching
        never changes the outputs, so a batch with a suspect event is run event by event, each
        one's outputs published at once."""
        if not events:
            return
        if self._suspect(partition, events):
            for event in events:
                self._careful(
                    partition, event, stats, lambda e=event: self._run_rules(partition, [e], stats, careful=True)
                )
            return
        try:
            self._run_rules(partition, events, stats, careful=False)
        except Exception as exc:
            self._failed(partition, _refs(events), exc)

    def _run_rules(self, partition: int, events: list[Event], stats: StepStats, *, careful: bool) -> None:
        engine = self.engines[partition]
        profiles = None
        if engine.reads_profiles:  # enrichment: one round trip per batch
            profiles = self.profiles.get_many(sorted(set(EventColumns.of(events).customers)))
        watermark = self._watermark_before.get(partition, self.clocks[partition].watermark)
        produced = engine.on_events(events, profiles, watermark=watermark)
        outputs = [(partition, out_refs(out), _publication(out, stats)) for out in produced]
        if engine.retractions:
            self._retracted(engine.take_retractions(), stats)
        if careful:
            self._publish_now([pub for _, _, pub in outputs], stats)
        else:
            self._pending += outputs

    def _publish_now(self, publications: list[Publication], stats: StepStats) -> None:
        """Publish one event's outputs at once, after what the step made before them (order
        kept); a failure is that event's own."""
        self._flush(stats)
        if publications:
            stats.published += self.outbox.publish(publications, self.router, fence=self.epochs)

    def _flush(self, stats: StepStats) -> None:
        """Publish the step's outputs so far, in one round trip. When that fails for a reason
        of its own, publish them one by one (the outbox refuses repeats) to find the output that
        fails, and count the failure against the events it came from."""
        pending, self._pending = self._pending, []
        if not pending:
            return
        try:
            stats.published += self.outbox.publish([pub for _, _, pub in pending], self.router, fence=self.epochs)
            return
        except Exception as exc:
            if transient(exc) or isinstance(exc, Fenced):
                raise
        for partition, suspects, pub in pending:
            try:
                stats.published += self.outbox.publish([pub], self.router, fence=self.epochs)
            except Exception as exc:
                self._failed(partition, suspects, exc)

    # --- poison: bounded retries, then the quarantine ----------------------------------

    def _suspect(self, partition: int, events: list[Event]) -> bool:
        """Whether an event of ``events`` has failed before (only then is a field built)."""
        known = self._poison.get(partition)
        return bool(known) and any(_tries_field(e.source, e.id) in known for e in events)

    def _failed(self, partition: int, suspects: Iterable[tuple[str, str]], exc: Exception) -> NoReturn:
        """Count a failure against each suspect event (in Redis, so a restarted actor knows),
        then fail the step. A failure of the store itself counts against nothing."""
        if transient(exc) or isinstance(exc, (StepFailed, Fenced)):
            raise exc
        names = [_tries_field(source, event_id) for source, event_id in suspects]
        known = self._poison.setdefault(partition, {})
        for name in names:
            known[name] = known.get(name, 0) + 1
        pipe = self._redis.pipeline(transaction=False)
        for name in names:
            pipe.hset(poison_key(partition), name, known[name])
        pipe.expire(poison_key(partition), self._poison_keep_s)
        try:
            pipe.execute()
        except redis.RedisError:  # counted in memory still; the next recovery merges the two
            logger.warning(
                "partition %s: could not record a failed try",
                partition,
                exc_info=True,
                extra=log_fields(partition=partition),
            )
        raise StepFailed(f"partition {partition}: {error_text(exc)}") from exc

    def _careful(self, partition: int, event: Event, stats: StepStats, work: Callable[[], list[T] | None]) -> list[T]:
        """Do ``work`` for one event of a suspect entry or batch. If it fails on its last try the
        event is set aside; before that the failure is counted and the step fails."""
        tries_field = _tries_field(event.source, event.id)
        try:
            done = work() or []
        except (StepFailed, Fenced):
            raise
        except Exception as exc:
            if transient(exc) or self._poison.get(partition, {}).get(tries_field, 0) < POISON_ATTEMPTS - 1:
                logger.warning(
                    "partition %s: processing event %r of %r failed: %s",
                    partition,
                    event.id,
                    event.source,
                    error_text(exc),
                    extra=log_fields(
                        partition=partition, event_id=event.id, source=event.source, customer=event.customer
                    ),
                )
                self._failed(partition, ((event.source, event.id),), exc)
            self._set_aside(partition, event, exc, stats)
            done = []
        self._settled.setdefault(partition, set()).update((tries_field, _set_aside_field(event.source, event.id)))
        return done

    def _set_aside(self, partition: int, event: Event, exc: Exception, stats: StepStats) -> None:
        """Quarantine a poison event, once: the mark written with it keeps a replay from
        quarantining it again."""
        mark = _set_aside_field(event.source, event.id)
        known = self._poison.setdefault(partition, {})
        message = f"processing failed {POISON_ATTEMPTS} times in partition {partition}: {error_text(exc)}"
        logger.warning(
            "partition %s: event %r of %r set aside: %s",
            partition,
            event.id,
            event.source,
            message,
            extra=log_fields(partition=partition, event_id=event.id, source=event.source, customer=event.customer),
        )
        if mark in known:
            return
        # the quarantine and the partition's keys are in different hash slots: quarantined first,
        # so a crash in between can only quarantine the event twice, never lose it
        record = Quarantined(event.source, 0, event.id, PROCESSING_ERROR, message, _raw(event), "json")
        self.quarantine.add([record], at_ms=int(self._clock() * 1000))
        pipe = self._redis.pipeline(transaction=False)
        pipe.hset(poison_key(partition), mark, 1)
        pipe.expire(poison_key(partition), self._poison_keep_s)
        pipe.execute()
        known[mark] = 1
        stats.poison += 1
        self.totals.poison += 1  # at once: the step it happened in may still fail

    def _drop_unreadable(self) -> None:
        """After a read failed: find the entries after each offset that do not decode, and move
        them from the log to the quarantine (each quarantined, then deleted from the log). Decoding the same bytes again
        cannot go differently, so this happens at the first failure; the read is then retried."""
        now_ms = int(self._clock() * 1000)
        for p in self.partitions:
            after = self.offsets.get(p, "0")
            start = "-" if after in ("0", "0-0") else f"({after}"
            for raw_id, fields in self._redis.xrange(
                keys.log_stream(p), min=start, count=self.settings.read_batch_entries
            ):
                entry_id = raw_id.decode()
                try:
                    decode_entry(p, entry_id, fields)
                    continue
                except Exception as exc:
                    message = f"log entry {entry_id} of partition {p} cannot be read: {error_text(exc)}"
                logger.warning(
                    "partition %s: %s; moved to the quarantine",
                    p,
                    message,
                    extra=log_fields(partition=p, entry=entry_id),
                )
                record = Quarantined(
                    UNREADABLE_SOURCE, 0, entry_id, PROCESSING_ERROR, message, fields.get(b"b", b""), "json"
                )
                self.quarantine.add([record], at_ms=now_ms)  # first: the two are in different hash slots
                self._redis.xdel(keys.log_stream(p), entry_id)
                self.totals.poison += 1

    @property
    def _poison_keep_s(self) -> int:
        """How long failure counts outlive their last write: as long as a replay can reach them."""
        return max(self.settings.log_retention_s, DAY_S)

    def _forget_poison(self, partition: int) -> None:
        """After a checkpoint: the counts and marks of the suspect events it covers (settled
        since the last recovery and not held) are never needed again. Counts of events further
        on in the log stay, however often a checkpoint falls before them."""
        settled = self._settled.pop(partition, set())
        known = self._poison.get(partition)
        if not known or not settled:
            return
        held = {
            f(e.source, e.id) for e in self.clocks[partition].held_events() for f in (_tries_field, _set_aside_field)
        }
        done = [name for name in settled if name in known and name not in held]
        if done:
            self._redis.hdel(poison_key(partition), *done)
            for name in done:
                del known[name]

    def _retracted(self, retractions: list[Retraction], stats: StepStats) -> None:
        """Count late events that contradict an output already published, and record them for
        the trace (one round trip). Outputs are never un-sent."""
        day = int(self._clock() * 1000) // DAY_MS
        rules: dict[tuple[str, str], list[str]] = {}
        for r in retractions:
            rules.setdefault((r.source, r.event_id), []).append(r.rule)
        pipe = self._redis.pipeline(transaction=False)
        for (source, event_id), names in rules.items():
            pipe.hset(keys.retracts(source, day), event_id, orjson.dumps(sorted(set(names))))
            pipe.expire(keys.retracts(source, day), self.settings.idempotency_horizon_s)
        pipe.execute()
        for r in retractions:
            stats.retractions[r.rule] = stats.retractions.get(r.rule, 0) + 1

    def _late(self, partition: int, late: list[tuple[Event, int]], stats: StepStats) -> None:
        """Count late events and record them for the trace (one round trip); under the drop and
        quarantine policies, record why they did not reach the rules."""
        stats.late += len(late)
        policy = self.settings.late_events
        now_ms = int(self._clock() * 1000)
        day = now_ms // DAY_MS
        pipe = self._redis.pipeline(transaction=False)
        for e, behind_ms in late:
            pipe.hset(keys.late(e.source, day), e.id, behind_ms)
            pipe.expire(keys.late(e.source, day), self.settings.idempotency_horizon_s)
            if policy == "drop":
                pipe.hset(keys.dropped(e.source, day), e.id, "late_event")
        pipe.execute()
        if policy == "quarantine":
            message = (
                f"event time is more than {self.settings.allowed_lateness_s} s behind the newest event of its customer "
                f"(partition {partition})"
            )
            self.quarantine.add(
                [
                    Quarantined(e.source, 0, e.id, "late_event", message, orjson.dumps(e.to_cloudevent()), "json")
                    for e, _ in late
                ],
                at_ms=now_ms,
            )

    def _timers(self, stats: StepStats, read: set[int] | None) -> None:
        """Release held events and fire due timers (absence, dwell, duration) up to the
        partition's watermark, in the partitions ``read`` entries this step: the others' watermarks
        have not moved since their last visit. Once the runner has read all of its log (``read``
        None), in every partition: the wall clock is its arrival clock (what waited long enough
        goes), and wall-clock time minus both bounds moves its timers too, so a quiet customer's
        wait still ends. (During a replay only the log's times count, so a replay cannot fire
        early.)"""
        caught_up = read is None
        wall_ms = int(self._clock() * 1000)
        for p in self.engines if caught_up else read:
            engine, clock = self.engines[p], self.clocks[p]
            due = engine.next_timer_at()
            if due is None and not clock.held:
                continue
            now = clock.watermark
            if caught_up:
                released = clock.advance(wall_ms)
                now = max(clock.watermark, wall_ms - clock.out_of_order_ms - clock.reorder_wait_ms)
                if clock.oldest_held is not None:  # a timer never runs ahead of an event still waiting
                    now = min(now, clock.oldest_held - 1)
            else:
                released = clock.release(now)
            if released:
                self._watermark_before[p] = clock.watermark
                self._evaluate(p, released, stats)
                due = engine.next_timer_at()
                self._dirty.add(p)
            if due is not None and due <= now:
                self._pending += [(p, out_refs(out), _publication(out, stats)) for out in engine.on_timer(now)]
                self._dirty.add(p)

    def checkpoint(self, partitions: Iterable[int] | None = None) -> int:
        """Write a checkpoint for each of ``partitions`` (default: all of this runner's) that
        changed, then trim the log they cover. Returns how many were written."""
        parts = sorted(self.offsets if partitions is None else set(partitions) & set(self.offsets))
        written = self._save(parts)
        now = self._clock()
        self._schedule_checkpoints(dict.fromkeys(parts, now + self.settings.checkpoint_interval_s))
        retention_id = f"{max(int(now * 1000) - self.settings.log_retention_s * 1000, 0)}-0"
        offsets = {p: self.offsets[p] for p in parts}
        trims = {p: min(off, retention_id, key=entry_id_key) for p, off in offsets.items() if off != "0"}
        if trims:
            self.log.trim(trims)
        return written

    def _stagger_checkpoints(self, partitions: list[int]) -> None:
        """First checkpoints of partitions just taken: spread over one interval in
        ``CHECKPOINT_SLICES`` slices."""
        now, interval = self._clock(), self.settings.checkpoint_interval_s
        self._schedule_checkpoints(
            {p: now + interval * (k % CHECKPOINT_SLICES + 1) / CHECKPOINT_SLICES for k, p in enumerate(partitions)}
        )

    def _schedule_checkpoints(self, due: dict[int, float]) -> None:
        """Set when partitions' next checkpoints are due."""
        self._checkpoint_due.update(due)
        self._next_checkpoint = min(self._checkpoint_due.values(), default=float("inf"))

    def _checkpoints_due(self) -> list[int]:
        """The partitions whose checkpoints are due, with those due within half a slice (so
        that a step checkpoints a slice at once, not a partition at a time)."""
        until = self._clock() + self.settings.checkpoint_interval_s / CHECKPOINT_SLICES / 2
        return [p for p, at in self._checkpoint_due.items() if at <= until]

    def _save(self, partitions: list[int]) -> int:
        """Checkpoint those of ``partitions`` that changed; none if another runner has taken one
        (raises :class:`Fenced`: a superseded owner never overwrites its successor's state)."""
        dirty = [p for p in partitions if p in self._dirty]
        if not dirty:
            return 0
        moved = self.moved()
        if moved:
            raise Fenced(moved)
        now_ms = int(self._clock() * 1000)
        for p in dirty:
            engine, clock = self.engines[p], self.clocks[p]
            engine.expire(clock.watermark - clock.lateness_ms)
            state = {**engine.snapshot(), "clock": clock.snapshot(), "config": self._ran_under(p)}
            self.checkpoints.save(Checkpoint(p, self.offsets[p], state, now_ms))
            self._forget_poison(p)
        self._dirty -= set(dirty)
        return len(dirty)

    def _ran_under(self, partition: int) -> dict[str, Any]:
        """The config version a partition's engine runs and its rule documents (for a replay
        after a recovery to start from the same rules)."""
        version = self._applied.get(partition, self._config_version)
        rules = self.engines[partition].rules.values()
        return {"version": version, "rules": [r.record for r in rules if r.record is not None]}

    def _accumulate(self, stats: StepStats) -> None:
        totals = self.totals
        totals.entries += stats.entries
        totals.events += stats.events
        totals.published += stats.published
        totals.checkpointed += stats.checkpointed
        totals.late += stats.late
        for rule, n in stats.retractions.items():
            totals.retractions[rule] = totals.retractions.get(rule, 0) + n
        for rule, n in stats.fired.items():
            totals.fired[rule] = totals.fired.get(rule, 0) + n

    def explain(self, customer: str, rule: str | None = None) -> dict[str, Any]:
        from runtime.log.partitioning import partition_of

        partition = partition_of(customer, self.settings.partitions)
        engine = self.engines.get(partition)
        if engine is None:
            return {"customer": customer, "partition": partition, "rules": [], "owner": False}
        return {"customer": customer, "partition": partition, "rules": engine.explain(customer, rule)}

    def heartbeat(self, index: int) -> None:
        """Tell readiness checks this actor is alive and stepping, and ``esp status`` how far
        behind each of its partitions' events arrive (one round trip)."""
        now_ms = int(self._clock() * 1000)
        pipe = self._redis.pipeline(transaction=False)
        pipe.hset(keys.HEARTBEATS, str(index), now_ms)
        for p, clock in self.clocks.items():
            pipe.hset(
                keys.PARTITION_STATUS, str(p), orjson.dumps({"actor": index, "at_ms": now_ms, **clock_status(clock)})
            )
        pipe.execute()

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
            "retractions": dict(self.totals.retractions),
            "event_time": {str(p): clock_status(c) for p, c in self.clocks.items()},
            "poison": self.totals.poison,
            "held": sum(c.held for c in self.clocks.values()),
            "fired": dict(self.totals.fired),
            "offsets": dict(self.offsets),
        }


def clock_status(clock: EventClock) -> dict[str, Any]:
    """A partition's event-time clock for ``esp status``: how far behind its newest event time
    log entries arrive (p50/p99/max since the actor started), its watermark and what it holds."""
    return {
        "delay_p50_ms": clock.delay_quantile_ms(0.5),
        "delay_p99_ms": clock.delay_quantile_ms(0.99),
        "delay_max_ms": clock.max_delay_ms,
        "watermark_ms": clock.watermark,
        "held": clock.held,
    }


def _refs(events: list[Event]) -> Suspects:
    return tuple((e.source, e.id) for e in events)


def out_refs(output: Output) -> Suspects:
    """The events an output came from, as its CloudEvent names them."""
    return tuple((m["source"], m["id"]) for m in output.event["data"]["events"])


def _raw(event: Event) -> bytes:
    """The event as JSON for the quarantine (replayable); msgspec takes nesting orjson refuses,
    and an event neither can encode is kept without its data."""
    cloudevent = event.to_cloudevent()
    for encode in (orjson.dumps, msgspec.json.encode):
        try:
            return encode(cloudevent)
        except (TypeError, ValueError, RecursionError, msgspec.EncodeError):
            continue
    return orjson.dumps({**cloudevent, "data": None})


def _publication(output: Output, stats: StepStats) -> Publication:
    """An engine output, counted per rule, as the outbox publishes it (with its events, for the trace)."""
    rule = output.event["data"]["rule"]
    stats.fired[rule] = stats.fired.get(rule, 0) + 1
    return Publication(output.id, output.topic, output.event, out_refs(output))
