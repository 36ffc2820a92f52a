"""A batch campaign run: audience, control group and pacing as pure functions, and the requests
it posts, received by a local HTTP server standing in for the API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from runtime.batch import campaign as job
from runtime.batch.campaign import Slice
from runtime.policy.models import Campaign
from tests.support.receiver import Receiver, Request

NOW_MS = 1_790_000_000_000
CUSTOMERS = [f"c{n:04d}" for n in range(1, 41)]


def a_campaign(**changes: Any) -> Campaign:
    fields = {
        "name": "q4-wealth",
        "priority": 70,
        "product": "wealth-beginner",
        "segment": "rich",
        "channel": "sms",
        "template": "wealth-offer",
        "control_share": 0.2,
        **changes,
    }
    return Campaign.model_validate(fields)


def write_members(root: Path) -> Path:
    path = root / "jobs" / "segments" / "members.parquet"
    path.parent.mkdir(parents=True)
    rows = [(c, "rich") for c in reversed(CUSTOMERS)] + [("c9999", "poor"), ("c0001", "poor")]
    pq.write_table(pa.table({"customer_id": [c for c, _ in rows], "segment": [s for _, s in rows]}), path)
    return root


# --- pure parts ----------------------------------------------------------------------------------


def test_control_group_is_deterministic_and_the_right_size():
    customers = [f"c{n}" for n in range(10_000)]
    flags = job.control_flags("q4", "r1", customers, 0.1)
    assert flags == job.control_flags("q4", "r1", customers, 0.1)
    assert 0.09 < sum(flags) / len(flags) < 0.11
    assert flags != job.control_flags("q4", "r2", customers, 0.1)  # another run, another group
    assert not any(job.control_flags("q4", "r1", customers, 0.0))
    held = {c for c, f in zip(customers, flags, strict=True) if f}
    wider = {c for c, f in zip(customers, job.control_flags("q4", "r1", customers, 0.3), strict=True) if f}
    assert held <= wider  # a larger share only adds customers


def test_slices():
    assert job.slices(0, period_ms=0, batch_size=10) == []
    assert job.slices(25, period_ms=0, batch_size=10) == [Slice(0, 8, 0), Slice(8, 16, 0), Slice(16, 25, 0)]
    ten_minutes = job.slices(100, period_ms=600_000, batch_size=10_000)  # one slice a minute
    assert [(s.end - s.start, s.at_ms) for s in ten_minutes] == [(10, i * 60_000) for i in range(10)]
    few = job.slices(4, period_ms=3_600_000, batch_size=10_000)  # never more slices than targets
    assert [(s.start, s.end, s.at_ms) for s in few] == [
        (0, 1, 0),
        (1, 2, 900_000),
        (2, 3, 1_800_000),
        (3, 4, 2_700_000),
    ]
    big = job.slices(50_000, period_ms=120_000, batch_size=10_000)  # batch size wins over the period
    assert len(big) == 5 and all(s.end - s.start == 10_000 for s in big)
    assert [s.at_ms for s in big] == [0, 24_000, 48_000, 72_000, 96_000]


def test_audience_of_a_segment(tmp_path: Path):
    customers, channels = job.audience_rows(write_members(tmp_path), a_campaign())
    assert customers == CUSTOMERS
    assert set(channels) == {"sms"}


def test_audience_of_the_plan(tmp_path: Path):
    path = tmp_path / "jobs" / "allocate" / "plan.parquet"
    path.parent.mkdir(parents=True)
    plan = pa.table(
        {
            "customer_id": ["c3", "c1", "c1", "c2", "c4"],
            "campaign": ["q4-wealth", "q4-wealth", "q4-wealth", "q4-wealth", "other"],
            "product": ["wealth-beginner"] * 5,
            "channel": ["app-push", "outbound-call", "app-push", None, "sms"],
            "score": pa.array([50.0, 90.0, 40.0, 70.0, 99.0], pa.float32()),
        }
    )
    pq.write_table(plan, path)
    campaign = a_campaign(segment=None, plan=True)
    assert job.audience_rows(tmp_path, campaign) == (["c1", "c2", "c3"], ["outbound-call", "sms", "app-push"])


def test_a_missing_audience_says_which_job_makes_it(tmp_path: Path):
    from runtime.errors import NotFound

    with pytest.raises(NotFound, match="esp job segments"):
        job.audience_rows(tmp_path, a_campaign())


def test_a_future_start_is_scheduled_and_sends_nothing(tmp_path: Path):
    data = write_members(tmp_path)
    campaign = a_campaign(start="2030-01-01T00:00:00Z")
    summary = job.run(data, campaign, base_url="http://127.0.0.1:9", run_id="r1", now_ms=NOW_MS)
    assert summary["status"] == "scheduled"
    assert summary["audience"] == 40 and summary["control"] + summary["targets"] == 40
    assert summary["starts_in_s"] > 0
    assert not (data / "jobs" / "campaign").exists()


# --- posting to a server ----------------------------------------------------------------------------


def api(seen: set[tuple[str, str]]) -> Any:
    """Answers like POST /v1/campaigns/{name}/contacts: contacts seen before are duplicates."""

    def script(n: int, request: Request) -> tuple[Any, ...]:
        body = request.json()
        keys = [(body["run"], c["customer"]) for c in body["contacts"]]
        fresh = [k for k in keys if k not in seen]
        seen.update(keys)
        answer = {"submitted": len(keys), "accepted": len(fresh), "duplicates": len(keys) - len(fresh)}
        return 202, {"content-type": "application/json"}, 0.0, orjson.dumps(answer)

    return script


def test_targets_are_posted_in_slices_and_recorded(tmp_path: Path):
    data = write_members(tmp_path)
    campaign = a_campaign(start="2026-01-01T00:00:00Z")
    expected_control = job.control_flags("q4-wealth", "r1", CUSTOMERS, 0.2)
    targets = [c for c, held in zip(CUSTOMERS, expected_control, strict=True) if not held]
    with Receiver(api(set())) as server:
        base = f"http://127.0.0.1:{server.port}"
        summary = job.run(data, campaign, base_url=base, run_id="r1", now_ms=NOW_MS, batch_size=8)
        requests = server.seen()
    assert all(r.path == "/v1/campaigns/q4-wealth/contacts" for r in requests)
    bodies = [r.json() for r in requests]
    assert len(bodies) == len(job.slices(len(targets), period_ms=0, batch_size=8))
    assert all(body["run"] == "r1" and 0 < len(body["contacts"]) <= 8 for body in bodies)
    sent = [c for body in bodies for c in body["contacts"]]
    assert [c["customer"] for c in sent] == targets
    assert sent[0] == {"customer": targets[0], "channel": "sms", "template": "wealth-offer", "priority": 70}
    assert summary["status"] == "done"
    assert (summary["audience"], summary["control"], summary["targets"]) == (40, 40 - len(targets), len(targets))
    assert (summary["submitted"], summary["accepted"], summary["duplicates"]) == (len(targets), len(targets), 0)
    audience = pq.read_table(Path(summary["audience_path"]))
    assert audience.schema == job.AUDIENCE
    assert audience["customer_id"].to_pylist() == CUSTOMERS
    assert audience["control"].to_pylist() == expected_control
    assert audience["submitted"].to_pylist() == [not held for held in expected_control]
    assert (tmp_path / "jobs" / "campaign" / "q4-wealth" / "r1" / "summary.json").exists()


def test_running_a_run_again_only_duplicates(tmp_path: Path):
    data = write_members(tmp_path)
    seen: set[tuple[str, str]] = set()
    with Receiver(api(seen)) as server:
        base = f"http://127.0.0.1:{server.port}"
        first = job.run(data, a_campaign(), base_url=base, run_id="r1", now_ms=NOW_MS)
        again = job.run(data, a_campaign(), base_url=base, run_id="r1", now_ms=NOW_MS)
    assert again["accepted"] == 0 and again["duplicates"] == first["accepted"] == first["targets"]


def test_a_period_spreads_the_slices(tmp_path: Path):
    data = write_members(tmp_path)
    now = [0.0]
    sent_at: list[float] = []

    def sleep(seconds: float) -> None:
        now[0] += seconds

    def script(n: int, request: Request) -> tuple[Any, ...]:
        sent_at.append(now[0])
        return api(set())(n, request)

    with Receiver(script) as server:
        base = f"http://127.0.0.1:{server.port}"
        summary = job.run(
            data, a_campaign(period="5m"), base_url=base, run_id="r1", now_ms=NOW_MS, sleep=sleep, clock=lambda: now[0]
        )
    assert summary["slices"] == 5
    assert sent_at == [0.0, 60.0, 120.0, 180.0, 240.0]


def test_a_future_start_is_sent_when_forced(tmp_path: Path):
    data = write_members(tmp_path)
    with Receiver(api(set())) as server:
        base = f"http://127.0.0.1:{server.port}"
        summary = job.run(
            data, a_campaign(start="2030-01-01T00:00:00Z"), base_url=base, run_id="r1", now_ms=NOW_MS, force=True
        )
    assert summary["status"] == "done" and summary["submitted"] == summary["targets"]


def test_a_refused_slice_stops_the_run_and_records_what_went_out(tmp_path: Path):
    data = write_members(tmp_path)

    def script(n: int, request: Request) -> tuple[Any, ...]:
        if n == 2:
            return 404, {}, 0.0, b'{"reason": "not_found", "message": "campaign q4-wealth is not configured"}'
        return api(set())(n, request)

    with Receiver(script) as server:
        base = f"http://127.0.0.1:{server.port}"
        summary = job.run(data, a_campaign(), base_url=base, run_id="r1", now_ms=NOW_MS, batch_size=10)
    assert summary["status"] == "failed"
    assert summary["error"]["reason"] == "not_found" and summary["error"]["slice"] > 0
    audience = pq.read_table(Path(summary["audience_path"])).to_pylist()
    assert sum(r["submitted"] for r in audience) == summary["submitted"] == summary["error"]["slice"]
    assert not any(r["submitted"] and r["control"] for r in audience)
