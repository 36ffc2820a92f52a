"""The figures of an ``esp bench`` run as one markdown table, each next to its goal (issue 16,
DESIGN.md §6) and, where the goal is a ratio, to the hand-written loop of the same run; and the
README's benchmark section regenerated from that table.

Machines vary, so a rate means little alone: the engine and end-to-end figures are divided by
the hand-written loop for the same rule (``engine_sequence.baseline_events_per_s``), timed in
the same run. A figure the run did not measure reads "not measured".
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

README_BEGIN = "<!-- esp-bench:begin -->"
README_END = "<!-- esp-bench:end -->"


@dataclass(frozen=True)
class Figure:
    label: str
    value: Callable[[dict[str, Any]], float | None]  # from the run's results
    unit: str
    goal: str
    met: Callable[[float], bool]
    per_loop: bool = False  # shown as a ratio to the hand-written sequence loop of the run
    aside: Callable[[dict[str, Any]], str | None] | None = None  # what the reader must know beside the value


def _run_with(results: dict[str, Any], senders: int) -> dict[str, Any]:
    return next(r for r in results["sequence_senders"]["runs"] if r["senders"] == senders)


def _loop(results: dict[str, Any]) -> float:
    return float(results["engine_sequence"]["baseline_events_per_s"])


def _run(size: int) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """The ``size``-event latency run (``latency.requests_<size>``, runtime/dev/bench_latency.py)."""
    return lambda r: r["latency"][f"requests_{size}"]


def _p99(size: int) -> Figure:
    """ack → subscriber p99 of a latency run, with a word when the embedded Redis rewrote its
    AOF while its load ran (``aof_rewrites``): a rewrite takes a core for a second or two, and on a
    saturated machine its backlog is the p99."""
    run = _run(size)

    def rewrites(r: dict[str, Any]) -> str | None:
        count = run(r).get("aof_rewrites")
        return f"(Redis rewrote its AOF {count}× during the load)" if count else None

    return Figure(
        f"ack → subscriber p99, {size}-event requests",
        lambda r: run(r)["ack_to_subscriber_ms"]["p99"],
        "ms",
        "≤ 100 ms",
        lambda v: v <= 100,
        aside=rewrites,
    )


def _acked(size: int) -> Figure:
    run = _run(size)
    return Figure(
        f"acknowledged rate, 10 k/s offered, {size}-event requests",
        lambda r: run(r)["acked_events_per_s"],
        "/s",
        "≥ 9,500/s",
        lambda v: v >= 9_500,
    )


def _inexact(results: dict[str, Any]) -> float:
    """Outputs missing or unexpected (doubled, or never sent) over the latency runs."""
    runs = results["latency"].values()
    if not runs:
        raise KeyError("latency")
    return float(sum(run["missing"] + run["unexpected"] for run in runs))


FIGURES: tuple[Figure, ...] = (
    Figure(
        "rule engine, sequence rule, decoding included",
        lambda r: r["engine_sequence"]["ratio_to_baseline"],
        "× loop",
        "≥ 0.33×",
        lambda v: v >= 0.33,
    ),
    Figure(
        "rule engine, count rule, decoding included",
        lambda r: r["engine"]["ratio_to_baseline"],
        "× loop",
        "≥ 0.33×",
        lambda v: v >= 0.33,
    ),
    Figure(
        "end to end, 4 senders, processed",
        lambda r: _run_with(r, 4)["processed_events_per_s"] / _loop(r),
        "× loop",
        "≥ 0.04×",
        lambda v: v >= 0.04,
        per_loop=True,
    ),
    Figure(
        "end to end, 4 senders, acknowledged",
        lambda r: _run_with(r, 4)["acked_events_per_s"] / _loop(r),
        "× loop",
        "—",
        lambda v: True,
        per_loop=True,
    ),
    _p99(500),
    _p99(100),
    _acked(500),
    _acked(100),
    Figure("latency runs, outputs missing or unexpected", _inexact, "", "0", lambda v: v == 0),
    Figure(
        "peak RSS, whole platform, 1 M-event run",
        lambda r: r["memory"]["peak_rss_bytes"] / 2**30,
        "GiB",
        "< 2 GiB",
        lambda v: v < 2,
    ),
    Figure(
        "peak PSS, whole platform, 1 M-event run",
        lambda r: r["memory"]["peak_pss_bytes"] / 2**30,
        "GiB",
        "—",
        lambda v: True,
    ),
    Figure(
        "single-event webhooks",
        lambda r: r["delivery"]["single"]["events_per_s"],
        "/s",
        "≥ 5,000/s",
        lambda v: v >= 5000,
    ),
    Figure(
        "contact decisions",
        lambda r: r["contact"]["ledger"]["decisions_per_s"],
        "/s",
        "≥ 50,000/s",
        lambda v: v >= 50_000,
    ),
    Figure(
        "profile sync, one part per core (as `esp job sync` runs)",
        lambda r: r["profile_sync"]["job_write"]["customers_per_s"],
        " customers/s",
        "≥ 100,000 customers/s",
        lambda v: v >= 100_000,
    ),
    Figure(
        "profile sync, one part alone",
        lambda r: r["profile_sync"]["batch_write"]["customers_per_s"],
        " customers/s",
        "—",
        lambda v: True,
    ),
    Figure(
        "appends, Redis CPU per new event id, first day",
        lambda r: r["appends"]["fresh"]["redis_cpu_us_per_id"],
        "µs",
        "—",
        lambda v: True,
    ),
    Figure(
        "appends, Redis CPU per new event id, 7 full past days",
        lambda r: r["appends"]["full_horizon"]["redis_cpu_us_per_id"],
        "µs",
        "—",
        lambda v: True,
    ),
)


def _measured(figure: Figure, results: dict[str, Any]) -> float | None:
    try:
        return figure.value(results)
    except (KeyError, TypeError, StopIteration, ZeroDivisionError):
        return None


def _format(value: float, unit: str) -> str:
    if unit == "× loop":
        return f"{value:.3f}×"
    if unit == "GiB":
        return f"{value:.2f} GiB"
    if unit in ("ms", "µs"):
        return f"{value:,.1f} {unit}"
    return f"{value:,.0f}{unit}"


def markdown(results: dict[str, Any]) -> str:
    """The run's figures as a markdown table: value, goal, whether it is met."""
    host = results.get("host", {})
    loop = None
    try:
        loop = _loop(results)
    except (KeyError, TypeError):
        pass
    lines = [
        f"Measured by `esp bench` on {host.get('cpus', '?')} CPUs, Python {host.get('python', '?')}"
        + (f", load average {' '.join(map(str, host['load_average']))}" if host.get("load_average") else "")
        + ("; the engine's loop not compiled (no C compiler)" if host.get("compiled_pair_scan") is False else "")
        + (f"; the hand-written sequence loop ran at {loop:,.0f} events/s in the same run." if loop else "."),
        "",
        "| figure | measured | goal | met |",
        "|---|---:|---|:---:|",
    ]
    for figure in FIGURES:
        value = _measured(figure, results)
        if value is None:
            lines.append(f"| {figure.label} | not measured | {figure.goal} | – |")
            continue
        shown = _format(value, figure.unit)
        if figure.per_loop and loop:
            shown += f" ({value * loop:,.0f} events/s)"
        aside = figure.aside(results) if figure.aside else None  # read only once the value was
        if aside:
            shown += f" {aside}"
        met = "–" if figure.goal == "—" else "yes" if figure.met(value) else "no"  # a figure shown for context
        lines.append(f"| {figure.label} | {shown} | {figure.goal} | {met} |")
    return "\n".join(lines) + "\n"


def update_readme(readme: Path, table: str) -> None:
    """Put ``table`` between the README's benchmark markers (which must be there)."""
    text = readme.read_text()
    pattern = re.compile(re.escape(README_BEGIN) + r".*?" + re.escape(README_END), re.DOTALL)
    if not pattern.search(text):
        raise ValueError(f"{readme} has no {README_BEGIN} ... {README_END} section")
    readme.write_text(pattern.sub(lambda _: f"{README_BEGIN}\n{table}{README_END}", text, count=1))
