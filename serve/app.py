"""The HTTP API as one Ray Serve deployment with a FastAPI ingress (OpenAPI at ``/docs``).

Routes only authenticate, read the body within limits, hand off to ``runtime`` and map errors
(``serve/errors.py``). Blocking Redis work runs in the threadpool, never on the event loop.
"""

import asyncio
import json
import logging
import time
from collections import Counter
from functools import partial
from typing import Any, Protocol

import httpx
import orjson
import ray
import redis
from fastapi import Body, Depends, FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from ray import serve
from ray.serve.schema import LoggingConfig

from runtime import keys
from runtime import metrics as m
from runtime.config.store import ConfigStore
from runtime.errors import AuthError, BodyTooLarge, Conflict, InputError, NotFound
from runtime.events.consent import ConsentRecord
from runtime.events.identity import IdentityLink
from runtime.events.profiles import ProfileStore
from runtime.events.trace import trace_event
from runtime.policy.ledger import Ledger
from runtime.policy.requests import campaign_requests, optout_pairs
from runtime.process_gc import tune_gc
from runtime.process_logging import configure_process, fields, log_context
from runtime.redis_client import connect, connect_async
from runtime.security.audit import AuditLog, diff
from runtime.security.tokens import Principal, TokenStore
from runtime.settings import EspSettings
from runtime.sources.ingest import Ingestor
from runtime.subscriptions.deadletters import delivery_status, list_dead, replay_dead
from runtime.subscriptions.models import public_view
from runtime.subscriptions.outbox import Outbox, last_fires
from runtime.subscriptions.pull import SubscriptionReader, check_entry_id, project, token_matches
from runtime.subscriptions.topics import TopicRouter
from serve import access, errors, hosts, limits, sse
from serve import console as operator_console
from serve import schemas as s
from serve.exposition import esp_series
from serve.metrics import metric, observe

logger = logging.getLogger(__name__)

APP_NAME = "esp"
MAX_PULL_WAIT_S = 30.0
MAX_PULL_EVENTS = 10_000
MAX_WAITING = 128  # open SSE streams and waiting long polls per replica; more get 429
MAX_LOGGED_REJECTIONS = 10  # quarantined events logged one by one per request; the rest in one line
MAX_ONGOING = MAX_WAITING + 128  # so waiting subscribers always leave room for ingestion and health checks


def max_block_s(sse_keepalive_s: float) -> float:
    """A blocking Redis read's time limit (long polls, an SSE stream's wait for its next
    keep-alive), with a margin."""
    return max(MAX_PULL_WAIT_S, sse_keepalive_s) + 10


# Every function a route calls is defined above the ingress class: Serve pickles the app's routes
# by value when the class is decorated, so a helper defined below would not exist in the replica.
app = FastAPI(
    title="ESP — real-time event strategy platform",
    version="0.1.0",
    description="Ingestion, configuration and subscription endpoints. Every route but /healthz, /readyz and "
    "POST /v1/events needs 'Authorization: Bearer <token>' (an operator token, or a subscriber token on its "
    "own subscription).",
    dependencies=[Depends(access.check)],
    responses=s.ERRORS,
)
errors.install(app)
operator_console.install(app)
app.include_router(operator_console.router)  # the console's pages: methods of ConsoleRoutes, a base of EspApi


@app.exception_handler(RequestValidationError)
async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's own parameter and body checks answer like every other refusal, with a reason
    (FastAPI's ``detail`` list is kept, without the offending input: it may be a secret, NaN or
    a lone surrogate, which could not even be encoded). ASCII-escaped, so any text is valid."""
    detail = jsonable_encoder([{k: v for k, v in e.items() if k != "input"} for e in exc.errors()])
    first = detail[0] if detail else {}
    where = ".".join(str(p) for p in first.get("loc", ()))
    body = {"reason": "invalid_request", "message": f"{where}: {first.get('msg', 'invalid')}", "detail": detail}
    return Response(json.dumps(body, default=str), status_code=422, media_type="application/json")


app.add_middleware(limits.BodyLimit, limit=lambda: access.replica().settings.max_api_body_bytes)
app.add_middleware(hosts.HostAllowlist, allowed=lambda: hosts.allowed_hosts(access.replica().settings))  # runs first


class PartitionDirectory(Protocol):
    """Where customers' state lives, as the API needs to know it. The platform passes one to
    the deployment (``actors.directory``): the API never imports the actors."""

    def owner(self, customer: str) -> Any:
        """The handle of the partition actor holding ``customer``'s state (raises ``not_ready``)."""
        ...

    def liveness(self, now_ms: int) -> tuple[int, int]:
        """(partition actors with a recent heartbeat, partition actors started)."""
        ...


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


def _may_use(doc: dict[str, Any], caller: access.Caller) -> bool:
    if caller.principal is not None:
        return True
    return caller.credential is not None and token_matches(doc, caller.credential)


def _sample(customers: Any, n: int = 20) -> list[str]:
    """The first few customers a batch write touched, for the audit record."""
    out: list[str] = []
    for customer in customers:
        if len(out) >= n:
            break
        out.append(customer)
    return out


def _reaches_internal(document: Any) -> bool:
    """Whether a document marks a webhook or channel endpoint ``internal`` (admin only)."""
    if not isinstance(document, dict):
        return False
    return any(
        isinstance(document.get(k), dict) and document[k].get("internal") is True for k in ("webhook", "endpoint")
    )


def _comparable(kind: str, record: dict[str, Any] | None) -> dict[str, Any]:
    """A stored document as the audit diffs it: secrets redacted, bookkeeping left out."""
    if record is None:
        return {}
    shown = public_view(kind, record)
    return {k: v for k, v in shown.items() if k not in ("version", "updated_at")}


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


@serve.deployment(name="api", ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=MAX_ONGOING)
@serve.ingress(app)
class EspApi(operator_console.ConsoleRoutes):
    def __init__(self, settings: dict[str, Any], directory: PartitionDirectory) -> None:
        self.settings = EspSettings(**settings)
        configure_process("esp-api", self.settings)
        tune_gc()
        self.directory = directory
        self.redis = connect(self.settings.effective_redis_url(), max_connections=128)
        # SSE streams and long polls block in Redis for up to max_block_s: past redis-py's 5 s default
        self.aredis = connect_async(
            self.settings.effective_redis_url(),
            socket_timeout=max_block_s(self.settings.sse_keepalive_s),
            max_connections=2 * MAX_WAITING,
        )  # each waiting subscriber holds one connection while it blocks
        self.ingestor = Ingestor(self.settings, self.redis)
        self.config = ConfigStore(self.redis, history=self.settings.config_history, sealer=self.settings.sealer())
        self.tokens = TokenStore(self.redis, self.settings.server_secret().encode()) if self.settings.auth else None
        self.guard = access.Guard(self.tokens)
        self.audit = AuditLog(self.redis, maxlen=self.settings.audit_maxlen)
        self.waiting = asyncio.Semaphore(MAX_WAITING)
        self.profiles = ProfileStore(self.redis)
        self.ledger = Ledger(self.redis, horizon_s=self.settings.idempotency_horizon_s)
        self.outbox = Outbox(
            self.redis,
            partitions=self.settings.partitions,
            horizon_s=self.settings.idempotency_horizon_s,
            maxlen=self.settings.subscription_maxlen,
        )
        self._routes: tuple[int, TopicRouter] = (-1, TopicRouter({}))  # (config version, its router)
        self._appends_counted = 0  # the group commit's appends already in esp_log_appends_total
        self.subscriptions = SubscriptionReader(
            self.redis, visibility_timeout_ms=int(self.settings.visibility_timeout_s * 1000)
        )

    # --- ingestion ---------------------------------------------------------------------

    @app.post(
        "/v1/events",
        status_code=202,
        response_model=s.IngestAnswer,
        summary="Ingest events (JSON, array, NDJSON, CloudEvents, Arrow IPC)",
        openapi_extra=s.INGEST_BODY,
    )
    async def ingest(self, request: Request) -> JSONResponse:
        started = time.perf_counter()
        status, source = 202, ""  # source stays empty when the request names none we accept
        arrival = self.ingestor.appender.arrive()  # from now on an append about to start waits for it a little
        try:
            source, version = await run_in_threadpool(
                self.ingestor.authenticate_at,
                request.headers.get("authorization"),
                request.headers.get("x-esp-source"),
            )
            body = await read_body(request, self.settings.max_body_bytes)
            result = await run_in_threadpool(
                partial(self.ingestor.ingest, config_version=version, arrival=arrival),
                body,
                request.headers.get("content-type"),
                source,
            )
            self._record_ingest(result)
            return JSONResponse(result.to_dict(), status_code=202)
        except Exception as exc:
            status = errors.status_of(exc)
            with log_context(source=source or None):  # the credential is never logged, nor any header
                logger.log(logging.WARNING if status >= 500 else logging.INFO, "ingest refused (%d): %s", status, exc)
            raise
        finally:
            self.ingestor.appender.leave(arrival)
            metric(m.INGEST_REQUESTS).inc(1, tags={"source": source, "status": str(status)})
            observe(m.INGEST_LATENCY, time.perf_counter() - started)

    def _record_ingest(self, result: Any) -> None:
        for rejected in result.rejected[:MAX_LOGGED_REJECTIONS]:  # each one is in the quarantine
            logger.warning(
                "event %s of source %s quarantined (%s): %s",
                rejected["id"],
                result.source,
                rejected["reason"],
                rejected["message"],
                extra=fields(event_id=rejected["id"], source=result.source, reason=rejected["reason"]),
            )
        if len(result.rejected) > MAX_LOGGED_REJECTIONS:
            logger.warning(
                "%d more events of source %s quarantined in the same request",
                len(result.rejected) - MAX_LOGGED_REJECTIONS,
                result.source,
                extra=fields(source=result.source),
            )
        counter = metric(m.INGEST_EVENTS)
        observe(m.INGEST_BATCH, result.total)
        appends = self.ingestor.appender.appends  # a group's requests come back one after the other
        if appends > self._appends_counted:
            metric(m.LOG_APPENDS).inc(appends - self._appends_counted)
            self._appends_counted = appends
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

    @app.get(
        "/v1/events/{source}/{event_id}/trace",
        summary="Where an event went",
        response_model_exclude_unset=True,
        response_model=s.Trace,
    )
    def trace(self, source: str, event_id: str) -> dict[str, Any]:
        self.config.get("source", source)
        days = self.ingestor.horizon_days(source)
        return trace_event(
            self.redis, source, event_id, now_ms=int(time.time() * 1000), days=days, partitions=self.settings.partitions
        )

    @app.get(
        "/v1/decisions/{customer}",
        summary="Why a rule did or did not fire for a customer",
        response_model_exclude_unset=True,
        response_model=s.Decisions,
    )
    async def decisions(self, customer: str, rule: str | None = None) -> dict[str, Any]:
        """The owning actor's live state per rule, with the rule's last fires (kept by the outbox)."""
        if rule is not None:
            await run_in_threadpool(self.config.get, "rule", rule)
        actor = await run_in_threadpool(self.directory.owner, customer)
        contacts = await run_in_threadpool(self.ledger.recent, customer)
        state = actor.explain.remote(customer, rule)  # runs while Redis is read
        fires = await run_in_threadpool(
            partial(last_fires, self.redis, customer, partitions=self.settings.partitions, rule=rule)
        )
        answer = await state
        for entry in answer["rules"]:
            entry["last_fires"] = fires.get(entry["rule"], [])
        return {**answer, "contact_decisions": contacts}

    # --- contact policy ----------------------------------------------------------------

    @app.put("/v1/optouts", summary="Opt customers out of a channel, or of all ('*') (batch)", response_model=s.Stored)
    def put_optouts(self, request: Request, entries: s.OptOutBatch) -> dict[str, Any]:
        pairs = optout_pairs(entries)
        stored = self.ledger.opt_out(pairs)
        self._audit(
            request, "optout.put", "optouts", {"entries": len(pairs), "customers": _sample(c for c, _ in pairs)}
        )
        return {"stored": stored}

    @app.delete("/v1/optouts", summary="Take opt-outs back (batch)", response_model=s.Removed)
    def delete_optouts(self, request: Request, entries: s.OptOutBatch) -> dict[str, Any]:
        pairs = optout_pairs(entries)
        removed = self.ledger.opt_out(pairs, remove=True)
        detail = {"entries": len(pairs), "customers": _sample(c for c, _ in pairs)}
        self._audit(request, "optout.delete", "optouts", detail)
        return {"removed": removed}

    @app.post(
        "/v1/campaigns/{name}/contacts",
        status_code=202,
        summary="Submit a batch campaign's contacts",
        response_model=s.CampaignSubmitted,
    )
    def campaign_contacts(self, name: str, request: Request, body: s.CampaignBody) -> dict[str, Any]:
        """The batch path into the contact policy: each contact competes with real-time offers
        and counts against the same caps; ids are deterministic per (campaign, run, customer,
        channel, template), so submitting a run again changes nothing."""
        self.config.get("campaign", name)
        publications = campaign_requests(name, body, now_ms=int(time.time() * 1000))
        accepted = self.outbox.publish(publications, self._router())
        detail = {"run": body.get("run"), "submitted": len(publications), "accepted": accepted}
        self._audit(request, "campaign.submit", f"campaign/{name}", detail)
        return {"submitted": len(publications), "accepted": accepted, "duplicates": len(publications) - accepted}

    def _router(self) -> TopicRouter:
        """The router of the current config snapshot, built once per config version."""
        version, router = self._routes
        if self.config.version() != version:
            version, docs = self.config.snapshot()
            router = TopicRouter.from_docs(docs, policy_shards=self.settings.policy_shards)
            self._routes = (version, router)
        return router

    # --- configuration -----------------------------------------------------------------

    @app.put(
        "/v1/config/{kind}/{name}",
        summary="Create or replace a config document",
        response_model_exclude_unset=True,
        response_model=s.ConfigChange,
    )
    def put_config(
        self,
        kind: str,
        name: str,
        request: Request,
        document: dict[str, Any] = Body(..., openapi_examples=s.CONFIG_EXAMPLES, description=s.CONFIG_DOCUMENT),
    ) -> dict[str, Any]:
        caller = self._principal(request)
        if _reaches_internal(document) and not caller.can("admin"):
            raise AuthError("only an admin may point a destination at an internal address", reason="insufficient_role")
        before = self.config.find(kind, name)
        result = self.config.put(document, kind=kind, name=name)
        after = self.config.get(kind, name)
        changes = diff(_comparable(kind, before), _comparable(kind, after))
        self._audit(request, "config.put", f"{kind}/{name}", {"version": result["version"], "changes": changes})
        return result

    @app.get(
        "/v1/config/{kind}/{name}", summary="One config document (secrets redacted)", response_model=s.ConfigDocument
    )
    def get_config(self, kind: str, name: str) -> dict[str, Any]:
        return public_view(kind, self.config.get(kind, name))

    @app.get(
        "/v1/config/{kind}/{name}/history",
        summary="Kept versions of a document, oldest first",
        response_model=s.ConfigHistory,
    )
    def config_history(self, kind: str, name: str) -> dict[str, Any]:
        return {"kind": kind, "name": name, "items": self.config.history(kind, name)}

    @app.delete(
        "/v1/config/{kind}/{name}",
        summary="Delete a config document",
        response_model_exclude_unset=True,
        response_model=s.ConfigChange,
    )
    def delete_config(self, kind: str, name: str, request: Request) -> dict[str, Any]:
        result = self.config.delete(kind, name)
        self._audit(request, "config.delete", f"{kind}/{name}", {"version": result["version"]})
        return result

    @app.get("/v1/config/{kind}", summary="Every document of a kind (secrets redacted)", response_model=s.ConfigList)
    def list_config(self, kind: str) -> dict[str, Any]:
        return {"kind": kind, "items": [public_view(kind, d) for d in self.config.list(kind)]}

    # --- reference data: identities, consents, profiles ---------------------------------

    @app.put("/v1/identities", summary="Link phone numbers and IMEIs to customers (batch)", response_model=s.Stored)
    def put_identities(self, request: Request, links: s.IdentityBatch) -> dict[str, Any]:
        parsed = [from_body(IdentityLink, i, raw) for i, raw in enumerate(links)]
        stored = self.ingestor.identities.put(parsed)
        detail = {"links": stored, "customers": _sample(link.customer for link in parsed)}
        self._audit(request, "identity.put", "identities", detail)
        return {"stored": stored}

    @app.get("/v1/identities/{kind}/{identifier}", summary="Resolve one identifier now", response_model=s.Identity)
    def get_identity(self, kind: str, identifier: str) -> dict[str, Any]:
        customer = self.ingestor.identities.resolve(kind, [identifier], int(time.time() * 1000))[0]
        if customer is None:
            raise NotFound(f"no customer is linked to {kind} {identifier!r}")
        return {"kind": kind, "identifier": identifier, "customer": customer}

    @app.put("/v1/consents", summary="Record opt-ins and opt-outs (batch)", response_model=s.Stored)
    def put_consents(self, request: Request, records: s.ConsentBatch) -> dict[str, Any]:
        parsed = [from_body(ConsentRecord, i, r) for i, r in enumerate(records)]
        stored = self.ingestor.consents.put(parsed)
        self._audit(
            request, "consent.put", "consents", {"records": stored, "customers": _sample(r.customer for r in parsed)}
        )
        return {"stored": stored}

    @app.put(
        "/v1/profiles/{customer}",
        summary="Set profile attributes and tags of a customer",
        response_model=s.ProfileWritten,
    )
    def put_profile(
        self,
        customer: str,
        request: Request,
        attributes: dict[str, Any] = Body(..., openapi_examples=s.PROFILE_EXAMPLES),
    ) -> dict[str, Any]:
        self.profiles.put(customer, attributes)
        self._audit(request, "profile.put", f"profile/{customer}", {"attributes": sorted(attributes)})
        return {"customer": customer, "attributes": len(attributes)}

    @app.get("/v1/profiles/{customer}", summary="A customer's profile attributes and tags", response_model=s.Profile)
    def get_profile(self, customer: str) -> dict[str, Any]:
        return {"customer": customer, "attributes": self.profiles.get_many([customer]).get(customer, {})}

    # --- quarantine ----------------------------------------------------------------------

    @app.get("/v1/quarantine", summary="Quarantined events, newest first", response_model=s.QuarantinePage)
    def list_quarantine(
        self,
        source: str | None = None,
        reason: str | None = None,
        limit: int = Query(100, ge=1, le=10_000),
        before: str | None = None,
    ) -> dict[str, Any]:
        items = self.ingestor.quarantine.list(source=source, reason=reason, limit=limit, before=before)
        return {"items": items, "total": self.ingestor.quarantine.count()}

    @app.get(
        "/v1/quarantine/{qid}", summary="One quarantined event with its raw payload", response_model=s.QuarantineEntry
    )
    def get_quarantined(self, qid: str) -> dict[str, Any]:
        return self.ingestor.quarantine.get(qid)

    @app.post(
        "/v1/quarantine/replay",
        summary="Re-ingest quarantined events through the current config",
        response_model_exclude_unset=True,
        response_model=s.ReplayTotals,
    )
    def replay(
        self,
        request: Request,
        source: str | None = None,
        reason: str | None = None,
        limit: int = Query(10_000, ge=1, le=10_000),
    ) -> dict[str, Any]:
        result = self.ingestor.replay(source=source, reason=reason, limit=limit)
        detail = {"source": source, "reason": reason, "limit": limit, "result": result}
        self._audit(request, "quarantine.replay", "quarantine", detail)
        return result

    # --- subscriptions (a subscription with a token answers only to it) -------------------

    def _subscription(self, name: str, request: Request, *, mode: str | None = None) -> dict[str, Any]:
        """The subscription, if the caller may use it: an operator token (its role was checked
        by the route's access), or the subscription's own subscriber token. Anyone else is told
        it does not exist, so tokens cannot probe for names."""
        doc = self.config.find("subscription", name)
        if doc is None or not _may_use(doc, request.state.caller):
            raise NotFound(f"no subscription named {name!r}")
        if mode is not None and doc.get("mode", "pull") != mode:
            raise Conflict(f"subscription {name!r} is delivered by {doc.get('mode')}, not {mode}", reason="wrong_mode")
        return doc

    @app.get("/v1/subscriptions", summary="The subscriptions this token may read", response_model=s.SubscriptionList)
    def list_subscriptions(self, request: Request) -> dict[str, Any]:
        caller = request.state.caller
        docs = self.config.list("subscription")
        return {"items": [public_view("subscription", d) for d in docs if _may_use(d, caller)]}

    @app.get("/v1/subscriptions/{name}/events", summary="Pull events (long poll)", response_model=s.Pulled)
    async def pull(
        self,
        name: str,
        request: Request,
        max: int = Query(100, ge=1, le=MAX_PULL_EVENTS),
        wait: float = Query(0, ge=0, le=MAX_PULL_WAIT_S),
        consumer: str = Query("default", pattern=r"^[A-Za-z0-9._-]{1,64}$"),
    ) -> dict[str, Any]:
        doc = await run_in_threadpool(self._subscription, name, request, mode="pull")
        async with self._waiting(wait > 0):
            result = await self.subscriptions.pull_async(
                self.aredis, name, max_events=max, wait_ms=int(wait * 1000), consumer=consumer
            )
        if doc.get("fields"):
            result["events"] = [{**project(e, doc["fields"]), "ack_id": e["ack_id"]} for e in result["events"]]
        if result["events"]:
            metric(m.PULLED).inc(len(result["events"]), tags={"subscription": name})
        return result

    @app.get(
        "/v1/subscriptions/{name}/stream",
        summary="Server-sent events (resume with Last-Event-ID)",
        response_class=StreamingResponse,
        responses={200: {"description": "An endless text/event-stream", "content": {"text/event-stream": {}}}},
    )
    async def stream(self, name: str, request: Request, last_event_id: str | None = None) -> StreamingResponse:
        doc = await run_in_threadpool(self._subscription, name, request, mode="sse")
        stream = keys.subscription_stream(name)
        resume = request.headers.get("last-event-id") or last_event_id
        position = check_entry_id(resume, "Last-Event-ID") if resume else await sse.start_position(self.aredis, stream)
        slot = self._waiting(True)
        await slot.__aenter__()
        return StreamingResponse(
            limits.released(
                sse.events(self.aredis, stream, position, doc.get("fields"), keepalive_s=self.settings.sse_keepalive_s),
                slot,
            ),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    def _waiting(self, waits: bool) -> limits.Slot:
        """A place among the replica's waiting subscribers (SSE streams, long polls): refused
        with 429 when all are taken, so they can never hold every request slot."""
        return limits.Slot(self.waiting if waits else None, what="waiting subscribers")

    @app.get(
        "/v1/subscriptions/{name}/deadletters",
        summary="Events the webhook receiver never took",
        response_model=s.DeadLetters,
    )
    def subscription_dead(
        self, name: str, request: Request, limit: int = Query(100, ge=1, le=10_000), before: str | None = None
    ) -> dict[str, Any]:
        self._subscription(name, request)
        return list_dead(self.redis, keys.subscription_stream(name), limit=limit, before=before)

    @app.post(
        "/v1/subscriptions/{name}/deadletters/replay", summary="Deliver dead letters again", response_model=s.Replayed
    )
    def subscription_replay(self, name: str, request: Request, body: s.ReplayBody = None) -> dict[str, Any]:
        self._subscription(name, request)
        replayed = replay_dead(self.redis, keys.subscription_stream(name), ids=_ids(body))
        self._audit(request, "deadletter.replay", f"subscription/{name}", {"replayed": replayed})
        return {"replayed": replayed}

    @app.post("/v1/subscriptions/{name}/ack", summary="Acknowledge pulled events (idempotent)", response_model=s.Acked)
    def ack(self, name: str, request: Request, body: s.AckBody) -> dict[str, Any]:
        self._subscription(name, request, mode="pull")
        ids = body.get("ack_ids", body.get("ids"))
        cursor = body.get("cursor")
        if ids is not None and (not isinstance(ids, list) or not all(isinstance(i, str) for i in ids)):
            raise InputError("ack_ids must be a list of strings", reason="invalid_ack_ids")
        if cursor is not None and not isinstance(cursor, str):
            raise InputError("cursor must be an ack id string like '1700000000000-0'", reason="invalid_ack_id")
        acked = self.subscriptions.ack(name, ack_ids=ids, cursor=cursor)
        if acked:
            metric(m.ACKED).inc(acked, tags={"subscription": name})
        return {"acked": acked}

    @app.get(
        "/v1/subscriptions/{name}",
        summary="Subscription backlog and delivery status",
        response_model=s.SubscriptionStatus,
    )
    def subscription_status(self, name: str, request: Request) -> dict[str, Any]:
        doc = self._subscription(name, request)
        stream = keys.subscription_stream(name)
        status = {"name": name, "mode": doc.get("mode", "pull"), **self.subscriptions.backlog(name)}
        return {**status, **delivery_status(self.redis, stream)}

    # --- channels (operator side) --------------------------------------------------------

    @app.get("/v1/channels/{name}", summary="Channel backlog and delivery status", response_model=s.DeliveryStatus)
    def channel_status(self, name: str) -> dict[str, Any]:
        self.config.get("channel", name)
        return {"name": name, **delivery_status(self.redis, keys.channel_stream(name))}

    @app.get(
        "/v1/channels/{name}/deadletters", summary="Notifications the gateway never took", response_model=s.DeadLetters
    )
    def channel_dead(
        self, name: str, limit: int = Query(100, ge=1, le=10_000), before: str | None = None
    ) -> dict[str, Any]:
        self.config.get("channel", name)
        return list_dead(self.redis, keys.channel_stream(name), limit=limit, before=before)

    @app.post("/v1/channels/{name}/deadletters/replay", summary="Send dead letters again", response_model=s.Replayed)
    def channel_replay(self, name: str, request: Request, body: s.ReplayBody = None) -> dict[str, Any]:
        self.config.get("channel", name)
        replayed = replay_dead(self.redis, keys.channel_stream(name), ids=_ids(body))
        self._audit(request, "deadletter.replay", f"channel/{name}", {"replayed": replayed})
        return {"replayed": replayed}

    # --- operator tokens and the audit trail ---------------------------------------------

    @app.get("/v1/tokens", summary="Operator tokens (never their secrets)", response_model=s.TokenList)
    def list_tokens(self) -> dict[str, Any]:
        return {"items": self._token_store().list()}

    @app.post(
        "/v1/tokens",
        status_code=201,
        summary="Create an operator token; the answer is the only copy of it",
        response_model=s.TokenCreated,
    )
    def create_token(self, request: Request, body: s.TokenRequest) -> dict[str, Any]:
        token, record = self._token_store().create(body.name, body.role, expires_in_s=body.expires_in_s)
        self._audit(request, "token.create", f"token/{body.name}", record)
        return {**record, "token": token}

    @app.delete("/v1/tokens/{name}", summary="Revoke an operator token", response_model=s.TokenRecord)
    def revoke_token(self, name: str, request: Request) -> dict[str, Any]:
        record = self._token_store().revoke(name)
        self._audit(request, "token.revoke", f"token/{name}", record)
        return record

    @app.get("/v1/audit", summary="The audit trail, newest first", response_model=s.AuditPage)
    def audit_trail(
        self,
        action: str | None = Query(None, max_length=64),
        who: str | None = Query(None, max_length=64),
        target: str | None = Query(None, max_length=300),
        since_ms: int | None = Query(None, ge=0, le=2**53),
        limit: int = Query(100, ge=1, le=10_000),
        before: str | None = Query(None, max_length=41),
    ) -> dict[str, Any]:
        return self.audit.list(action=action, who=who, target=target, since_ms=since_ms, limit=limit, before=before)

    def _token_store(self) -> TokenStore:
        if self.tokens is None:
            raise Conflict("tokens are not used: this ESP runs without auth (--no-auth)", reason="auth_disabled")
        return self.tokens

    def _principal(self, request: Request) -> Principal:
        principal = request.state.caller.principal
        assert principal is not None, "operator routes always have a principal"
        return principal

    def _audit(self, request: Request, action: str, target: str, detail: Any) -> None:
        self.audit.record(self._principal(request), action, target, remote=request.state.caller.remote, detail=detail)

    # --- operations --------------------------------------------------------------------

    @app.get("/healthz", summary="The API answers", response_model=s.Health)
    def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        response_model=s.Ready,
        summary="Redis and every partition actor are up",
        responses={503: {"model": s.Ready, "description": "Not ready (same body)"}},
    )
    def readyz(self) -> JSONResponse:
        checks: dict[str, Any] = {}
        try:
            self.redis.ping()
            checks["redis"] = "ok"
            live, expected = self.directory.liveness(int(time.time() * 1000))
            checks["partition_actors"] = f"{live}/{expected} live"
            ready = expected > 0 and live == expected
        except redis.RedisError as exc:
            checks["redis"] = f"unavailable: {exc}"
            ready = False
        return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)

    @app.get("/v1/status", summary="Each partition's event-time clock: watermark, held events, how late events arrive")
    def partition_status(self) -> dict[str, Any]:
        raw = self.redis.hgetall(keys.PARTITION_STATUS)
        partitions = {int(p): orjson.loads(v) for p, v in raw.items()}
        return {"partitions": {str(p): partitions[p] for p in sorted(partitions)}}

    @app.get("/metrics", response_class=PlainTextResponse, summary="This node's ESP metrics (esp_*), for Prometheus")
    async def metrics(self) -> PlainTextResponse:
        """ESP's series from this node's Ray metrics agent, named ``esp_*`` (``serve/exposition.py``)."""
        url = f"http://{ray.util.get_node_ip_address()}:{self.settings.metrics_export_port}/metrics"
        async with httpx.AsyncClient(timeout=5) as client:
            response = await client.get(url)
        return PlainTextResponse(esp_series(response.text), media_type="text/plain; version=0.0.4")


def serve_logging(settings: EspSettings) -> LoggingConfig:
    """Ray Serve's own lines (access log, replica and controller events) in ESP's format and
    level; they go to ``logs/serve/`` of the Ray session (``docs/operations/logs.md``)."""
    return LoggingConfig(encoding="JSON" if settings.log_format == "json" else "TEXT", log_level=settings.log_level)


def build(settings: EspSettings, directory: PartitionDirectory) -> Any:
    """The deployment, given where the partition actors are (``actors.directory``)."""
    options = {"num_replicas": settings.api_replicas, "logging_config": serve_logging(settings)}
    return EspApi.options(**options).bind(settings.to_wire(), directory)
