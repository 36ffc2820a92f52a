"""Webhook and channel delivery: each destination (a webhook subscription, or a channel) reads
its stream through the consumer group and POSTs to its receiver.

- **At least once, de-duplicable.** An event is acknowledged only once its receiver took it
  (2xx) or it went to the destination's dead letters. A dispatcher that dies mid-delivery leaves
  it pending; the next one takes it back (XAUTOCLAIM at start) and sends it again with the same
  ``webhook-id``, which receivers use to de-duplicate.
- **Retries** follow the destination's schedule with jitter, honouring ``Retry-After`` on 429
  and 503 (``runtime.subscriptions.webhooks``). 410 Gone disables the destination until its document changes;
  other 4xx and an exhausted schedule dead-letter the event with the last error.
- **Isolation.** Each destination has its own task, HTTP connection pool, concurrency limit
  (``max_in_flight``) and rate limit: a slow or dead receiver slows only itself.
- **SSRF.** The URL is checked when the document is saved and again before calls (re-resolved
  every few seconds), unless the endpoint is marked ``internal``.

Pure of Ray: ``Dispatcher.run`` is an asyncio coroutine the dispatcher actor (or a test) runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
import redis
import redis.asyncio as aioredis
from yarl import URL

from runtime import keys
from runtime.config.store import ConfigStore
from runtime.config.types import document_body
from runtime.events.profiles import ProfileStore
from runtime.log.streams import text
from runtime.lua import read_script
from runtime.process_logging import bind_log_context
from runtime.process_logging import fields as log_fields
from runtime.redis_client import connect, connect_async, is_cluster
from runtime.security.sealing import Sealer
from runtime.sources.quarantine import POISON_ATTEMPTS, PROCESSING_ERROR, error_text, transient
from runtime.subscriptions.http_client import HttpClient, HttpError
from runtime.subscriptions.models import Channel, Endpoint, Subscription
from runtime.subscriptions.pull import project
from runtime.subscriptions.templates import RenderError, compile_template, notification_context
from runtime.subscriptions.webhooks import (
    CONTENT_TYPE_CLOUDEVENTS_BATCH,
    RETRY_AFTER_STATUSES,
    Outcome,
    RetryPolicy,
    Signer,
    check_url,
    classify,
    default_resolve,
)

logger = logging.getLogger(__name__)

CONSUMER = "dispatcher"
CONFIG_POLL_S = 0.5
URL_RECHECK_S = 10.0
LAG_EVERY_S = 2.0
ATTEMPTS_KEPT = 50  # per event, for the trace
STRANDED_AFTER_S = 30.0  # a pending entry no delivery holds, idle this long, is taken back
HALT_WAIT_S = 3.0  # how long a stopped delivery loop may take to end before it is cancelled
SINGLE_CONTENT_TYPE = "application/cloudevents+json"
PREPARE_RETRY_S = 0.2  # pause before trying again to prepare an entry that failed, times its tries
_RECORD = read_script("runtime.subscriptions", "delivery_record.lua")


class DeliveryMetrics(Protocol):
    def delivered(self, destination: str, count: int, latency_s: float) -> None: ...
    def retried(self, destination: str) -> None: ...
    def dead_lettered(self, destination: str, count: int) -> None: ...
    def lag(self, destination: str, oldest_undelivered_s: float) -> None: ...


class NoMetrics:
    def delivered(self, destination: str, count: int, latency_s: float) -> None:
        pass

    def retried(self, destination: str) -> None:
        pass

    def dead_lettered(self, destination: str, count: int) -> None:
        pass

    def lag(self, destination: str, oldest_undelivered_s: float) -> None:
        pass


@dataclass(frozen=True, slots=True)
class Target:
    """One destination as its documents describe it."""

    key: str  # "subscription/<name>" or "channel/<name>": the metrics and trace name
    version: int
    stream: str
    endpoint: Endpoint
    fields: tuple[str, ...] | None = None  # projection (subscriptions)
    channel: Channel | None = None

    @classmethod
    def from_docs(cls, docs: dict[str, list[dict[str, Any]]]) -> dict[str, Target]:
        targets: dict[str, Target] = {}
        for raw in docs.get("subscription", []):
            if raw.get("mode") != "webhook" or not raw.get("enabled", True):
                continue
            sub = Subscription.model_validate(document_body(raw), context=STORED)
            assert sub.webhook is not None  # the model requires it for mode webhook
            fields = tuple(sub.fields) if sub.fields else None
            key = f"subscription/{sub.name}"
            targets[key] = cls(key, int(raw["version"]), keys.subscription_stream(sub.name), sub.webhook, fields)
        for raw in docs.get("channel", []):
            if not raw.get("enabled", True):
                continue
            channel = Channel.model_validate(document_body(raw), context=STORED)
            key = f"channel/{channel.name}"
            targets[key] = cls(
                key, int(raw["version"]), keys.channel_stream(channel.name), channel.endpoint, None, channel
            )
        return targets


STORED = {"stored": True}  # validation context: the URL was checked when saved, and is before calls


def outputs_context(events: list[dict[str, Any]]) -> dict[str, Any]:
    """The log fields of a delivery: the output id, customer and rule of its events (lists
    when a batch holds several)."""

    def one_or_all(values: list[Any]) -> Any:
        distinct = list(dict.fromkeys(v for v in values if v is not None))
        return distinct[0] if len(distinct) == 1 else distinct or None

    data = [e.get("data") if isinstance(e.get("data"), dict) else {} for e in events]
    rules = [d.get("rule") for d in data]  # a re-published event's data may hold anything there
    return log_fields(
        output_id=one_or_all([e.get("id") for e in events]),
        customer=one_or_all([e.get("subject") for e in events]),
        rule=one_or_all([r for r in rules if isinstance(r, str)]),
    )


def message_id(events: list[dict[str, Any]]) -> str:
    """Stable across retries and redeliveries: from the events' (source, id)."""
    digest = hashlib.sha256("\x1e".join(f"{e.get('source')}\x1f{e.get('id')}" for e in events).encode())
    return f"msg_{digest.hexdigest()[:32]}"


class Undeliverable(Exception):
    """The event can never be delivered as it is (e.g. a template needs a field it lacks)."""


class Destination:
    """The delivery loop of one target."""

    def __init__(
        self,
        target: Target,
        client: aioredis.Redis,
        *,
        horizon_s: int,
        metrics: DeliveryMetrics,
        profiles: ProfileStore,
        clock: Callable[[], float] = time.time,
        on_poison: Callable[[int], None] = lambda count: None,
    ) -> None:
        self.target = target
        self._on_poison = on_poison  # told how many entries went to the dead letters as poison
        self._redis = client
        self._horizon_s = horizon_s
        self._metrics = metrics
        self._clock = clock
        endpoint = target.endpoint
        schedule = tuple(endpoint.retry) if endpoint.retry else None
        self._policy = RetryPolicy(schedule_ms=schedule) if schedule else RetryPolicy()
        self._slots = asyncio.Semaphore(endpoint.max_in_flight)
        self._interval = 1.0 / endpoint.rate_limit_per_s if endpoint.rate_limit_per_s else 0.0
        self._next_send = 0.0
        self._url_checked_at = -URL_RECHECK_S
        self._url_problem: str | None = None
        self._pinned: str | None = None  # the checked address of the URL's host name
        self._templates = (
            {n: compile_template(s, name=n) for n, s in target.channel.templates.items()} if target.channel else {}
        )
        self._payload = (
            compile_template(target.channel.payload, name="payload")
            if target.channel and target.channel.payload
            else None
        )
        self._signer = Signer(endpoint.secrets)
        self._url = URL(endpoint.url)
        self._http: HttpClient | None = None  # made in run(), on the loop that uses it
        self._recorder = _Recorder(client, target.stream)
        self._profiles = profiles
        self._in_flight: set[str] = set()  # entry ids a delivery task of this loop is working on
        self.gone = False
        self.stopped = False  # set by stop(): the loop ends after its current read
        self.delivered = 0

    def stop(self) -> None:
        """End the loop after its current read (at most 500 ms), leaving what it has not
        delivered pending for the next loop of this stream."""
        self.stopped = True

    async def run(self) -> None:
        tasks: set[asyncio.Task[None]] = set()
        self._http = _session(self.target.endpoint)
        try:
            await self._ensure_group()
            backlog = await self._claim_pending()
            last_lag = 0.0
            while not self.gone and not self.stopped:
                if backlog:
                    chunks, backlog = await self._rechunk(backlog), []
                else:
                    entries = await self._read()
                    batch = self.target.endpoint.batch
                    chunks = [entries[start : start + batch] for start in range(0, len(entries), batch)]
                for chunk in chunks:
                    await self._slots.acquire()
                    if self.gone or self.stopped:
                        self._slots.release()
                        break
                    task = asyncio.create_task(self._deliver(chunk))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                if time.monotonic() - last_lag >= LAG_EVERY_S:
                    await self._report_lag()
                    backlog = await self._reclaim_stranded()
                    last_lag = time.monotonic()
            if not self.stopped:
                await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            for task in tasks:
                task.cancel()
            await self._http.close()

    async def _rechunk(
        self, entries: list[tuple[str, dict[bytes, bytes]]]
    ) -> list[list[tuple[str, dict[bytes, bytes]]]]:
        """Taken-back entries in the batches they were first sent in (so each batch keeps its
        ``webhook-id``); entries never sent are batched afresh."""
        batch = self.target.endpoint.batch
        if batch == 1 or not entries:
            return [[entry] for entry in entries]
        firsts = await self._redis.hmget(keys.delivery_chunks(self.target.stream), [eid for eid, _ in entries])
        sent: dict[str, list[tuple[str, dict[bytes, bytes]]]] = {}
        fresh = []
        for entry, first in zip(entries, firsts, strict=True):
            if first is None:
                fresh.append(entry)
            else:
                sent.setdefault(text(first), []).append(entry)
        return list(sent.values()) + [fresh[i : i + batch] for i in range(0, len(fresh), batch)]

    async def _ensure_group(self) -> None:
        with contextlib.suppress(redis.ResponseError):  # exists already
            await self._redis.xgroup_create(self.target.stream, keys.SUBSCRIPTION_GROUP, id="0", mkstream=True)

    async def _claim_pending(self) -> list[tuple[str, dict[bytes, bytes]]]:
        """Everything handed out before and not acknowledged: a previous dispatcher's work."""
        claimed: list[tuple[str, dict[bytes, bytes]]] = []
        start = "0-0"
        while True:
            reply = await self._redis.xautoclaim(
                self.target.stream, keys.SUBSCRIPTION_GROUP, CONSUMER, 0, start_id=start, count=1000
            )
            start, entries = text(reply[0]), reply[1]
            claimed += [(text(eid), f) for eid, f in entries if f]
            if start == "0-0" or not entries:
                return claimed

    async def _reclaim_stranded(self) -> list[tuple[str, dict[bytes, bytes]]]:
        """Pending entries no delivery of this loop holds (a step failed on Redis): take them
        back once they have been idle a while."""
        idle_ms = int(STRANDED_AFTER_S * 1000)
        pending = await self._redis.xpending_range(
            self.target.stream, keys.SUBSCRIPTION_GROUP, min="-", max="+", count=1000, idle=idle_ms
        )
        stranded = [text(p["message_id"]) for p in pending if text(p["message_id"]) not in self._in_flight]
        if not stranded:
            return []
        claimed = await self._redis.xclaim(self.target.stream, keys.SUBSCRIPTION_GROUP, CONSUMER, idle_ms, stranded)
        return [(text(eid), f) for eid, f in claimed if f]

    async def _read(self) -> list[tuple[str, dict[bytes, bytes]]]:
        endpoint = self.target.endpoint
        reply = await self._redis.xreadgroup(
            keys.SUBSCRIPTION_GROUP,
            CONSUMER,
            {self.target.stream: ">"},
            count=endpoint.batch * endpoint.max_in_flight,
            block=500,
        )
        return [(text(eid), f) for _, entries in reply or [] for eid, f in entries if f]

    async def _deliver(self, chunk: list[tuple[str, dict[bytes, bytes]]]) -> None:
        self._in_flight.update(eid for eid, _ in chunk)
        subscription = self.target.key.partition("/")[2] if self.target.key.startswith("subscription/") else None
        bind_log_context(destination=self.target.key, subscription=subscription)  # every line of this task
        try:
            prepared = await self._prepare(chunk)
            if prepared is None:
                return
            chunk, events, body, content_type = prepared
            if not chunk:
                return
            if len(chunk) > 1:  # remember the batch: resent after a crash, it keeps its webhook-id
                first = chunk[0][0]
                await self._redis.hset(
                    keys.delivery_chunks(self.target.stream), mapping={eid: first for eid, _ in chunk}
                )
            msg_id = message_id(events)
            attempt = 0
            while True:
                if self.gone:  # 410 from an earlier attempt: leave the events pending
                    return
                attempt += 1
                status, error, retry_after = await self._attempt(body, msg_id, content_type)
                outcome = classify(status, error)
                delivered = outcome is Outcome.DELIVERED
                await self._record(
                    events, attempt, status, outcome, error, ack=[eid for eid, _ in chunk] if delivered else []
                )
                if delivered:
                    self.delivered += len(chunk)
                    self._metrics.delivered(self.target.key, len(chunk), self._age_s(chunk[0][0]))
                    return
                if outcome is Outcome.GONE:
                    await self._disable(status, error)
                    return
                hint = retry_after if status in RETRY_AFTER_STATUSES else None
                delay_ms = (
                    None if outcome is Outcome.FAILED else self._policy.next_delay_ms(attempt, hint, random.random)
                )
                if delay_ms is None:
                    logger.warning(
                        "%s: %d events dead-lettered after %d attempts: %s",
                        self.target.key,
                        len(chunk),
                        attempt,
                        error or f"HTTP {status}",
                        extra={**outputs_context(events), "status": status, "attempt": attempt},
                    )
                    await self._dead_letter(chunk, status=status, error=error or f"HTTP {status}", attempts=attempt)
                    return
                logger.info(
                    "%s: attempt %d failed (%s); retrying in %d ms",
                    self.target.key,
                    attempt,
                    error or f"HTTP {status}",
                    delay_ms,
                    extra={**outputs_context(events), "status": status, "attempt": attempt},
                )
                self._metrics.retried(self.target.key)
                await asyncio.sleep(delay_ms / 1000)
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug or Redis gone: the events stay pending and are reclaimed later
            logger.exception("delivery to %s failed; the events stay pending", self.target.key)
        finally:
            self._in_flight.difference_update(eid for eid, _ in chunk)
            self._slots.release()

    async def _attempt(self, body: bytes, msg_id: str, content_type: str) -> tuple[int | None, str | None, str | None]:
        endpoint = self.target.endpoint
        problem = await self._url_check()
        if problem is not None:
            return None, problem, None
        await self._pace()
        sent = self._signer.headers(msg_id, int(self._clock()), body, content_type=content_type)
        url, server_hostname = self._url, None
        if self._pinned is not None:  # connect to the address that was checked; name it for HTTP and TLS
            sent["host"] = url.raw_authority
            server_hostname = url.raw_host
            url = url.with_host(self._pinned)
        assert self._http is not None
        try:
            status, answer, retry_after = await self._http.post(
                url, body, {**endpoint.headers, **sent}, server_hostname=server_hostname
            )
        except TimeoutError:
            return None, "timeout", None
        except HttpError as exc:
            return None, f"{exc.name}: {exc}"[:300], None
        error = None if 200 <= status <= 299 else answer[:300].decode(errors="replace")
        return status, error, retry_after

    async def _url_check(self) -> str | None:
        """Resolve and check the URL's host (at most every URL_RECHECK_S), remembering the
        address checked: calls connect to it, so a name that changes its answer between the
        check and the connection (DNS rebinding) cannot reach an internal address."""
        endpoint = self.target.endpoint
        if endpoint.internal:
            return None
        if time.monotonic() - self._url_checked_at >= URL_RECHECK_S:
            self._url_problem, self._pinned = await asyncio.to_thread(_checked_address, endpoint.url)
            self._url_checked_at = time.monotonic()
        return self._url_problem

    async def _pace(self) -> None:
        if not self._interval:
            return
        now = time.monotonic()
        wait = self._next_send - now
        self._next_send = max(now, self._next_send) + self._interval
        if wait > 0:
            await asyncio.sleep(wait)

    async def _prepare(
        self, chunk: list[tuple[str, dict[bytes, bytes]]]
    ) -> tuple[list[tuple[str, dict[bytes, bytes]]], list[dict[str, Any]], bytes, str] | None:
        """``_render`` with bounded tries. When preparing a chunk raises (not for Redis's sake),
        each entry is tried on its own, so one poison entry never holds its chunk back; an entry
        that fails ``POISON_ATTEMPTS`` times (the chunk's try was its first) goes to the dead
        letters with a ``processing_error``. None: nothing is left to send."""
        try:
            return await self._render(chunk)
        except Exception as exc:
            if transient(exc):
                raise
            logger.warning("%s: preparing %d events failed: %s", self.target.key, len(chunk), error_text(exc))
        kept = [entry for entry in await self._still_pending(chunk) if await self._renders_alone(entry)]
        return await self._render(kept) if kept else None

    async def _still_pending(self, chunk: list[tuple[str, dict[bytes, bytes]]]) -> list[tuple[str, dict[bytes, bytes]]]:
        """The entries of a chunk not yet acknowledged (the failed try may have dead-lettered some)."""
        pipe = self._redis.pipeline(transaction=False)
        for entry_id, _ in chunk:
            pipe.xpending_range(self.target.stream, keys.SUBSCRIPTION_GROUP, min=entry_id, max=entry_id, count=1)
        return [entry for entry, pending in zip(chunk, await pipe.execute(), strict=True) if pending]

    async def _renders_alone(self, entry: tuple[str, dict[bytes, bytes]]) -> bool:
        """Whether one entry of a chunk that failed to prepare prepares on its own, within its
        remaining tries; if it never does, it is dead-lettered."""
        error: Exception | None = None
        for attempt in range(2, POISON_ATTEMPTS + 1):
            await asyncio.sleep(PREPARE_RETRY_S * (attempt - 1))
            try:
                kept, _, _, _ = await self._render([entry])
                return bool(kept)
            except Exception as exc:
                if transient(exc):
                    raise
                error = exc
        message = f"{PROCESSING_ERROR}: preparing the delivery failed {POISON_ATTEMPTS} times: {error_text(error)}"
        await self._dead_letter([entry], status=None, error=message, attempts=0)
        self._on_poison(1)
        return False

    async def _render(
        self, chunk: list[tuple[str, dict[bytes, bytes]]]
    ) -> tuple[list[tuple[str, dict[bytes, bytes]]], list[dict[str, Any]], bytes, str]:
        """The request body for a chunk. A notification that cannot be rendered goes to the dead
        letters on its own; the rest of its chunk is sent."""
        events = [orjson.loads(fields[b"e"]) for _, fields in chunk]
        single = self.target.endpoint.batch == 1
        if self.target.channel is None:
            projected = [project(e, self.target.fields) for e in events]
            if single:
                return chunk, events, orjson.dumps(projected[0]), SINGLE_CONTENT_TYPE
            return chunk, events, orjson.dumps(projected), CONTENT_TYPE_CLOUDEVENTS_BATCH
        customers = [str(e.get("subject", "")) for e in events]
        profiles = await asyncio.to_thread(self._profiles.get_many, customers)  # one round trip per chunk
        kept, kept_events, payloads = [], [], []
        for entry, event, customer in zip(chunk, events, customers, strict=True):
            try:
                payloads.append(self._channel_payload(event, profiles[customer]))
            except Undeliverable as exc:
                await self._dead_letter([entry], status=None, error=str(exc), attempts=0)
                continue
            kept.append(entry)
            kept_events.append(event)
        body = orjson.dumps(payloads[0] if single and payloads else payloads)
        return kept, kept_events, body, "application/json"

    def _channel_payload(self, event: dict[str, Any], profile: dict[str, Any]) -> Any:
        channel = self.target.channel
        assert channel is not None
        notify = (event.get("data") or {}).get("notify") or {}
        template = self._templates.get(notify.get("template", ""))
        if template is None:
            raise Undeliverable(f"channel {channel.name!r} has no template {notify.get('template')!r}")
        try:
            message = template.render(notification_context(event, profile))
            context = notification_context(event, profile, message)
            if self._payload is not None:
                return self._payload.render_json(context)
        except RenderError as exc:  # this notification only: dead-lettered with its reason
            raise Undeliverable(f"{exc.reason}: {exc}") from exc
        return {
            "channel": channel.name,
            "type": channel.type,
            "to": event.get("subject"),
            "message": message,
            "campaign": notify.get("campaign"),
            "priority": notify.get("priority"),
            "notification_id": event.get("id"),
            "rule": (event.get("data") or {}).get("rule"),
        }

    async def _record(
        self,
        events: list[dict[str, Any]],
        attempt: int,
        status: int | None,
        outcome: Outcome,
        error: str | None,
        *,
        ack: list[str],
    ) -> None:
        """Each attempt, for the event trace (capped per event), with the acknowledgement of a
        delivery in the same round trip, which the attempts that ended meanwhile share."""
        note = orjson.dumps(
            {
                "destination": self.target.key,
                "attempt": attempt,
                "status": status,
                "outcome": outcome.value,
                "error": error,
                "at": int(self._clock() * 1000),
            }
        )
        trace = [keys.deliveries(f"{event.get('source')}/{event.get('id')}") for event in events]
        await self._recorder.record(trace, note, ack, self._horizon_s)
        if self._recorder.trace_failed:
            self._recorder.trace_failed = False
            logger.warning("%s: could not record a delivery attempt for the trace", self.target.key)

    async def _dead_letter(
        self, chunk: list[tuple[str, dict[bytes, bytes]]], *, status: int | None, error: str, attempts: int
    ) -> None:
        """Into the dead letters, then acknowledged (in one transaction: never both or neither)."""
        pipe = self._redis.pipeline(transaction=True)
        for entry_id, fields in chunk:
            pipe.xadd(
                keys.deadletters(self.target.stream),
                {
                    "e": fields[b"e"],
                    "entry": entry_id,
                    "status": "" if status is None else str(status),
                    "error": error[:1000],
                    "attempts": attempts,
                    "at": int(self._clock() * 1000),
                },
            )
        pipe.hdel(keys.delivery_chunks(self.target.stream), *[eid for eid, _ in chunk])
        pipe.xack(self.target.stream, keys.SUBSCRIPTION_GROUP, *[eid for eid, _ in chunk])
        await pipe.execute()
        self._metrics.dead_lettered(self.target.key, len(chunk))

    async def _disable(self, status: int | None, error: str | None) -> None:
        """410 Gone: stop delivering (events stay in the stream) until the document changes."""
        self.gone = True
        await self._redis.hset(
            keys.delivery_state(self.target.stream),
            mapping={
                "disabled": 1,
                "version": self.target.version,
                "reason": f"HTTP {status}: {error or 'gone'}"[:500],
                "at": int(self._clock() * 1000),
            },
        )
        logger.warning("%s answered 410 Gone; delivery is disabled until the document changes", self.target.key)

    async def _report_lag(self) -> None:
        """Age of the oldest event not yet delivered (pending, or not yet read)."""
        stream, group = self.target.stream, keys.SUBSCRIPTION_GROUP
        pending = await self._redis.xpending(stream, group)
        oldest = text(pending["min"]) if pending and pending.get("pending") else None
        if oldest is None:
            info = await self._redis.xinfo_groups(stream)
            last = next((text(g["last-delivered-id"]) for g in info if text(g["name"]) == group), "0-0")
            after = await self._redis.xrange(stream, min=f"({last}", count=1)
            oldest = text(after[0][0]) if after else None
        self._metrics.lag(self.target.key, self._age_s(oldest) if oldest else 0.0)

    def _age_s(self, entry_id: str) -> float:
        return max(0.0, self._clock() - int(entry_id.partition("-")[0]) / 1000)


def _session(endpoint: Endpoint) -> HttpClient:
    """The HTTP client of one destination: a pool of at most ``max_in_flight`` kept-alive
    connections, one time limit per attempt; no redirects are followed (see ``classify``)."""
    return HttpClient(limit=endpoint.max_in_flight, timeout_s=endpoint.timeout / 1000)


class _Recorder:
    """The Redis bookkeeping of one destination's attempts, shared: each attempt's note goes to
    the trace of its events and a delivery's entries are acknowledged, and the attempts that end
    while a round trip is under way wait for the next one and go together (one pipeline for all
    of them, one XACK). An attempt returns once its own note and acknowledgement are written, so
    at-least-once and ``max_in_flight: 1`` ordering are as with one round trip per attempt.

    On one Redis server the round trip is a single script run (``delivery_record.lua``); on a
    Redis Cluster, whose keys live on several nodes, a pipeline of plain commands."""

    def __init__(self, client: aioredis.Redis, stream: str) -> None:
        self._redis = client
        self._stream = stream
        self._cluster = is_cluster(client)
        self._waiting: list[tuple[list[str], bytes, list[str], int, asyncio.Future[None]]] = []
        self._flushing = False
        self.trace_failed = False  # a trace write failed (best effort): the caller logs it

    async def record(self, trace: list[str], note: bytes, ack: list[str], horizon_s: int) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((trace, note, ack, horizon_s, done))
        if not self._flushing:  # this attempt writes its own and whatever queues up meanwhile
            self._flushing = True
            try:
                while self._waiting:
                    batch, self._waiting = self._waiting, []
                    await self._write(batch)
            finally:
                self._flushing = False
                waiting, self._waiting = self._waiting, []
                _settle(waiting, RuntimeError("the delivery bookkeeping was cancelled"))  # only when cancelled
                if done.done() and not done.cancelled():
                    done.exception()  # retrieved: a cancelled flusher does not await its own
        await done

    async def _write(self, batch: list[tuple[list[str], bytes, list[str], int, asyncio.Future[None]]]) -> None:
        """One round trip for ``batch``; each attempt learns its own outcome (a failed XACK fails
        only the deliveries, a failed round trip all of them). Raises only when cancelled."""
        try:
            ack_error = await (self._pipelined(batch) if self._cluster else self._scripted(batch))
        except asyncio.CancelledError:
            _settle(batch, RuntimeError("the delivery bookkeeping was cancelled"))
            raise
        except Exception as exc:  # Redis: the entries stay pending and are taken back later
            _settle(batch, exc)
            return
        for _, _, ack, _, done in batch:
            if done.done():  # its attempt was cancelled meanwhile
                continue
            if ack and ack_error is not None:
                done.set_exception(ack_error)
            else:
                done.set_result(None)

    async def _scripted(
        self, batch: list[tuple[list[str], bytes, list[str], int, asyncio.Future[None]]]
    ) -> Exception | None:
        trace_keys: list[str] = []
        notes: list[bytes] = []
        indexes: list[int] = []
        acked: list[str] = []
        for trace, note, ack, _, _ in batch:
            notes.append(note)
            trace_keys += trace
            indexes += [len(notes)] * len(trace)
            acked += ack
        horizon_s = batch[0][3]
        names = [self._stream, keys.delivery_chunks(self._stream), *trace_keys]
        args = [keys.SUBSCRIPTION_GROUP, ATTEMPTS_KEPT, horizon_s, len(acked), *acked, len(notes), *notes, *indexes]
        _, failed = await self._redis.execute_command("EVAL", _RECORD, len(names), *names, *args)
        if failed:
            self.trace_failed = True  # the trace is best effort; delivery goes on
        return None

    async def _pipelined(
        self, batch: list[tuple[list[str], bytes, list[str], int, asyncio.Future[None]]]
    ) -> Exception | None:
        pipe = self._redis.pipeline(transaction=False)
        acked: list[str] = []
        for trace, note, ack, horizon_s, _ in batch:
            for key in trace:
                pipe.rpush(key, note)
                pipe.ltrim(key, -ATTEMPTS_KEPT, -1)
                pipe.expire(key, horizon_s)
            acked += ack
        if acked:
            pipe.hdel(keys.delivery_chunks(self._stream), *acked)
            pipe.xack(self._stream, keys.SUBSCRIPTION_GROUP, *acked)
        results = await pipe.execute(raise_on_error=False)
        if any(isinstance(r, Exception) for r in results[: len(results) - (2 if acked else 0)]):
            self.trace_failed = True  # the trace is best effort; delivery goes on
        return results[-1] if acked and isinstance(results[-1], Exception) else None


def _settle(entries: list[tuple[list[str], bytes, list[str], int, asyncio.Future[None]]], error: Exception) -> None:
    for *_, done in entries:
        if not done.done():
            done.set_exception(error)


def _checked_address(url: str) -> tuple[str | None, str | None]:
    """``check_url``'s verdict, and the first address the host name resolved to (None for an
    IP literal, which needs no pinning)."""
    resolved: list[str] = []

    def resolve(host: str, port: int) -> list[str]:
        resolved[:] = default_resolve(host, port)
        return list(resolved)

    problem = check_url(url, internal=False, resolve=resolve)
    return problem, (resolved[0] if resolved and problem is None else None)


async def halt(destination: Destination, task: asyncio.Task[None]) -> None:
    """Stop a destination's loop and wait (bounded) for it to end. It is asked, not cancelled:
    a task cancelled inside a blocking Redis read can stay "cancelling" for good, and the
    config loop waiting on it would then stop following config changes (no new or changed
    destination would ever start; redis-py #2028, #2579). One that does not end in time is
    cancelled and left."""
    destination.stop()
    done, _ = await asyncio.wait({task}, timeout=HALT_WAIT_S)
    if not done:
        logger.warning("delivery loop %s did not stop within %ss; cancelled", destination.target.key, HALT_WAIT_S)
        task.cancel()


class Dispatcher:
    """Runs the destinations assigned to this dispatcher (``index`` of ``count``), following
    config changes: a new or changed document (re)starts its destination."""

    def __init__(
        self,
        redis_url: str,
        *,
        horizon_s: int,
        index: int = 0,
        count: int = 1,
        metrics: DeliveryMetrics | None = None,
        sealer: Sealer | None = None,
    ) -> None:
        self._redis_url = redis_url
        self._sealer = sealer  # opens the endpoint secrets the config store keeps sealed
        self._horizon_s = horizon_s
        self._index, self._count = index, count
        self._metrics = metrics or NoMetrics()
        self.running: dict[str, tuple[Target, Destination, asyncio.Task[None]]] = {}
        self.poisoned = 0  # entries dead-lettered because preparing their delivery kept raising
        self._profiles = ProfileStore(connect(redis_url))

    def owns(self, key: str) -> bool:
        return int(hashlib.sha256(key.encode()).hexdigest(), 16) % self._count == self._index

    async def run(self, stop: asyncio.Event) -> None:
        client = connect_async(self._redis_url)
        store = ConfigStore(connect(self._redis_url), sealer=self._sealer)
        version = -1
        try:
            while not stop.is_set():
                try:
                    current = await asyncio.to_thread(store.version)
                    if current != version:
                        _, docs = await asyncio.to_thread(store.snapshot)
                        await self._apply(Target.from_docs(docs), client)
                        version = current
                except (redis.ConnectionError, OSError):
                    logger.warning("dispatcher: Redis unavailable; retrying", exc_info=True)
                for key, (_, destination, task) in list(self.running.items()):
                    if task.done() and not destination.gone:  # a crashed loop: start it again
                        self.running.pop(key)
                        version = -1
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), CONFIG_POLL_S)
        finally:
            await asyncio.gather(*(halt(d, t) for _, d, t in self.running.values()))
            self.running.clear()
            await client.aclose()

    async def _apply(self, targets: dict[str, Target], client: aioredis.Redis) -> None:
        wanted = {k: t for k, t in targets.items() if self.owns(k)}
        for key in list(self.running):
            target, destination, task = self.running[key]
            if wanted.get(key) != target:
                await halt(destination, task)
                del self.running[key]
        for key, target in wanted.items():
            if key in self.running:
                continue
            state = await client.hgetall(keys.delivery_state(target.stream))
            if state.get(b"disabled") and int(state.get(b"version", 0)) == target.version:
                continue  # gone (410) until the document changes
            if state:
                await client.delete(keys.delivery_state(target.stream))
            destination = Destination(
                target,
                client,
                horizon_s=self._horizon_s,
                metrics=self._metrics,
                profiles=self._profiles,
                on_poison=self._poisoned,
            )
            self.running[key] = (target, destination, asyncio.create_task(destination.run(), name=key))

    def _poisoned(self, count: int) -> None:
        self.poisoned += count

    def status(self) -> dict[str, Any]:
        return {
            key: {"version": t.version, "delivered": d.delivered, "gone": d.gone}
            for key, (t, d, _) in self.running.items()
        }


def new_event_loop() -> asyncio.AbstractEventLoop:
    """The loop a dispatcher runs on: uvloop's where it is installed (it comes with
    ``uvicorn[standard]``), whose transports, timers and task switches cost a fraction of the
    standard loop's per request; the standard loop otherwise."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux and macOS
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()
