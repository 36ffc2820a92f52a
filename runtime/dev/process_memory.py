"""Memory of the whole platform on this machine (issue 16, item 4): resident (RSS) and
proportional (PSS) memory summed over a process tree — Ray's GCS, raylet, agents and workers,
the Serve controller, proxy and replicas, ESP's actors, Redis — sampled while a benchmark runs.

RSS counts a shared page in every process that maps it (Ray's object store is shared memory
mapped by every worker, Python's code pages are shared between forked workers), so a sum of RSS
over-counts; PSS divides each shared page among the processes that map it and sums to the real
footprint. Both are reported; PSS only where ``/proc/<pid>/smaps_rollup`` exists (Linux ≥ 4.14).

Reads ``/proc`` directly: Linux only, no dependency. The peak is the largest *sum* over one
sample (not a sum of each process's own peak), with the breakdown by kind of process at that
sample and each kind's own peak.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROC = Path("/proc")
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

# (substring of the command line, kind), first match wins
KINDS: tuple[tuple[str, str], ...] = (
    ("redis-server", "redis"),
    ("redis-aof-rewrite", "redis_fork"),  # a fork sharing Redis's pages copy-on-write: PSS counts it right
    ("redis-rdb-", "redis_fork"),
    ("runtime.dev.redis_keeper", "redis_keeper"),
    ("gcs_server", "ray_gcs"),
    ("/raylet", "ray_raylet"),
    ("dashboard/agent.py", "ray_dashboard_agent"),
    ("ray::DashboardAgent", "ray_dashboard_agent"),
    ("runtime_env/agent", "ray_runtime_env_agent"),
    ("ray::RuntimeEnvAgent", "ray_runtime_env_agent"),
    ("log_monitor.py", "ray_log_monitor"),
    ("autoscaler/_private/monitor.py", "ray_monitor"),
    ("dashboard/dashboard.py", "ray_dashboard"),
    ("ray_client_server", "ray_client_server"),
    ("ray::ServeController", "serve_controller"),
    ("ray::ProxyActor", "serve_proxy"),
    ("ray::ServeReplica", "serve_replica"),
    ("ray::IDLE", "ray_idle_worker"),
    ("ray::", "esp_actor"),  # partition actors, dispatchers, the policy stage
    ("default_worker.py", "ray_idle_worker"),  # a worker before it names itself
)


@dataclass(frozen=True)
class ProcessMemory:
    pid: int
    kind: str
    rss: int
    pss: int | None
    name: str = ""  # the start of its command line


def kind_of(cmdline: str) -> str:
    """The kind of a process from its command line (Ray's workers retitle themselves
    ``ray::<Actor>``); ``other`` if none matches."""
    for needle, kind in KINDS:
        if needle in cmdline:
            return kind
    return "other"


def descendants(root: int, parents: Mapping[int, int]) -> set[int]:
    """``root`` and every process below it, given each process's parent."""
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    found, stack = set(), [root]
    while stack:
        pid = stack.pop()
        if pid in found:
            continue
        found.add(pid)
        stack.extend(children.get(pid, ()))
    return found


def tree_sum(processes: Iterable[ProcessMemory]) -> dict[str, Any]:
    """Totals of one sample: ``rss_bytes``, ``pss_bytes`` (None when no process had PSS), and
    per kind ``{"processes", "rss_bytes", "pss_bytes"}``."""
    total_rss, total_pss, any_pss = 0, 0, False
    kinds: dict[str, dict[str, Any]] = {}
    for p in processes:
        entry = kinds.setdefault(p.kind, {"processes": 0, "rss_bytes": 0, "pss_bytes": None})
        entry["processes"] += 1
        entry["rss_bytes"] += p.rss
        total_rss += p.rss
        if p.pss is not None:
            entry["pss_bytes"] = (entry["pss_bytes"] or 0) + p.pss
            total_pss += p.pss
            any_pss = True
    return {"rss_bytes": total_rss, "pss_bytes": total_pss if any_pss else None, "kinds": kinds}


def process_parents() -> dict[int, int]:
    """Every process on the machine, with its parent's PID (from ``/proc/<pid>/stat``)."""
    parents = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces and parentheses, so split after the last ')'
        parents[int(entry.name)] = int(stat[stat.rindex(")") + 2 :].split()[1])
    return parents


def read_process(pid: int) -> ProcessMemory | None:
    """RSS (and PSS where the kernel has smaps_rollup) of ``pid``, None if it is gone."""
    base = PROC / str(pid)
    try:
        cmdline = (base / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        rss = int((base / "statm").read_text().split()[1]) * PAGE
    except (OSError, ValueError, IndexError):
        return None
    pss = None
    try:
        for line in (base / "smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                pss = int(line.split()[1]) * 1024
                break
    except OSError:
        pass
    return ProcessMemory(pid, kind_of(cmdline), rss, pss, cmdline[:100])


def sample_tree(root: int, *, exclude: Iterable[int] = ()) -> list[ProcessMemory]:
    """Every process of ``root``'s tree but ``exclude``, as it is now."""
    pids = descendants(root, process_parents()) - set(exclude)
    return [p for p in map(read_process, sorted(pids)) if p is not None]


class MemorySampler:
    """Samples the tree below ``root`` (default: this process) every ``interval_s`` in a thread
    while in the ``with`` block. The root itself (the benchmark's driver and load client) is
    reported apart as ``driver_*`` and left out of the platform's totals unless
    ``include_root``."""

    def __init__(self, root: int | None = None, *, interval_s: float = 0.5, include_root: bool = False) -> None:
        self.root = root or os.getpid()
        self.interval_s = interval_s
        self.include_root = include_root
        self.samples = 0
        self.peak: dict[str, Any] | None = None
        self.peak_pss: int | None = None
        self.peak_processes: list[dict[str, Any]] = []
        self.kind_peaks: dict[str, dict[str, int]] = {}
        self.driver_peak_rss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="esp-memory-sampler", daemon=True)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval_s)

    def sample(self) -> None:
        processes = sample_tree(self.root)
        platform = [p for p in processes if self.include_root or p.pid != self.root]
        for p in processes:
            if p.pid == self.root:
                self.driver_peak_rss = max(self.driver_peak_rss, p.rss)
        summed = tree_sum(platform)
        self.samples += 1
        if self.peak is None or summed["rss_bytes"] > self.peak["rss_bytes"]:
            self.peak = summed
            self.peak_processes = [
                {"pid": p.pid, "kind": p.kind, "rss_bytes": p.rss, "pss_bytes": p.pss, "name": p.name}
                for p in sorted(platform, key=lambda p: -p.rss)
            ]
        if summed["pss_bytes"] is not None:
            self.peak_pss = max(self.peak_pss or 0, summed["pss_bytes"])
        for kind, entry in summed["kinds"].items():
            peaks = self.kind_peaks.setdefault(kind, {"processes": 0, "rss_bytes": 0, "pss_bytes": 0})
            for field in peaks:
                peaks[field] = max(peaks[field], entry[field] or 0)

    def result(self) -> dict[str, Any]:
        """``peak_rss_bytes`` and ``peak_pss_bytes`` of the platform (largest sums over one
        sample), the breakdown by kind at the RSS peak, each kind's own peaks, and the driver."""
        peak = self.peak or tree_sum([])
        return {
            "peak_rss_bytes": peak["rss_bytes"],
            "peak_pss_bytes": self.peak_pss,
            "peak_rss_gib": round(peak["rss_bytes"] / 2**30, 3),
            "peak_pss_gib": round(self.peak_pss / 2**30, 3) if self.peak_pss is not None else None,
            "at_rss_peak": dict(sorted(peak["kinds"].items(), key=lambda kv: -kv[1]["rss_bytes"])),
            "processes_at_rss_peak": self.peak_processes,
            "kind_peaks": dict(sorted(self.kind_peaks.items(), key=lambda kv: -kv[1]["rss_bytes"])),
            "driver_peak_rss_bytes": self.driver_peak_rss,
            "samples": self.samples,
            "interval_s": self.interval_s,
        }
