"""The HTTP API as one Ray Serve deployment with a FastAPI ingress (OpenAPI at ``/docs``).

Routes only authenticate, read the body within limits, hand off to ``runtime`` and map errors
(``serve/errors.py``). Blocking Redis work runs in the threadpool, never on the event loop.
"""

import time
from typing import Any

import httpx
import ray
import redis
from fastapi import Body, FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, PlainTextResponse
from ray import serve

from actors.coordinator import live_actors, recorded_assignment
from actors.metrics import metric
from runtime import metrics as m
from runtime.config.store import ConfigStore
from runtime.errors import BodyTooLarge, InputError
from runtime.ingest import Ingestor
from runtime.settings import EspSettings
from runtime.subscriptions import SubscriptionReader
from serve import errors

APP_NAME = "esp"
MAX_PULL_WAIT_S = 30.0
MAX_PULL_EVENTS = 10_000

app = FastAPI(
    title="ESP — real-time event strategy platform",
    version="0.1.0",
    description="Ingestion, configuration and subscription endpoints.",
)
errors.install(app)


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
        self.ingestor = Ingestor(self.settings, self.redis)
        self.config = ConfigStore(self.redis)
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
        if result.accepted:
            counter.inc(result.accepted, tags={"source": result.source, "outcome": "accepted", "reason": ""})
        if result.duplicates:
            counter.inc(result.duplicates, tags={"source": result.source, "outcome": "duplicate", "reason": ""})
        reasons: dict[str, int] = {}
        for r in result.rejected:
            reasons[r["reason"]] = reasons.get(r["reason"], 0) + 1
        for reason, count in reasons.items():
            counter.inc(count, tags={"source": result.source, "outcome": "rejected", "reason": reason})

    # --- configuration -----------------------------------------------------------------

    @app.put("/v1/config/{kind}/{name}", summary="Create or replace a config document")
    def put_config(self, kind: str, name: str, document: dict[str, Any] = Body(...)) -> dict[str, Any]:
        return self.config.put(document, kind=kind, name=name)

    @app.get("/v1/config/{kind}/{name}")
    def get_config(self, kind: str, name: str) -> dict[str, Any]:
        return self.config.get(kind, name)

    @app.delete("/v1/config/{kind}/{name}")
    def delete_config(self, kind: str, name: str) -> dict[str, Any]:
        return self.config.delete(kind, name)

    @app.get("/v1/config/{kind}")
    def list_config(self, kind: str) -> dict[str, Any]:
        return {"kind": kind, "items": self.config.list(kind)}

    # --- subscriptions -----------------------------------------------------------------

    def _subscription(self, name: str) -> None:
        self.config.get("subscription", name)

    @app.get("/v1/subscriptions/{name}/events", summary="Pull events (long poll)")
    def pull(
        self,
        name: str,
        max: int = Query(100, ge=1, le=MAX_PULL_EVENTS),
        wait: float = Query(0, ge=0, le=MAX_PULL_WAIT_S),
        consumer: str = Query("default", pattern=r"^[A-Za-z0-9._-]{1,64}$"),
    ) -> dict[str, Any]:
        self._subscription(name)
        result = self.subscriptions.pull(name, max_events=max, wait_ms=int(wait * 1000), consumer=consumer)
        if result["events"]:
            metric(m.PULLED).inc(len(result["events"]), tags={"subscription": name})
        return result

    @app.post("/v1/subscriptions/{name}/ack", summary="Acknowledge pulled events (idempotent)")
    def ack(self, name: str, body: dict[str, Any] = Body(...)) -> dict[str, Any]:
        self._subscription(name)
        ids = body.get("ack_ids", body.get("ids"))
        cursor = body.get("cursor")
        if ids is not None and (not isinstance(ids, list) or not all(isinstance(i, str) for i in ids)):
            raise InputError("ack_ids must be a list of strings", reason="invalid_ack_ids")
        acked = self.subscriptions.ack(name, ack_ids=ids, cursor=cursor)
        if acked:
            metric(m.ACKED).inc(acked, tags={"subscription": name})
        return {"acked": acked}

    @app.get("/v1/subscriptions/{name}", summary="Subscription backlog")
    def subscription_status(self, name: str) -> dict[str, Any]:
        self._subscription(name)
        return {"name": name, **self.subscriptions.backlog(name)}

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
