"""``esp job campaign``: one run of a batch campaign, through the same contact policy as the
real-time offers.

1. **Audience**: the members of the campaign's ``segment`` (jobs/segments/members.parquet) or
   its rows of the allocation plan (jobs/allocate/plan.parquet, ``plan: true``; a plan row's
   ``channel`` overrides the campaign's). One contact per customer, sorted by customer.
2. **Control group**: a customer is held out when ``control_score(campaign, run, customer) <
   control_share``: a SHA-256 of the three as a number in [0, 1). Deterministic, so running a
   run again holds out the same customers; another run draws another group.
3. **When**: a ``start`` in the future returns ``{"status": "scheduled"}`` and sends nothing
   (unless ``force``). The targets go out in slices (:func:`slices`) spread evenly over
   ``period`` (0: all at once, in requests of ``batch_size``).
4. **Submission**: ``POST {base_url}/v1/campaigns/{name}/contacts`` with ``{"run", "contacts"}``,
   the batch path into the contact policy (caps, de-dup, quiet hours, arbitration with real-time
   offers). Contact ids are deterministic per campaign, run, customer, channel and template:
   submitting a run again changes nothing (``duplicates``).

Output: ``jobs/campaign/<name>/<run>/audience.parquet`` (:data:`AUDIENCE`) and ``summary.json``.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from runtime.batch import layout
from runtime.batch.runner import JobTimer, write_summary, write_table
from runtime.errors import EspError, InputError, NotFound
from runtime.events.envelope import parse_time_ms
from runtime.policy.models import Campaign

JOB = "campaign"
AUDIENCE = pa.schema(
    [
        ("customer_id", pa.string()),
        ("channel", pa.string()),
        ("control", pa.bool_()),  # held out: never submitted
        ("submitted", pa.bool_()),  # accepted by the API (it may still be suppressed by the policy)
    ]
)
SLICE_MS = 60_000  # with a period, at most one slice a minute (fewer when the audience is small)
RETRY_REASONS = frozenset({"unreachable", "overloaded", "unavailable"})


def run_dir(data: Path, campaign: str, run_id: str) -> Path:
    return layout.job_dir(data, JOB) / campaign / run_id


# --- audience and control group (pure) -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Audience:
    """Customers of a run in order, each with a channel and whether it is held out."""

    customers: list[str]
    channels: list[str]
    control: list[bool]

    @property
    def targets(self) -> list[int]:
        """Positions of the customers to contact."""
        return [i for i, held in enumerate(self.control) if not held]


def control_score(campaign: str, run_id: str, customer: str) -> float:
    """A number in [0, 1) fixed by campaign, run and customer."""
    digest = hashlib.sha256(f"{campaign}\x1f{run_id}\x1f{customer}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def control_flags(campaign: str, run_id: str, customers: Sequence[str], share: float) -> list[bool]:
    return [control_score(campaign, run_id, customer) < share for customer in customers]


def audience_rows(data: Path, campaign: Campaign) -> tuple[list[str], list[str]]:
    """(customers, channels) of the campaign's audience, sorted by customer."""
    if campaign.segment is not None:
        table = _read(layout.job_dir(data, "segments") / "members.parquet", "segment members (esp job segments)")
        table = table.filter(pc.equal(table["segment"], campaign.segment))
        customers = sorted(set(table["customer_id"].to_pylist()))
        return customers, [str(campaign.channel)] * len(customers)
    if campaign.plan:
        table = _read(layout.job_dir(data, "allocate") / "plan.parquet", "allocation plan (esp job allocate)")
        table = table.filter(pc.equal(table["campaign"], campaign.name))
        table = table.sort_by([("customer_id", "ascending"), ("score", "descending")])
        channels: dict[str, str] = {}
        for customer, channel in zip(table["customer_id"].to_pylist(), table["channel"].to_pylist(), strict=True):
            channels.setdefault(customer, channel or str(campaign.channel))
        return list(channels), list(channels.values())
    raise InputError(f"campaign {campaign.name!r} has no batch audience: give it a segment or plan: true")


def _read(path: Path, what: str) -> pa.Table:
    if not path.exists():
        raise NotFound(f"no {what} at {path}")
    return pq.read_table(path)


def build_audience(data: Path, campaign: Campaign, run_id: str) -> Audience:
    customers, channels = audience_rows(data, campaign)
    return Audience(customers, channels, control_flags(campaign.name, run_id, customers, campaign.control_share))


# --- pacing (pure) -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Slice:
    start: int  # positions [start, end) of the targets
    end: int
    at_ms: int  # offset from the first slice


def slices(count: int, *, period_ms: int, batch_size: int, slice_ms: int = SLICE_MS) -> list[Slice]:
    """Split ``count`` targets into near-equal slices sent at even offsets within ``period_ms``:
    enough slices that none exceeds ``batch_size`` and, with a period, one per ``slice_ms``
    (but never more slices than targets). The last slice goes out at ``period_ms * (k-1)/k``."""
    if count <= 0:
        return []
    k = math.ceil(count / batch_size)
    if period_ms > 0:
        k = max(k, min(count, math.ceil(period_ms / slice_ms)))
    bounds = [count * i // k for i in range(k + 1)]
    spacing = period_ms / k if period_ms > 0 else 0
    return [Slice(bounds[i], bounds[i + 1], int(i * spacing)) for i in range(k)]


def contacts(campaign: Campaign, audience: Audience, positions: Sequence[int]) -> list[dict[str, Any]]:
    """The request bodies' ``contacts`` for these audience positions."""
    return [
        {
            "customer": audience.customers[i],
            "channel": audience.channels[i],
            "template": campaign.template,
            "priority": campaign.priority,
        }
        for i in positions
    ]


# --- the job -------------------------------------------------------------------------------------


def _post(client: Any, path: str, body: dict[str, Any], *, retries: int, sleep: Callable[[float], None]) -> Any:
    """POST, again on connection trouble or back-pressure (contact ids make it idempotent)."""
    for attempt in range(retries + 1):
        try:
            return client.request("POST", path, json=body)
        except EspError as exc:
            if exc.reason not in RETRY_REASONS or attempt == retries:
                raise
            sleep(min(2.0**attempt, 30.0))
    raise AssertionError("unreachable")  # pragma: no cover


def run(
    data: Path,
    campaign: Campaign,
    *,
    base_url: str,
    run_id: str,
    now_ms: int | None = None,
    batch_size: int = 10_000,
    force: bool = False,
    key: str | None = None,  # an operator token; default: the CLI's (ESP_TOKEN or the state dir's)
    retries: int = 3,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """Run ``campaign`` once as ``run_id``: audience, control group, paced submission. Returns
    the summary (also in jobs/campaign/<name>/<run>/summary.json); ``status`` is ``scheduled``
    (start in the future, nothing sent or written), ``done`` or ``failed`` (``error`` says why;
    what was submitted before is recorded, and running the run again sends only the rest)."""
    from runtime.dev.client import EspClient

    timer = JobTimer()
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    if not 1 <= len(run_id) <= 128 or "/" in run_id or run_id in {".", ".."}:
        raise InputError(f"run id must be 1-128 characters without '/', got {run_id!r}", reason="invalid_run")
    audience = build_audience(Path(data), campaign, run_id)
    targets = audience.targets
    base = _base_summary(campaign, run_id, audience, now_ms)
    start_ms = parse_time_ms(campaign.start) if campaign.start else None
    if start_ms is not None and start_ms > now_ms and not force:
        return {**base, "status": "scheduled", "starts_in_s": round((start_ms - now_ms) / 1000, 1)}
    plan = slices(len(targets), period_ms=campaign.period, batch_size=batch_size)
    submitted = [False] * len(audience.customers)
    totals = {"submitted": 0, "accepted": 0, "duplicates": 0, "requests": 0}
    error = None
    path = f"/v1/campaigns/{campaign.name}/contacts"
    began = clock()
    with EspClient(base_url, token=key) as client:
        for piece in plan:
            sleep(max(0.0, began + piece.at_ms / 1000 - clock()))
            positions = targets[piece.start : piece.end]
            body = {"run": run_id, "contacts": contacts(campaign, audience, positions)}
            try:
                answer = _post(client, path, body, retries=retries, sleep=sleep)
            except EspError as exc:
                error = {"reason": exc.reason, "message": exc.message, "slice": piece.start}
                break
            for i in positions:
                submitted[i] = True
            totals["requests"] += 1
            for name in ("submitted", "accepted", "duplicates"):
                totals[name] += int(answer.get(name, 0))
    out = run_dir(Path(data), campaign.name, run_id)
    table = pa.table([audience.customers, audience.channels, audience.control, submitted], schema=AUDIENCE)
    write_table(table, out / "audience.parquet")
    summary = {
        **base,
        "status": "failed" if error else "done",
        **totals,
        "slices": len(plan),
        "audience_path": str(out / "audience.parquet"),
        **({"error": error} if error else {}),
        **timer.figures(),
    }
    write_summary(out, summary)
    return summary


def _base_summary(campaign: Campaign, run_id: str, audience: Audience, now_ms: int) -> dict[str, Any]:
    return {
        "job": JOB,
        "campaign": campaign.name,
        "run": run_id,
        "product": campaign.product,
        "channel": campaign.channel,
        "template": campaign.template,
        "source": f"segment:{campaign.segment}" if campaign.segment else "plan",
        "started_ms": now_ms,
        "period_ms": campaign.period,
        "control_share": campaign.control_share,
        "audience": len(audience.customers),
        "control": sum(audience.control),
        "targets": len(audience.targets),
    }
