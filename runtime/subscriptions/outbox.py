"""The outbox: outputs fanned out to the streams of the subscriptions that want them.

Each output has a deterministic id and belongs to the partition of its customer. An output seen
before does nothing, so replaying a partition after a crash never publishes an output twice
(invariant 3). A new one is noted in the trace of its events, kept among its customer's last
fires (``esp why``), added to each of its streams and its ``tag`` action applied to the profile.

On a single Redis one script does all of it for a batch of partitions (``outbox_publish.lua``).
A Redis Cluster runs a script in one hash slot only, so there publishing is two idempotent steps:

1. **emit**, per partition, one script in the partition's slot: check the publisher still owns
   the partition (its epoch), remember the output id, note it in the trace of its events, keep
   it among the customer's last fires and add it to the partition's outbox stream.
2. **forward**: the records go to each of their streams by one script per stream, in that
   stream's slot, which adds each once: a partition's outbox is read in entry order, so the
   stream keeps, per partition, the newest outbox entry id it added (one small hash per stream,
   not a key per output) and skips records at or below it. Their ``tag`` actions are applied
   to the profiles; then the records leave the outbox. A runner that crashes in between leaves
   the records in the outbox; whoever takes the partition next forwards them again
   (:meth:`Outbox.forward` at recovery), and the marks keep that from adding them twice.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import msgspec
import orjson

from runtime import keys
from runtime.log.partition_log import Fenced
from runtime.log.partitioning import DEFAULT_PARTITIONS, partition_of
from runtime.log.streams import text
from runtime.lua import queue_script, read_script
from runtime.subscriptions.topics import Routes

FIRES_KEPT = 20  # per customer, all rules together: enough for the last few of each in ``esp why``
NOT_FIRES = ("atomic/", "sent/", "decision/")  # re-published inputs, decided contacts, decisions: not rule fires

if TYPE_CHECKING:
    import redis

_LIB = read_script("runtime.subscriptions", "outbox_lib.lua")  # in front of the scripts that use it
_PUBLISH = _LIB + read_script("runtime.subscriptions", "outbox_publish.lua")
_EMIT = _LIB + read_script("runtime.subscriptions", "outbox_emit.lua")
_FORWARD = read_script("runtime.subscriptions", "outbox_forward.lua")
_TAG = _LIB + read_script("runtime.subscriptions", "outbox_tag.lua")
FORWARD_BATCH = 1000  # outbox records read per partition and round trip
PUBLISH_BATCH = 500  # outputs per publish script on a single Redis, so that none holds Redis long


class Record(msgspec.Struct, array_like=True):
    """An output waiting in its partition's outbox to be forwarded."""

    id: str
    payload: bytes  # what every stream gets: the CloudEvent with its topic, JSON
    streams: list[str]
    profile: str = ""  # with a tag action: the customer's profile key, the op (set | clear) and the tag
    op: str = ""
    tag: str = ""


_records = msgspec.msgpack.Decoder(Record)


@dataclass(frozen=True, slots=True)
class Publication:
    """One output ready to publish: its id, topic and CloudEvent."""

    id: str
    topic: str
    event: dict[str, Any]
    refs: tuple[tuple[str, str], ...] = ()  # (source, id) of the events that produced it, for the trace
    # the partition it is published in (its outbox, fence and de-dup key); None: its subject's.
    # An event re-published for an atomic subscription names its customer's, where it was logged:
    # its subject (a phone number linked to the customer) may fall in another runner's partition
    partition: int | None = None
    # an atomic re-publication's place in the log of ``partition`` (which it must then name):
    # (entry id, index of the event in the entry). The partition publishes these in log order,
    # so one mark per partition tells what was published before (``keys.republished``) instead
    # of a de-dup key per event
    position: tuple[str, int] | None = None

    @property
    def rule_data(self) -> dict[str, Any]:
        """The ``data`` of a rule's output, which its trace note, tag action and last fires read
        (its rule, ``tag``, matched events); empty for what only passes through the outbox
        (re-published inputs, contacts, decisions): their ``data`` is their own and never read
        as a rule's."""
        data = None if self.id.startswith(NOT_FIRES) else self.event.get("data")
        return data if isinstance(data, dict) else {}


class OutboxStorage(Protocol):
    """Publishing outputs, effectively once per output id within the horizon (an output with a
    log ``position``: once per position, which the Redis outbox keeps without a horizon)."""

    def publish(self, publications: list[Publication], router: Routes, *, fence: dict[int, int] | None = None) -> int:
        """Append each output not seen before to the streams ``router`` names for it, note it in
        the trace of the events in its ``refs``, apply its ``tag`` action to the customer's
        profile and keep it among the customer's last fires; an output already published does
        none of this. Returns how many were new."""
        ...


class Outbox:
    """:class:`OutboxStorage` in Redis: on a single Redis, per batch, publish scripts of about
    ``PUBLISH_BATCH`` outputs in one pipeline; on a Redis Cluster (or with ``direct=False``),
    one emit script per partition and one forward script per stream, each kind in one pipeline
    (see the module docstring)."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        horizon_s: int,
        maxlen: int,
        partitions: int = DEFAULT_PARTITIONS,
        direct: bool | None = None,
    ) -> None:
        self._redis = client
        self._partitions = partitions
        self._horizon_ms = horizon_s * 1000
        self._maxlen = maxlen
        if direct is None:
            from runtime.redis_client import is_cluster  # here: the in-memory outbox imports this module without redis

            direct = not is_cluster(client)
        self._direct = direct

    def publish(self, publications: list[Publication], router: Routes, *, fence: dict[int, int] | None = None) -> int:
        """Deliver to subscribers; returns how many were new (not seen before). With ``fence``
        (partition -> the publisher's ownership epoch), the outputs of a partition another
        runner has taken since (or that is not in ``fence``) are not published: the others are,
        then :class:`Fenced` is raised naming the taken partitions."""
        by_partition: dict[int, list[Publication]] = {}
        for pub in publications:
            partition = pub.partition
            if partition is None:
                # its position is compared with its log partition's mark, not its subject's
                if pub.position is not None:
                    raise ValueError(f"publication {pub.id} has a log position but names no partition")
                partition = partition_of(pub.event.get("subject") or "", self._partitions)
            by_partition.setdefault(partition, []).append(pub)
        if not by_partition:
            return 0
        fenced = [] if fence is None else [p for p in by_partition if p not in fence]  # never owned here
        owned = {p: pubs for p, pubs in by_partition.items() if p not in fenced}
        epochs = {p: "" if fence is None else fence[p] for p in owned}
        emitted, taken = (self._publish if self._direct else self._emit)(owned, epochs, router)
        if fenced or taken:
            raise Fenced(fenced + taken)
        return emitted

    def _publish(
        self, owned: dict[int, list[Publication]], epochs: dict[int, Any], router: Routes
    ) -> tuple[int, list[int]]:
        """Straight to the streams (single Redis). Returns (new outputs, partitions fenced off)."""
        batches: list[tuple[list[int], list[Any]]] = []  # per script: its partitions, their arguments
        size = PUBLISH_BATCH
        for partition, pubs in owned.items():
            if size >= PUBLISH_BATCH:
                batches.append(([], []))
                size = 0
            parts, argv = batches[-1]
            parts.append(partition)
            argv += [keys.epoch(partition), epochs[partition], keys.republished(partition), len(pubs)]
            for pub in pubs:
                streams, payload, tag = _delivery(pub, router)
                argv += [*self._output_args(partition, pub), len(streams), *streams, payload, *(tag or ("", "", ""))]
            size += len(pubs)
        pipe = self._redis.pipeline(transaction=False)
        for parts, argv in batches:
            queue_script(pipe, _PUBLISH, [], [self._horizon_ms, FIRES_KEPT, self._maxlen, len(parts), *argv])
        emitted, fenced = 0, []
        for (parts, _), (new, taken) in zip(batches, pipe.execute() if batches else [], strict=True):
            emitted += int(new)
            fenced += [parts[int(k) - 1] for k in taken]
        return emitted, fenced

    def _emit(
        self, owned: dict[int, list[Publication]], epochs: dict[int, Any], router: Routes
    ) -> tuple[int, list[int]]:
        """Into the partitions' outboxes, then forwarded (Redis Cluster). Returns (new outputs,
        partitions fenced off)."""
        pipe = self._redis.pipeline(transaction=False)
        for partition, pubs in owned.items():
            argv: list[Any] = [self._horizon_ms, FIRES_KEPT, epochs[partition], len(pubs)]
            for pub in pubs:
                streams, payload, tag = _delivery(pub, router)
                argv += [*self._output_args(partition, pub), _encoder.encode(Record(pub.id, payload, streams, *tag))]
            keys_ = [keys.outbox(partition), keys.epoch(partition), keys.republished(partition)]
            queue_script(pipe, _EMIT, keys_, argv)
        emitted, fenced = 0, []
        for partition, reply in zip(owned, pipe.execute(raise_on_error=False) if owned else [], strict=True):
            if isinstance(reply, Exception):
                if not str(reply).startswith("FENCED"):
                    raise reply
                fenced.append(partition)
            else:
                emitted += int(reply)
        self.forward([p for p in owned if p not in fenced])
        return emitted, fenced

    def _output_args(self, partition: int, pub: Publication) -> list[Any]:
        """What every publishing script reads of an output first (``outbox_lib.lua``)."""
        hits = [keys.hits(partition, source, event_id) for source, event_id in pub.refs]
        fire = fire_record(pub)
        return [
            keys.emitted(partition, pub.id),
            "" if pub.position is None else f"{pub.position[0]}-{pub.position[1]}",
            trace_note(pub),
            len(hits),
            *hits,
            *((keys.fires(partition, pub.event.get("subject") or ""), fire) if fire else ("", "")),
        ]

    def forward(self, partitions: Iterable[int]) -> int:
        """Forward what waits in the outboxes of ``partitions`` to its streams (idempotent:
        called after each publication and when a runner takes partitions). Returns how many
        records left the outboxes."""
        left = list(partitions)
        done = 0
        while left:
            pipe = self._redis.pipeline(transaction=False)
            for p in left:
                pipe.xrange(keys.outbox(p), count=FORWARD_BATCH)
            waiting = {p: items for p, items in zip(left, pipe.execute(), strict=True) if items}
            if not waiting:
                return done
            per_stream: dict[str, list[Any]] = {}
            pipe = self._redis.pipeline(transaction=False)
            for p, items in waiting.items():
                for entry_id, fields in items:
                    record = _records.decode(fields[b"r"])
                    for stream in record.streams:
                        per_stream.setdefault(stream, []).extend((p, entry_id, record.payload))
                    if record.op:
                        queue_script(pipe, _TAG, [record.profile], [record.op, record.tag])
            for stream, marked in per_stream.items():  # a batch reaches each stream at once
                queue_script(
                    pipe,
                    _FORWARD,
                    [stream, keys.forwarded(stream)],
                    [self._horizon_ms, self._maxlen, len(marked) // 3, *marked],
                )
            pipe.execute()
            self._remove(waiting)  # only once every stream has them
            done += sum(len(items) for items in waiting.values())
            left = [p for p, items in waiting.items() if len(items) == FORWARD_BATCH]
        return done

    def _remove(self, forwarded: dict[int, list[Any]]) -> None:
        """Take forwarded records (partition -> XRANGE items) out of their outboxes."""
        pipe = self._redis.pipeline(transaction=False)
        for p, items in forwarded.items():
            pipe.xdel(keys.outbox(p), *[text(entry_id) for entry_id, _ in items])
        pipe.execute()


_encoder = msgspec.msgpack.Encoder()


def routed(pub: Publication, router: Routes) -> tuple[list[str], bytes]:
    """The streams that want ``pub`` and what they get: its event with its topic."""
    event = {**pub.event, "topic": pub.topic}
    return router.streams(pub.topic, event), orjson.dumps(event)


def trace_note(pub: Publication) -> bytes:
    """What the trace of each event in ``pub.refs`` records about the output (the rule: only a
    rule's output has one; a re-published event's own ``data.rule`` is its data)."""
    return orjson.dumps({"output": pub.id, "topic": pub.topic, "rule": pub.rule_data.get("rule")})


def _delivery(pub: Publication, router: Routes) -> tuple[list[str], bytes, tuple[str, ...]]:
    """Where ``pub`` goes and what it does there: its streams, its payload, and its tag action
    as (profile key, op, tag), or () without one."""
    streams, payload = routed(pub, router)
    change = tag_change(pub)
    return streams, payload, (keys.profile(pub.event.get("subject") or ""), *change) if change else ()


def tag_change(pub: Publication) -> tuple[str, str] | None:
    """A ``tag`` action's profile update ("set" or "clear", tag), applied once with the output.
    Only a rule's output carries one: a re-published event's own ``data.tag`` is its data, and
    must neither change its customer's tags nor fail its publication."""
    change = pub.rule_data.get("tag")
    if not change:
        return None
    op = "set" if "set" in change else "clear"
    return op, change[op]


def fire_record(pub: Publication) -> bytes | None:
    """A rule output's entry in its customer's last fires, or None (atomic re-publications and
    other outputs are not rule fires)."""
    data = pub.rule_data
    if "rule" not in data:
        return None
    fire = {
        "rule": data["rule"],
        "version": data.get("rule_version"),
        "topic": pub.topic,
        "id": pub.id,
        "time": pub.event.get("time"),
        "events": data.get("events", []),
    }
    return orjson.dumps(fire)


def last_fires(
    client: redis.Redis,
    customer: str,
    rule: str | None = None,
    limit: int = 5,
    *,
    partitions: int = DEFAULT_PARTITIONS,
) -> dict[str, list[dict[str, Any]]]:
    """The customer's last outputs per rule (one rule, or all), newest first: what did fire, next to
    the live state that says what has not yet. One read of a list of at most ``FIRES_KEPT``."""
    fires = keys.fires(partition_of(customer, partitions), customer)
    return pick_fires(client.lrange(fires, 0, -1), rule, limit)


def pick_fires(records: Iterable[bytes | str], rule: str | None, limit: int) -> dict[str, list[dict[str, Any]]]:
    """From fire records newest first: at most ``limit`` per rule, of ``rule`` or of all."""
    out: dict[str, list[dict[str, Any]]] = {}
    for raw in records:
        fire = orjson.loads(raw)
        if (rule is None or fire["rule"] == rule) and len(out.setdefault(fire["rule"], [])) < limit:
            out[fire["rule"]].append(fire)
    return out
