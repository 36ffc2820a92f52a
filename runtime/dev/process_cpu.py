"""CPU time of the whole platform by kind of process, over one benchmark run (issue 16: the
end-to-end path "profiled as one system"): how many microseconds of CPU each kind of process —
Redis, Serve's proxy and replicas, the partition actors, Ray's own processes, the load client —
spends per event. On a machine whose cores every process shares, that says what bounds a rate.

Reads ``/proc/<pid>/stat`` over the process tree of this process (Linux only, as
``process_memory``). A process's time includes its waited-for children's (``cutime``,
``cstime``), so Redis's AOF-rewrite forks count as Redis. A process that ends during the run
without a parent in the tree waiting for it loses its time; Ray's and Serve's processes live as
long as the platform. The root process (the benchmark's driver and load client) is reported as
``load_client``.
"""

from __future__ import annotations

import os
import time
from typing import Any

from runtime.dev.process_memory import PROC, descendants, kind_of, process_parents

TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
LOAD_CLIENT = "load_client"


def cpu_seconds(pid: int) -> tuple[str, float] | None:
    """(kind, CPU seconds of ``pid`` and its waited-for children), None if it is gone."""
    base = PROC / str(pid)
    try:
        cmdline = (base / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        stat = (base / "stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": state is fields[0]
    utime, stime, cutime, cstime = (int(f) for f in fields[11:15])
    return kind_of(cmdline), (utime + stime + cutime + cstime) / TICKS


def tree_cpu(root: int) -> dict[int, tuple[str, float]]:
    """pid -> (kind, CPU seconds) for ``root``'s tree; the root itself is ``load_client``."""
    found = {}
    for pid in descendants(root, process_parents()):
        measured = cpu_seconds(pid)
        if measured is not None:
            found[pid] = (LOAD_CLIENT, measured[1]) if pid == root else measured
    return found


class CpuMeter:
    """CPU spent by each kind of process between ``start()`` and ``stop()``; ``result(items)``
    gives it per item (µs), most first, with the total and the wall time."""

    def __init__(self, root: int | None = None) -> None:
        self.root = root or os.getpid()
        self._before: dict[int, tuple[str, float]] = {}
        self._after: dict[int, tuple[str, float]] = {}
        self._started = self._stopped = 0.0

    def start(self) -> CpuMeter:
        self._before, self._started = tree_cpu(self.root), time.perf_counter()
        return self

    def stop(self) -> None:
        self._after, self._stopped = tree_cpu(self.root), time.perf_counter()

    def seconds_by_kind(self) -> dict[str, float]:
        """CPU seconds per kind: a process that started during the run counts from zero."""
        spent: dict[str, float] = {}
        for pid, (kind, seconds) in self._after.items():
            before = self._before.get(pid)
            spent[kind] = spent.get(kind, 0.0) + seconds - (before[1] if before else 0.0)
        return spent

    def result(self, items: int) -> dict[str, Any]:
        by_kind = sorted(self.seconds_by_kind().items(), key=lambda kv: -kv[1])
        per_item = {kind: round(seconds / items * 1e6, 2) for kind, seconds in by_kind if seconds > 0}
        wall = self._stopped - self._started
        total = sum(seconds for _, seconds in by_kind)
        return {
            "us_per_event": per_item,
            "total_us_per_event": round(total / items * 1e6, 2),
            "wall_s": round(wall, 2),
            "cores_busy": round(total / wall, 2) if wall > 0 else None,
        }
