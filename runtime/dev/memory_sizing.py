"""Redis memory per remembered event id, per customer and per pending output, measured through
ESP's own write paths (``INFO memory`` ``used_memory`` before and after, divided by the count):
the figures of the sizing formula in docs/operations/sizing.md.

``python -m runtime.dev.memory_sizing`` starts a throw-away embedded ``redis-server`` and prints
the figures as JSON. The measuring functions take any client: point them only at an empty
database of your own (they write ``esp:*`` keys and delete some of them).

Ids are realistic: UUID4 strings for event ids, customer ids and output ids."""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runtime import keys
from runtime.events.envelope import Event
from runtime.log.partition_log import PartitionLog

if TYPE_CHECKING:
    import redis

NOW_MS = 1_767_268_800_000  # 2026-01-01T12:00:00Z: the event time of measured events


# --- pure helpers ----------------------------------------------------------------------------


def per_item(before: int, after: int, count: int) -> float:
    """Bytes per item from two ``used_memory`` readings around writing ``count`` items."""
    if count <= 0:
        raise ValueError("count must be positive")
    return (after - before) / count


# --- measuring -------------------------------------------------------------------------------


TRANSIENT = ("mem_aof_buffer", "mem_clients_normal", "mem_clients_slaves", "mem_replication_backlog")


def used_memory(client: redis.Redis) -> int:
    """``used_memory`` without what is not data and comes and goes with the traffic: the AOF
    buffer and the client and replication buffers (a big script call's arguments sit in the
    query buffer; the AOF buffer holds up to a second of writes)."""
    info = client.info("memory")
    return int(info["used_memory"]) - sum(int(info.get(k, 0)) for k in TRANSIENT)


def _delete(client: redis.Redis, pattern: str) -> None:
    batch = list(client.scan_iter(match=pattern, count=1000))
    for start in range(0, len(batch), 1000):
        client.delete(*batch[start : start + 1000])


def measure_event_ids(
    client: redis.Redis, count: int, *, source: str = "sizing", per_request: int = 500, partitions: int = 64
) -> float:
    """Bytes per remembered event id: ``count`` UUID4 ids appended through :class:`PartitionLog`
    (``per_request`` per call, spread over ``partitions``), then the log streams deleted so that
    only the idempotency state is left in the delta."""
    log = PartitionLog(client, horizon_s=7 * 86_400)
    now_ms = int(time.time() * 1000)  # the arrival day as Redis's clock (log entry ids) sees it
    # loads the script and makes the allocations a run makes once (both ways a part is checked:
    # one id, and enough ids for the write to be the check), so the delta is per id
    warm = [Event(f"warm-up-{i}", "sizing.x", NOW_MS, "c", "c", "warm-up", {}, NOW_MS) for i in range(9)]
    log.append({0: warm[:1], 1: warm[1:]}, now_ms=now_ms)
    _delete(client, keys.log_stream("*"))
    before = used_memory(client)
    for start in range(0, count, per_request):
        by_partition: dict[int, list[Event]] = {}
        for i in range(start, min(start + per_request, count)):
            event_id = str(uuid.uuid4())
            by_partition.setdefault(i % partitions, []).append(
                Event(event_id, "sizing.x", NOW_MS, "c", "c", source, {}, NOW_MS)
            )
        log.append(by_partition, now_ms=now_ms)
    _delete(client, keys.log_stream("*"))
    return per_item(before, used_memory(client), count)


class _OneStream:
    """A router that sends every output to one subscription stream (or none)."""

    def __init__(self, stream: str | None) -> None:
        self._streams = [stream] if stream else []

    def streams(self, topic: str, event: dict[str, Any]) -> list[str]:
        return self._streams


def _output(customer: str, rule: str, tag: str | None = None) -> tuple[str, dict[str, Any]]:
    output_id = f"esp/rule/{rule}/{uuid.uuid4()}"
    data: dict[str, Any] = {"rule": rule, "rule_version": 1, "events": [{"source": "app", "id": str(uuid.uuid4())}]}
    if tag:
        data["tag"] = {"set": tag}
    event = {
        "specversion": "1.0",
        "id": output_id,
        "source": "esp",
        "type": "esp.rule.fired",
        "subject": customer,
        "time": "2026-01-01T12:00:00Z",
        "data": data,
    }
    return output_id, event


def measure_customers(
    client: redis.Redis, count: int = 10_000, *, fires: int = 5, contacts: int = 3
) -> dict[str, float]:
    """Bytes per customer: a profile with a few attributes and two tags (the tags set by rule
    outputs, as in production), ``contacts`` sent notifications in the contact ledger (with the
    per-customer decision log) and ``fires`` rule fires kept for ``esp why``. Per part and in
    total; the per-output dedupe keys the outputs leave are deleted (they are counted per
    pending output)."""
    from runtime.events.profiles import ProfileStore
    from runtime.policy.decide import ContactRequest, PolicyRules
    from runtime.policy.ledger import Ledger
    from runtime.policy.models import Cap
    from runtime.subscriptions.outbox import Outbox, Publication

    customers = [str(uuid.uuid4()) for _ in range(count)]
    parts: dict[str, float] = {}

    before = used_memory(client)
    profiles = ProfileStore(client)
    for start in range(0, count, 500):
        profiles.put_many(
            {
                c: {"tier": "gold", "city": "Montréal", "age": 41, "language": "fr"}
                for c in customers[start : start + 500]
            }
        )
    outbox = Outbox(client, horizon_s=7 * 86_400, maxlen=1_000_000)
    no_stream = _OneStream(None)
    for start in range(0, count, 500):
        pubs = []
        for c in customers[start : start + 500]:
            for tag in ("vip", "roaming"):
                output_id, event = _output(c, "tagger", tag)
                pubs.append(Publication(output_id, "esp.internal", event))
        outbox.publish(pubs, no_stream)
    _delete(client, keys.emitted("*", "") + "*")
    _delete(client, keys.fires("*", "") + "*")  # the tagging outputs were fires too: counted below
    after = used_memory(client)
    parts["profile"] = per_item(before, after, count)

    before = after
    for start in range(0, count, 200):
        pubs = []
        for c in customers[start : start + 200]:
            for f in range(fires):
                output_id, event = _output(c, f"rule-{f % 3}")
                pubs.append(Publication(output_id, "business.offer", event))
        outbox.publish(pubs, no_stream)
    _delete(client, keys.emitted("*", "") + "*")
    after = used_memory(client)
    parts["fires"] = per_item(before, after, count)

    before = after
    ledger = Ledger(client, horizon_s=7 * 86_400)
    rules = PolicyRules(caps=(Cap(name="weekly", window="7d", max=100),))
    for n in range(contacts):
        for start in range(0, count, 500):
            groups = [
                [ContactRequest(str(uuid.uuid4()), c, "notify", "sms", f"offer-{n}", requested_at=NOW_MS)]
                for c in customers[start : start + 500]
            ]
            ledger.decide(groups, rules, NOW_MS + n * 60_000)
    _delete(client, keys.decision("") + "*")  # kept per contact request for its horizon, not per customer
    after = used_memory(client)
    parts["ledger"] = per_item(before, after, count)
    parts["total"] = parts["profile"] + parts["fires"] + parts["ledger"]
    return parts


def measure_pending_outputs(client: redis.Redis, count: int) -> float:
    """Bytes per output published to a subscription and not yet delivered: its stream entry,
    its dedupe key (kept for the horizon) and its note in the trace of the event it came from."""
    from runtime.subscriptions.outbox import Outbox, Publication

    outbox = Outbox(client, horizon_s=7 * 86_400, maxlen=10_000_000)
    router = _OneStream(keys.subscription_stream("sizing"))
    before = used_memory(client)
    for start in range(0, count, 500):
        pubs = []
        for _ in range(start, min(start + 500, count)):
            output_id, event = _output(str(uuid.uuid4()), "offer")
            event_id = event["data"]["events"][0]["id"]
            pubs.append(Publication(output_id, "business.offer", event, (("app", event_id),)))
        outbox.publish(pubs, router)
    _delete(client, keys.fires("*", "") + "*")  # per customer, measured there
    return per_item(before, used_memory(client), count)


def measure(
    client: redis.Redis, *, ids: int = 200_000, customers: int = 10_000, outputs: int = 50_000
) -> dict[str, Any]:
    """Every figure, each on an emptied database."""
    client.flushall()
    per_id = measure_event_ids(client, ids)
    client.flushall()
    per_customer = measure_customers(client, customers)
    client.flushall()
    per_output = measure_pending_outputs(client, outputs)
    client.flushall()
    info = client.info("server")
    return {
        "redis_version": info.get("redis_version"),
        "ids": ids,
        "bytes_per_event_id": round(per_id, 1),
        "customers": customers,
        "bytes_per_customer": {k: round(v, 1) for k, v in per_customer.items()},
        "outputs": outputs,
        "bytes_per_pending_output": round(per_output, 1),
    }


def main(argv: list[str] | None = None) -> None:
    import redis as redis_lib

    from runtime.dev.redis_server import EmbeddedRedis, free_port

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ids", type=int, default=200_000)
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--outputs", type=int, default=50_000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedRedis(Path(tmp) / "redis", free_port()).start()
        try:
            client = redis_lib.Redis.from_url(server.url)
            print(json.dumps(measure(client, ids=args.ids, customers=args.customers, outputs=args.outputs), indent=2))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
