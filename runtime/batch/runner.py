"""Running a job's work as Ray tasks, one per part, with a progress bar, and writing its
outputs: Parquet parts plus ``summary.json``.

``run_parts(fn, args)`` uses the Ray cluster this process is connected to (``ray.init`` done by
the CLI, the demo or a test); without one it runs the parts in this process, which is what
unit tests of job logic do. This module is the batch jobs' only door to Ray (the layer
contract in pyproject.toml names it): the jobs stay plain Python, the same with or without it.
"""

from __future__ import annotations

import json
import os
import resource
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

T = TypeVar("T")


def run_parts(fn: Callable[..., T], args: Sequence[Any], *, label: str, num_cpus: float = 0.5) -> list[T]:
    """``fn(arg)`` for every arg, as Ray tasks when Ray is up (results in the order of ``args``).
    Half a CPU each by default: the jobs share the cluster with the real-time actors, which hold
    CPUs of their own, and a task asking for a whole one could wait for ever on a small node."""
    import ray

    bar = tqdm(total=len(args), desc=label, unit="part", disable=os.environ.get("ESP_PROGRESS") == "0")
    try:
        if not ray.is_initialized():
            results = []
            for arg in args:
                results.append(fn(arg))
                bar.update(1)
            return results
        remote = ray.remote(num_cpus=num_cpus)(fn)
        pending = {remote.remote(arg): i for i, arg in enumerate(args)}
        out: list[Any] = [None] * len(args)
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                out[pending.pop(ref)] = ray.get(ref)
                bar.update(1)
        return out
    finally:
        bar.close()


def share(value: T) -> Any:
    """``value`` put in the object store once when Ray is up, so tasks do not each carry it
    (read it back with :func:`resolve`)."""
    import ray

    return ray.put(value) if ray.is_initialized() else value


def resolve(value: Any) -> Any:
    """A value given to :func:`share`, in the task that uses it."""
    if type(value).__name__ == "ObjectRef":
        import ray

        return ray.get(value)
    return value


def write_table(table: pa.Table, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, compression="zstd")
    return path


class JobTimer:
    """Wall time and peak memory (this process and its children) of a job, for its summary."""

    def __init__(self) -> None:
        self.started = time.perf_counter()

    def figures(self) -> dict[str, Any]:
        own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        return {"wall_s": round(time.perf_counter() - self.started, 2), "peak_rss_mb": round(max(own, children) / 1024)}


def write_summary(directory: Path, summary: dict[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "summary.json"
    path.write_text(json.dumps(summary, indent=2, default=str))
    return path
