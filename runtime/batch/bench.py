"""The batch jobs' benchmark: wall time and peak memory of each job on a generated data set,
as ``esp bench --only batch --batch-customers N --batch-days D`` writes them.

Peak memory is the highest total resident memory of this process and every Ray worker
process on the machine while the job runs, above what they held before it (sampled every
0.2 s from /proc), so it counts the tasks, not only the driver.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def _ray_rss_bytes() -> int:
    """Resident memory of this process and of Ray worker processes."""
    total, page = 0, os.sysconf("SC_PAGE_SIZE")
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if int(pid) != os.getpid() and b"ray::" not in cmdline and b"default_worker" not in cmdline:
                continue
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * page
        except (OSError, ValueError, IndexError):
            continue
    return total


def measure(fn: Callable[[], Any]) -> tuple[Any, dict[str, float]]:
    before = _ray_rss_bytes()
    peak = [before]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.2):
            peak[0] = max(peak[0], _ray_rss_bytes())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    try:
        result = fn()
    finally:
        done.set()
        sampler.join()
    seconds = time.perf_counter() - started
    return result, {"wall_s": round(seconds, 1), "peak_mb": round(max(peak[0] - before, 0) / 2**20)}


def bench_batch(data: Path, *, customers: int, days: int, redis_url: str | None = None) -> dict[str, Any]:
    """Every job once on a fresh generated data set (sync only with ``redis_url``)."""
    from runtime.batch import allocate, evaluate, matrix, segments, sync, tags, timing
    from runtime.batch.generate import generate
    from runtime.config.documents import load_yaml_documents

    docs = [raw for _, raw in load_yaml_documents(ROOT / "configs" / "demo" / "segments.yaml")]
    jobs: list[tuple[str, Callable[[], Any]]] = [
        ("generate", lambda: generate(data, customers=customers, days=days, seed=7)),
        ("tags", lambda: tags.run(data)),
        ("segments", lambda: segments.run(data, docs)),
        ("matrix", lambda: matrix.run(data, top_n=3)),
        ("allocate", lambda: allocate.run_spec(data, ROOT / "configs" / "batch" / "allocation.json")),
        ("timing", lambda: timing.run(data)),
        ("evaluate", lambda: evaluate.run(data, "2026-09-wealth-sms")),
    ]
    if redis_url:
        jobs.append(("sync", lambda: sync.run(data, redis_url, version=f"bench-{customers}")))
    results: dict[str, Any] = {"customers": customers, "days": days, "jobs": {}}
    for name, fn in jobs:
        summary, figures = measure(fn)
        results["jobs"][name] = figures
        if name == "matrix":
            results["auc"] = {p: m["auc"] for p, m in summary["models"].items()}
            results["baseline_auc"] = {p: m["baseline_auc"] for p, m in summary["models"].items()}
        if name == "allocate":
            results["allocation_gain_pct"] = summary["gain_pct"]
            results["allocation_method"] = summary["optimised"]["method"]
    return results
