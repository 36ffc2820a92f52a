"""The HTTP API as one Ray Serve deployment with a FastAPI ingress (OpenAPI at ``/docs``).

Routes only authenticate, read the body within limits, hand off to ``runtime`` and map errors
(``serve/errors.py``). Blocking Redis work runs in the threadpool, never on the event loop.
"""

import time
from collections import Counter
from typing import Any

import httpx
import ray
import redis
import redis.asyncio as aioredis
from fastapi import Body, FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from ray import serve

from actors.coordinator import live_actors, recorded_assignment
from actors.metrics import metric
from runtime import keys
from runtime import metrics as m
from runtime.config.delivery import public_view
from runtime.config.store import ConfigStore
from runtime.consent import ConsentRecord
from runtime.contact.ledger import Ledger
from runtime.contact.requests import campaign_requests, optout_pairs
from runtime.deadletters import delivery_status, list_dead, replay_dead
from runtime.errors import BodyTooLarge, Conflict, InputError, NotFound
from runtime.identity import IdentityLink
from runtime.ingest import Ingestor
from runtime.outbox import Outbox, last_fires
from runtime.profiles import ProfileStore
from runtime.settings import EspSettings
from runtime.subscriptions import SubscriptionReader, authorize, check_entry_id, project
from runtime.topics import TopicRouter
from runtime.trace import trace_event
from serve import errors, sse

APP_NAME = "esp"
MAX_PULL_WAIT_S = 30.0
MAX_PULL_EVENTS = 10_000

app = FastAPI(
    title="ESP — real-time event strategy platform",
    version="0.1.0",
    description="Ingestion, configuration and subscription endpoints.",
)
errors.install(app)


def from_body(cls: Any, index: int, raw: Any) -> Any:
    """One item of a batch body as ``cls``; unknown or missing fields name the item's index."""
    if not isinstance(raw, dict):
        raise InputError(f"item {index}: expected an object, got {type(raw).__name__}", reason="invalid_item")
    known = set(cls.__dataclass_fields__)
    unknown = sorted(set(raw) - known)
    if unknown:
        raise InputError(f"item {index}: unknown field(s) {unknown}; expected {sorted(known)}", reason="invalid_item")
    try:
        return cls(**raw)
    except TypeError as exc:
        raise InputError(f"item {index}: {exc}", reason="invalid_item") from None


def _ids(body: dict[str, Any] | None) -> list[str] | None:
    ids = (body or {}).get("ids")
    if ids is not None and (not isinstance(ids, list) or not all(isinstance(i, str) for i in ids)):
        raise InputError("ids must be a list of dead letter ids", reason="invalid_ids")
    return ids


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refusing with 413 as soon as it is known to exceed ``limit``."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"body of {declared} bytes is over the limit of {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


@serve.deployment(name="api", ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=64)
@serve.ingress(app)
class EspApi:
    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = EspSettings(**settings)
        self.redis = redis.Redis.from_url(self.settings.effective_redis_url(), max_connections=128)
        self.aredis = aioredis.Redis.from_url(self.settings.effective_redis_url())  # SSE streams
        self.ingestor = Ingestor(self.settings, self.redis)
        self.config = ConfigStore(self.redis)
        self.profiles = ProfileStore(self.redis)
        self.ledger = Ledger(self.redis, horizon_s=self.settings.idempotency_horizon_s)
        self.outbox = Outbox(
            self.redis, horizon_s=self.settings.idempotency_horizon_s, maxlen=self.settings.subscription_maxlen
        )
        self.subscriptions = SubscriptionReader(
            self.redis, visibility_timeout_ms=int(self.settings.visibility_timeout_s * 1000)
        )

    # --- ingestion ---------------------------------------------------------------------

    @app.post("/v1/events", status_code=202, summary="Ingest events (JSON, array, NDJSON, CloudEvents, Arrow IPC)")
    async def ingest(self, request: Request) -> JSONResponse:
        started = time.perf_counter()
        status = 202
        try:
            source = await run_in_threadpool(
                self.ingestor.authenticate,
                request.headers.get("authorization"),
                request.headers.get("x-esp-source"),
            )
            body = await read_body(request, self.settings.max_body_bytes)
            result = await run_in_threadpool(self.ingestor.ingest, body, request.headers.get("content-type"), source)
            self._record_ingest(result)
            return JSONResponse(result.to_dict(), status_code=202)
        except Exception as exc:
            status = errors.status_of(exc)
            raise
        finally:
            metric(m.INGEST_REQUESTS).inc(1, tags={"status": str(status)})
            metric(m.INGEST_LATENCY).observe(time.perf_counter() - started)

    def _record_ingest(self, result: Any) -> None:
        counter = metric(m.INGEST_EVENTS)
        metric(m.INGEST_BATCH).observe(result.total)
        counts: Counter[tuple[str, str]] = Counter()
        counts["accepted", ""] += result.accepted
        counts["duplicate", ""] += result.duplicates
        counts["filtered", ""] += result.filtered
        for r in result.rejected:
            counts["rejected", r["reason"]] += 1
        for reason, n in result.dropped.items():
            counts["dropped", reason] += n
        for (outcome, reason), n in counts.items():
            if n:
                counter.inc(n, tags={"source": result.source, "outcome": outcome, "reason": reason})

    @app.get("/v1/events/{source}/{event_id}/trace", summary="Where an event went")
    def trace(self, source: str, event_id: str) -> dict[str, Any]:
        self.config.get("source", source)
        days = self.ingestor.horizon_days(source)
        return trace_event(self.redis, source, event_id, now_ms=int(time.time() * 1000), days=days)

    @app.get("/v1/decisions/{customer}", summary="Why a rule did or did not fire for a customer")
    async def decisions(self, customer: str, rule: str | None = None) -> dict[str, Any]:
        """The owning actor's live state per rule, with the rule's last fires (kept by the outbox)."""
        from actors.coordinator import owner_of

        if rule is not None:
            await run_in_threadpool(self.config.get, "rule", rule)
        actor = await run_in_threadpool(owner_of, self.redis, customer)
        contacts = await run_in_threadpool(self.ledger.recent, customer)
        state = actor.explain.remote(customer, rule)  # runs while Redis is read
        fires = await run_in_threadpool(last_fires, self.redis, customer, rule)
        answer = await state
        for entry in answer["rules"]:
            entry["last_fires"] = fires.get(entry["rule"], [])
        return {**answer, "contact_decisions": contacts}

    # --- contact policy ----------------------------------------------------------------

    @app.put("/v1/optouts", summary="Opt customers out of a channel, or of all ('*') (batch)")
    def put_optouts(self, entries: list[dict[str, Any]] = Body(...)) -> dict[str, Any]:
        return {"stored": self.ledger.opt_out(optout_pairs(entries))}

    @app.delete("/v1/optouts", summary="Take opt-outs back (batch)")
    def delete_optouts(self, entries: list[dict[str, Any]] = Body(...)) -> dict[str, Any]:
        return {"removed": self.ledger.opt_out(optout_pairs(entries), remove=True)}

    @app.post("/v1/campaigns/{name}/contacts", status_code=202, summary="Submit a batch campaign's contacts")
    def campaign_contacts(self, name: str, body: dict[str, Any] = Body(...)) -> dict[str, Any]:
        """The batch path into the contact policy: each contact competes with real-time offers
        and counts against the same caps; ids are deterministic per (campaign, run, customer,
        channel, template), so submitting a run again changes nothing."""
        self.config.get("campaign", name)
        publications = campaign_requests(name, body, now_ms=int(time.time() * 1000))
        _, docs = self.config.snapshot()
        router = TopicRouter.from_docs(docs, policy_shards=self.settings.policy_shards)
        accepted = self.outbox.publish(publications, router)
        return {"submitted": len(publications), "accepted": accepted, "duplicates": len(publications) - accepted}

    # --- configuration -----------------------------------------------------------------

    @app.put("/v1/config/{kind}/{name}", summary="Create or replace a config document")
    def put_config(self, kind: str, name: str, document: dict[str, Any] = Body(...)) -> dict[str, Any]:
        return self.config.put(document, kind=kind, name=name)

    @app.get("/v1/config/{kind}/{name}")
    def get_config(self, kind: str, name: str) -> dict[str, Any]:
        return public_view(kind, self.config.get(kind, name))

    @app.delete("/v1/config/{kind}/{name}")
    def delete_config(self, kind: str, name: str) -> dict[str, Any]:
        return self.config.delete(kind, name)

    @app.get("/v1/config/{kind}")
    def list_config(self, kind: str) -> dict[str, Any]:
        return {"kind": kind, "items": [public_view(kind, d) for d in self.config.list(kind)]}

    # --- reference data: identities, consents, profiles ---------------------------------

    @app.put("/v1/identities", summary="Link phone numbers and IMEIs to customers (batch)")
    def put_identities(self, links: list[dict[str, Any]] = Body(...)) -> dict[str, Any]:
        return {
            "stored": self.ingestor.identities.put([from_body(IdentityLink, i, raw) for i, raw in enumerate(links)])
        }

    @app.get("/v1/identities/{kind}/{identifier}", summary="Resolve one identifier now")
    def get_identity(self, kind: str, identifier: str) -> dict[str, Any]:
        customer = self.ingestor.identities.resolve(kind, [identifier], int(time.time() * 1000))[0]
        if customer is None:
            raise NotFound(f"no customer is linked to {kind} {identifier!r}")
        return {"kind": kind, "identifier": identifier, "customer": customer}

    @app.put("/v1/consents", summary="Record opt-ins and opt-outs (batch)")
    def put_consents(self, records: list[dict[str, Any]] = Body(...)) -> dict[str, Any]:
        return {"stored": self.ingestor.consents.put([from_body(ConsentRecord, i, r) for i, r in enumerate(records)])}

    @app.put("/v1/profiles/{customer}", summary="Set profile attributes and tags of a customer")
    def put_profile(self, customer: str, attributes: dict[str, Any] = Body(...)) -> dict[str, Any]:
        self.profiles.put(customer, attributes)
        return {"customer": customer, "attributes": len(attributes)}

    @app.get("/v1/profiles/{customer}")
    def get_profile(self, customer: str) -> dict[str, Any]:
        return {"customer": customer, "attributes": self.profiles.get_many([customer]).get(customer, {})}

    # --- quarantine ----------------------------------------------------------------------

    @app.get("/v1/quarantine", summary="Quarantined events, newest first")
    def list_quarantine(
        self,
        source: str | None = None,
        reason: str | None = None,
        limit: int = Query(100, ge=1, le=10_000),
        before: str | None = None,
    ) -> dict[str, Any]:
        items = self.ingestor.quarantine.list(source=source, reason=reason, limit=limit, before=before)
        return {"items": items, "total": self.ingestor.quarantine.count()}

    @app.get("/v1/quarantine/{qid}")
    def get_quarantined(self, qid: str) -> dict[str, Any]:
        return self.ingestor.quarantine.get(qid)

    @app.post("/v1/quarantine/replay", summary="Re-ingest quarantined events through the current config")
    def replay(
        self, source: str | None = None, reason: str | None = None, limit: int = Query(10_000, ge=1, le=10_000)
    ) -> dict[str, Any]:
        return self.ingestor.replay(source=source, reason=reason, limit=limit)

    # --- subscriptions (a subscription with a token answers only to it) -------------------

    def _subscription(self, name: str, request: Request, *, mode: str | None = None) -> dict[str, Any]:
        try:
            doc = self.config.get("subscription", name)
        except NotFound:
            raise NotFound(f"no subscription named {name!r}") from None
        authorize(doc, request.headers.get("authorization"))
        if mode is not None and doc.get("mode", "pull") != mode:
            raise Conflict(f"subscription {name!r} is delivered by {doc.get('mode')}, not {mode}", reason="wrong_mode")
        return doc

    @app.get("/v1/subscriptions", summary="The subscriptions this token may read")
    def list_subscriptions(self, request: Request) -> dict[str, Any]:
        mine = []
        for doc in self.config.list("subscription"):
            try:
                authorize(doc, request.headers.get("authorization"))
            except NotFound:
                continue
            mine.append(public_view("subscription", doc))
        return {"items": mine}

    @app.get("/v1/subscriptions/{name}/events", summary="Pull events (long poll)")
    def pull(
        self,
        name: str,
        request: Request,
        max: int = Query(100, ge=1, le=MAX_PULL_EVENTS),
        wait: float = Query(0, ge=0, le=MAX_PULL_WAIT_S),
        consumer: str = Query("default", pattern=r"^[A-Za-z0-9._-]{1,64}$"),
    ) -> dict[str, Any]:
        doc = self._subscription(name, request, mode="pull")
        result = self.subscriptions.pull(name, max_events=max, wait_ms=int(wait * 1000), consumer=consumer)
        if doc.get("fields"):
            result["events"] = [{**project(e, doc["fields"]), "ack_id": e["ack_id"]} for e in result["events"]]
        if result["events"]:
            metric(m.PULLED).inc(len(result["events"]), tags={"subscription": name})
        return result

    @app.get("/v1/subscriptions/{name}/stream", summary="Server-sent events (resume with Last-Event-ID)")
    async def stream(self, name: str, request: Request, last_event_id: str | None = None) -> StreamingResponse:
        doc = await run_in_threadpool(self._subscription, name, request, mode="sse")
        stream = keys.subscription_stream(name)
        resume = request.headers.get("last-event-id") or last_event_id
        position = check_entry_id(resume, "Last-Event-ID") if resume else await sse.start_position(self.aredis, stream)
        return StreamingResponse(
            sse.events(self.aredis, stream, position, doc.get("fields")),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @app.get("/v1/subscriptions/{name}/deadletters", summary="Events the webhook receiver never took")
    def subscription_dead(
        self, name: str, request: Request, limit: int = Query(100, ge=1, le=10_000), before: str | None = None
    ) -> dict[str, Any]:
        self._subscription(name, request)
        return list_dead(self.redis, keys.subscription_stream(name), limit=limit, before=before)

    @app.post("/v1/subscriptions/{name}/deadletters/replay", summary="Deliver dead letters again")
    def subscription_replay(
        self, name: str, request: Request, body: dict[str, Any] | None = Body(None)
    ) -> dict[str, Any]:
        self._subscription(name, request)
        ids = _ids(body)
        return {"replayed": replay_dead(self.redis, keys.subscription_stream(name), ids=ids)}

    @app.post("/v1/subscriptions/{name}/ack", summary="Acknowledge pulled events (idempotent)")
    def ack(self, name: str, request: Request, body: dict[str, Any] = Body(...)) -> dict[str, Any]:
        self._subscription(name, request, mode="pull")
        ids = body.get("ack_ids", body.get("ids"))
        cursor = body.get("cursor")
        if ids is not None and (not isinstance(ids, list) or not all(isinstance(i, str) for i in ids)):
            raise InputError("ack_ids must be a list of strings", reason="invalid_ack_ids")
        acked = self.subscriptions.ack(name, ack_ids=ids, cursor=cursor)
        if acked:
            metric(m.ACKED).inc(acked, tags={"subscription": name})
        return {"acked": acked}

    @app.get("/v1/subscriptions/{name}", summary="Subscription backlog and delivery status")
    def subscription_status(self, name: str, request: Request) -> dict[str, Any]:
        doc = self._subscription(name, request)
        stream = keys.subscription_stream(name)
        status = {"name": name, "mode": doc.get("mode", "pull"), **self.subscriptions.backlog(name)}
        return {**status, **delivery_status(self.redis, stream)}

    # --- channels (operator side) --------------------------------------------------------

    @app.get("/v1/channels/{name}", summary="Channel backlog and delivery status")
    def channel_status(self, name: str) -> dict[str, Any]:
        self.config.get("channel", name)
        return {"name": name, **delivery_status(self.redis, keys.channel_stream(name))}

    @app.get("/v1/channels/{name}/deadletters", summary="Notifications the gateway never took")
    def channel_dead(
        self, name: str, limit: int = Query(100, ge=1, le=10_000), before: str | None = None
    ) -> dict[str, Any]:
        self.config.get("channel", name)
        return list_dead(self.redis, keys.channel_stream(name), limit=limit, before=before)

    @app.post("/v1/channels/{name}/deadletters/replay", summary="Send dead letters again")
    def channel_replay(self, name: str, body: dict[str, Any] | None = Body(None)) -> dict[str, Any]:
        self.config.get("channel", name)
        return {"replayed": replay_dead(self.redis, keys.channel_stream(name), ids=_ids(body))}

    # --- operations --------------------------------------------------------------------

    @app.get("/healthz")
    def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz(self) -> JSONResponse:
        checks: dict[str, Any] = {}
        try:
            self.redis.ping()
            checks["redis"] = "ok"
            expected = len(recorded_assignment(self.redis))
            live = live_actors(self.redis, now_ms=int(time.time() * 1000))
            checks["partition_actors"] = f"{len(live)}/{expected} live"
            ready = expected > 0 and len(live) == expected
        except redis.RedisError as exc:
            checks["redis"] = f"unavailable: {exc}"
            ready = False
        return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)

    @app.get("/metrics", response_class=PlainTextResponse, summary="This node's Prometheus metrics")
    async def metrics(self) -> PlainTextResponse:
        url = f"http://{ray.util.get_node_ip_address()}:{self.settings.metrics_export_port}/metrics"
        async with httpx.AsyncClient(timeout=5) as client:
            response = await client.get(url)
        return PlainTextResponse(response.text, media_type="text/plain; version=0.0.4")


def build(settings: EspSettings) -> Any:
    return EspApi.options(num_replicas=settings.api_replicas).bind(settings.to_wire())
