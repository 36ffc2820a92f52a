"""A small HTTP client for ESP's API: used by the CLI, the demo, the benchmark and the tests.

Sending retries a whole batch on 429, 5xx (honouring ``Retry-After``) and connection errors;
because event ids are idempotency keys, a retried batch never doubles an event.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

from runtime.errors import EspError

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})  # safe: event ids make retries idempotent


@dataclass(slots=True)
class SendReport:
    accepted: int = 0
    duplicates: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)
    requests: int = 0
    retries: int = 0
    seconds: float = 0.0

    @property
    def events_per_s(self) -> float:
        total = self.accepted + self.duplicates + len(self.rejected)
        return total / self.seconds if self.seconds else 0.0


def batched(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def default_token() -> str | None:
    """The operator token the CLI uses when none is given: ``ESP_TOKEN``, else the bootstrap
    admin token that ``esp up`` wrote to ``<state dir>/admin.token``."""
    if token := os.environ.get("ESP_TOKEN"):
        return token
    path = Path(os.environ.get("ESP_STATE_DIR", ".esp")) / "admin.token"
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


class EspClient:
    """``key`` (a source key) or ``source`` (auth off) is sent when posting events; ``token``
    (an operator or subscriber token; default :func:`default_token`) on every other call."""

    def __init__(
        self,
        base_url: str,
        *,
        source: str | None = None,
        key: str | None = None,
        token: str | None = None,
        timeout_s: float = 60.0,
    ) -> None:
        token = token or default_token()
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._ingest_headers = {"Authorization": f"Bearer {key}"} if key else {"X-ESP-Source": source} if source else {}
        self.http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout_s)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> EspClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Any API call; errors become :class:`EspError` with the answer's reason."""
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise EspError(f"ESP is not reachable at {self.http.base_url}: {exc}", reason="unreachable") from None
        return self._json(response)

    def _json(self, response: httpx.Response) -> Any:
        if response.status_code >= 400:
            try:
                body = response.json()
            except ValueError:
                body = {"reason": "http_error", "message": response.text[:500]}
            raise EspError(f"{response.status_code} {body.get('message', body)}", reason=str(body.get("reason")))
        return response.json()

    # --- events --------------------------------------------------------------------------

    def post_body(self, body: bytes, content_type: str, *, max_retries: int = 60) -> tuple[dict[str, Any], int]:
        """POST one body, retrying while the platform asks to back off. Returns (answer, retries).

        A plain loop on purpose, not stamina (tried, and kept out): its retries are driven by
        exceptions, so each retryable status must be raised as one and read back in a backoff
        hook to honour ``Retry-After``; it needs ``attempts=max_retries + 1`` and
        ``timeout=None`` to match this loop; the answer must be returned inside the attempt's
        ``with`` (after it, a retried attempt reads an unset variable); and its default hooks
        print ``stamina.retry_scheduled`` to stderr on every retry in the CLI and add a
        ``stamina_retries`` metric to the process's Prometheus registry. It took 45 lines
        for these 15.
        """
        retries = 0
        while True:
            try:
                response = self.http.send(self._ingest_request(body, content_type))
            except httpx.TransportError:
                response = None
            if response is not None and response.status_code not in RETRY_STATUSES:
                return self._json(response), retries
            if retries >= max_retries:
                status = response.status_code if response is not None else "no connection"
                raise EspError(f"gave up after {retries} retries ({status})", reason="unavailable")
            retries += 1
            delay = float(response.headers.get("Retry-After", 1)) if response is not None else 1.0
            time.sleep(min(delay, 5.0))

    def _ingest_request(self, body: bytes, content_type: str) -> httpx.Request:
        """POST /v1/events with the source's credentials, never the operator token."""
        request = self.http.build_request("POST", "/v1/events", content=body, headers={"Content-Type": content_type})
        request.headers.pop("Authorization", None)
        request.headers.update(self._ingest_headers)
        return request

    def send(self, events: Iterable[dict[str, Any]], *, batch_size: int = 10_000) -> SendReport:
        """Post events as NDJSON in batches; rejected indices are made global."""
        report = SendReport()
        started = time.perf_counter()
        offset = 0
        for batch in batched(events, batch_size):
            body = b"\n".join(orjson.dumps(e) for e in batch)
            answer, retries = self.post_body(body, "application/x-ndjson")
            report.requests += 1
            report.retries += retries
            report.accepted += answer["accepted"]
            report.duplicates += answer["duplicates"]
            report.rejected += [{**r, "index": r["index"] + offset} for r in answer["rejected"]]
            offset += len(batch)
        report.seconds = time.perf_counter() - started
        return report

    # --- config and subscriptions --------------------------------------------------------

    def put_config(self, document: dict[str, Any]) -> dict[str, Any]:
        kind, name = document.get("kind"), document.get("name")
        return self.request("PUT", f"/v1/config/{kind}/{name}", json=document)

    def get_config(self, kind: str, name: str) -> dict[str, Any]:
        return self.request("GET", f"/v1/config/{kind}/{name}")

    def pull(self, subscription: str, *, max_events: int = 100, wait_s: float = 0) -> dict[str, Any]:
        params = {"max": max_events, "wait": wait_s}
        return self.request("GET", f"/v1/subscriptions/{subscription}/events", params=params)

    def ack(self, subscription: str, ack_ids: list[str]) -> int:
        return int(self.request("POST", f"/v1/subscriptions/{subscription}/ack", json={"ack_ids": ack_ids})["acked"])

    def drain(self, subscription: str, *, idle_s: float = 3.0, timeout_s: float = 120.0) -> list[dict[str, Any]]:
        """Pull and ack until nothing new arrives for ``idle_s`` (or ``timeout_s`` passes)."""
        events: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout_s
        quiet_since = time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - quiet_since < idle_s:
            got = self.pull(subscription, max_events=5000, wait_s=min(1.0, idle_s))["events"]
            if got:
                events += got
                self.ack(subscription, [e["ack_id"] for e in got])
                quiet_since = time.monotonic()
        return events
