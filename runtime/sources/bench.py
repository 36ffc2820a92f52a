"""Adapter throughput for ``esp bench``: parse + map of a synthetic body per source format.

Each format gets a realistic body of ``n`` records and a realistic mapping (value maps, type
coercion, time formats, nested paths, a content digest id, an expression); the rate is
records per second for :func:`parse_records` followed by :meth:`CompiledMapping.apply`, in one
process (building the body and compiling the mapping are not timed)::

    python -m runtime.sources.bench [n]
"""

from __future__ import annotations

import io
import json
import sys
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import msgspec

from runtime.sources.mapping import compile_mapping
from runtime.sources.models import Source
from runtime.sources.records import parse_records

START = datetime(2026, 9, 21, 8, 0, 0, tzinfo=timezone.utc)
START_MS = int(START.timestamp() * 1000)
SHANGHAI = timezone(timedelta(hours=8))

SOURCES: dict[str, dict[str, Any]] = {
    # a call centre's call records: CSV with a header, ISO local times, coded lines and results
    "csv": {
        "kind": "source",
        "name": "bench-hotline",
        "format": "csv",
        "identity": "phone",
        "mapping": {
            "id": "call_id",
            "subject": "msisdn",
            "time": {"from": "started_at", "format": "iso", "timezone": "Asia/Shanghai"},
            "type": {"from": "result", "map": {"ANS": "call.answered", "ABN": "call.abandoned"}},
            "data": {
                "duration_s": {"from": "duration", "type": "int"},
                "line": {"from": "line", "map": {"1": "billing", "2": "roaming", "3": "broadband"}},
                "result": "result",
            },
        },
    },
    # network probe lines: msisdn=...|cell=...|ts=20260921160000, no ids (content digest)
    "kv": {
        "kind": "source",
        "name": "bench-probe",
        "format": "kv",
        "identity": "phone",
        "mapping": {
            "id": {"fields": ["msisdn", "ts", "cell", "event"]},
            "subject": "msisdn",
            "time": {"from": "ts", "format": "%Y%m%d%H%M%S", "timezone": "Asia/Shanghai"},
            "type": {"from": "event", "map": {"attach": "network.attach", "detach": "network.detach"}},
            "data": {
                "cell": "cell",
                "lac": {"from": "lac", "type": "int"},
                "rat": {"from": "rat", "default": "4G"},
            },
        },
    },
    # web analytics as NDJSON: nested objects, epoch ms, an expression over mapped fields
    "json": {
        "kind": "source",
        "name": "bench-web",
        "format": "json",
        "mapping": {
            "id": "event_id",
            "subject": "user.id",
            "time": "ts",
            "type": {"from": "action", "map": {"view": "web.page_view", "click": "web.click"}},
            "data": {
                "site": "page.site",
                "url": "page.url",
                "dwell_ms": {"from": "dwell_ms", "type": "int"},
                "long_view": {"expr": "data.dwell_ms >= 30000"},
            },
        },
    },
    # device measurements as an Arrow IPC stream: timestamp column, numeric columns
    "arrow": {
        "kind": "source",
        "name": "bench-device",
        "format": "arrow",
        "identity": "imei",
        "mapping": {
            "id": "sample_id",
            "subject": "imei",
            "time": "ts",
            "type": "device.sample",
            "data": {
                "cell": "cell",
                "rsrp_dbm": {"from": "rsrp", "type": "float"},
                "battery": {"from": "battery", "type": "int"},
            },
        },
    },
}


def _csv_body(n: int) -> bytes:
    out = io.StringIO()
    out.write("call_id,msisdn,started_at,duration,line,result\n")
    for i in range(n):
        at = (START + timedelta(seconds=i)).astimezone(SHANGHAI).replace(tzinfo=None).isoformat()
        out.write(f"c{i:08d},1380000{i % 10000:04d},{at},{i % 900},{1 + i % 3},{'ANS' if i % 5 else 'ABN'}\n")
    return out.getvalue().encode()


def _kv_body(n: int) -> bytes:
    lines = []
    for i in range(n):
        at = (START + timedelta(seconds=i)).astimezone(SHANGHAI).strftime("%Y%m%d%H%M%S")
        event = "detach" if i % 7 == 0 else "attach"
        lines.append(f"msisdn=1390000{i % 10000:04d}|cell=46001{i % 977:05d}|lac={i % 65536}|ts={at}|event={event}")
    return ("\n".join(lines) + "\n").encode()


def _json_body(n: int) -> bytes:
    encode = msgspec.json.encode
    items = (
        encode(
            {
                "event_id": f"w{i:09d}",
                "user": {"id": f"u{i % 50000}", "segment": "retail"},
                "ts": START_MS + i * 100,
                "action": "click" if i % 4 == 0 else "view",
                "page": {"site": "official", "url": f"/plans/{i % 40}"},
                "dwell_ms": (i * 37) % 60000,
            }
        )
        for i in range(n)
    )
    return b"\n".join(items) + b"\n"


def _arrow_body(n: int) -> bytes:
    import pyarrow as pa

    table = pa.table(
        {
            "sample_id": [f"s{i:09d}" for i in range(n)],
            "imei": [f"3530000{i % 100000:08d}" for i in range(n)],
            "ts": pa.array([START_MS + i * 10 for i in range(n)], pa.timestamp("ms", tz="UTC")),
            "cell": [f"46001{i % 977:05d}" for i in range(n)],
            "rsrp": pa.array([-70 - (i % 50) for i in range(n)], pa.int16()),
            "battery": pa.array([float(i % 101) for i in range(n)], pa.float64()),
        }
    )
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=10_000)
    return sink.getvalue().to_pybytes()


BODIES = {"csv": _csv_body, "kv": _kv_body, "json": _json_body, "arrow": _arrow_body}


def measure_format(fmt: str, n: int = 100_000, repeat: int = 3) -> dict[str, Any]:
    """Parse + map ``n`` synthetic records of format ``fmt``; the best of ``repeat`` runs
    (the least disturbed by the rest of the machine), with its parse and map parts."""
    source = Source.model_validate(SOURCES[fmt])
    mapping = compile_mapping(source.mapping, source_name=source.name)
    body = BODIES[fmt](n)
    best: tuple[float, float, float] | None = None
    for _ in range(max(1, repeat)):
        started = time.perf_counter()
        records = parse_records(body, fmt, source)
        parsed = time.perf_counter()
        good, bad = mapping.apply(records)
        done = time.perf_counter()
        if len(good) != n or bad:
            raise RuntimeError(f"bench {fmt}: {len(good)} of {n} records mapped; first failure {bad[:1]}")
        del records, good, bad
        if best is None or done - started < best[0]:
            best = (done - started, parsed - started, done - parsed)
    assert best is not None
    total, parse_s, map_s = best
    return {
        "records": n,
        "body_bytes": len(body),
        "seconds": round(total, 4),
        "parse_s": round(parse_s, 4),
        "map_s": round(map_s, 4),
        "records_per_s": int(n / total) if total > 0 else 0,
    }


def measure_formats(n: int = 100_000, repeat: int = 3) -> dict[str, Any]:
    """Records per second of parse + map for each format: ``{"csv": {"records_per_s": ...,
    "seconds", "parse_s", "map_s", "records", "body_bytes"}, "kv": ..., "json": ..., "arrow": ...}``
    (json is NDJSON; the best of ``repeat`` runs each)."""
    return {fmt: measure_format(fmt, n, repeat) for fmt in BODIES}


if __name__ == "__main__":
    print(json.dumps(measure_formats(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000), indent=2))
