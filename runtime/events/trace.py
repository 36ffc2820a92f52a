"""Where did event X go? The trace is put together on demand from what the pipeline keeps
anyway: the idempotency buckets (digest of the event id -> its log entry's millisecond), the partition's read
position, the outputs each event contributed to, the ids dropped on purpose, and the quarantine.
Nothing is written per event just for tracing."""

from __future__ import annotations

from typing import Any

import orjson
import redis

from runtime import keys
from runtime.log.partition_log import (
    DAY_MS,
    IdKey,
    decode_entry,
    decode_location,
    id_bucket,
    id_digest,
    id_keys,
    owner_group,
)
from runtime.log.streams import entry_id_key, text
from runtime.sources.quarantine import QuarantineStore
from runtime.subscriptions.topics import CONTACT_TOPICS

QUARANTINE_SCAN = 10_000  # newest quarantine entries of the source searched for the id


def trace_event(
    client: redis.Redis, source: str, event_id: str, *, now_ms: int, days: int, partitions: int
) -> dict[str, Any]:
    """The path of one event, newest knowledge first looked up over ``days`` days. Event ids
    are remembered in the partition of their customer, which the id alone does not tell: the
    lookup asks every partition (one pipelined round trip)."""
    day = now_ms // DAY_MS
    pipe = client.pipeline(transaction=False)
    for back in range(days + 1):
        pipe.hget(keys.dropped(source, day - back), event_id)
        pipe.hget(keys.late(source, day - back), event_id)
        pipe.hget(keys.retracts(source, day - back), event_id)
    checked = id_keys(day, days).checked
    for p in range(partitions):
        for first, span in checked:
            pipe.hget(keys.idempotency(p, source, first, span), "n")
    found = pipe.execute()
    marks, counts = found[: 3 * (days + 1)], found[3 * (days + 1) :]
    width = len(checked)
    where = _where(client, source, event_id, checked, [counts[p * width : (p + 1) * width] for p in range(partitions)])
    dropped = next((text(v) for v in marks[0::3] if v), None)
    late_ms = next((int(v) for v in marks[1::3] if v), None)
    retracted = next((orjson.loads(v) for v in marks[2::3] if v), [])
    steps: list[dict[str, Any]] = []
    status = "unknown"
    if where:
        status = "accepted"
        partition, entry = where
        hits = client.lrange(keys.hits(partition, source, event_id), 0, -1)
        steps.append({"step": "logged", "partition": partition, "log_entry": entry})
        steps.append({"step": "processed" if _read_past(client, partition, entry) else "waiting"})
        if late_ms is not None:
            steps.append({"step": "late", "behind_customer_ms": late_ms})
        steps += [{"step": "retracts", "rule": rule} for rule in retracted]
        if dropped:  # accepted, then kept from the rules (a late event under the drop policy)
            status = "dropped"
            steps.append({"step": "dropped", "reason": dropped})
        matched = [orjson.loads(raw) for raw in hits]
        steps += [{"step": "matched", **hit} for hit in matched]
        steps += _contact_decisions(
            client, [h["output"] for h in matched if str(h.get("topic")).startswith(CONTACT_TOPICS)]
        )
        steps += _deliveries(
            client, [f"{source}/{event_id}"] + [f"esp/rule/{h['rule']}/{h['output']}" for h in matched]
        )
    elif dropped:
        status = "dropped"
        steps.append({"step": "dropped", "reason": dropped})
    quarantined = [
        q for q in QuarantineStore(client).list(source=source, limit=QUARANTINE_SCAN) if q["id"] == event_id
    ][:10]
    for q in quarantined:
        steps.append({"step": "quarantined", "qid": q["qid"], "reason": q["reason"], "message": q["message"]})
    if status == "unknown" and quarantined:
        status = "quarantined"
    return {"source": source, "id": event_id, "status": status, "steps": steps}


def _where(
    client: redis.Redis, source: str, event_id: str, checked: tuple[IdKey, ...], counts: list[list[bytes | None]]
) -> tuple[int, str] | None:
    """(partition, log entry) of an accepted event: its digest looked up in the bucket it falls
    in, in each key of remembered ids of the source (``checked``, as an append checks them) that
    each partition has (``counts``: per partition, each key's bucket count or None)."""
    digest = id_digest(source, event_id)
    found = [(p, key, int(n)) for p, per_key in enumerate(counts) for key, n in zip(checked, per_key, strict=True) if n]
    if not found:
        return None
    pipe = client.pipeline(transaction=False)
    for p, (first, span), n in found:
        pipe.hget(keys.idempotency_bucket(p, source, first, id_bucket(digest, n), span), digest)
    stored = zip(found, pipe.execute(), strict=True)
    location = next((decode_location(v, key[0], p) for (p, key, _), v in stored if v), None)
    if location is None:
        return None
    partition, first_entry, last_entry = location
    if first_entry == last_entry:
        return partition, first_entry
    return partition, _entry_holding(client, partition, first_entry, last_entry, source, event_id)


def _entry_holding(client: redis.Redis, partition: int, first: str, last: str, source: str, event_id: str) -> str:
    """The log entry between ``first`` and ``last`` (one millisecond's) that holds the event;
    ``first`` when none does any more (the log was trimmed past it)."""
    for entry, fields in client.xrange(keys.log_stream(partition), first, last):
        try:
            events = decode_entry(partition, text(entry), fields).events
        except Exception:  # a damaged entry holds no event to find
            continue
        if any(e.id == event_id and e.source == source for e in events):
            return text(entry)
    return first


def _contact_decisions(client: redis.Redis, outputs: list[str]) -> list[dict[str, Any]]:
    """The contact-policy decision on each notify or task output: the final one, or a hold
    until the request is decided again."""
    if not outputs:
        return []
    found = client.mget([keys.decision(o) for o in outputs])
    return [{"step": "contact_decision", **orjson.loads(raw)} for raw in found if raw]


def _deliveries(client: redis.Redis, event_keys: list[str]) -> list[dict[str, Any]]:
    """Webhook and channel delivery attempts of the event and of the outputs it produced."""
    pipe = client.pipeline(transaction=False)
    for key in event_keys:
        pipe.lrange(keys.deliveries(key), 0, -1)
    return [
        {"step": "delivery", "event": key, **orjson.loads(raw)}
        for key, attempts in zip(event_keys, pipe.execute(), strict=True)
        for raw in attempts
    ]


def _read_past(client: redis.Redis, partition: int, entry: str) -> bool:
    """Whether the partition actors have read the log past ``entry``."""
    try:
        groups = client.xinfo_groups(keys.log_stream(partition))
    except redis.ResponseError:
        return False
    group = owner_group(groups)
    if group is None:
        return False
    return entry_id_key(text(group["last-delivered-id"])) >= entry_id_key(entry)
