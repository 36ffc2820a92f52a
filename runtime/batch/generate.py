"""Deterministic synthetic data: a city, its customers and what they did over a period.

``generate(out, customers=..., days=...)`` writes a data set in the layout of ``layout.py``.
Behaviour is driven by latent preferences (:data:`PREFERENCES`, each in 0..1, correlated with
age, gender and wealth): they decide where people spend weekends and evenings, who goes to the
CBA games and concerts, who flies abroad, which sites they browse, who phones the sales line and
who adopted which product. A model trained on behaviour-derived features therefore finds real
signal. The preferences are written to ``out/truth/latent.parquet`` for evaluation only: jobs
must not read it.

Where the code lives: ``world.py`` (the city, the products, the events, the preference names),
``people.py`` (customers and their preferences), ``behaviour.py`` (stays, sessions, calls,
adoption, past campaigns; the day plans of the stays are drawn in its docstring) and ``draws.py``
(the vectorised draws); this module runs the parts and writes the data set.

Determinism: the city and the events come from ``seed``; part ``k`` (a contiguous range of
customers) from ``(seed, k)`` alone, so results do not depend on how tasks are scheduled (they
do depend on ``parts``). Times are epoch ms (UTC); days start at local midnight, Asia/Shanghai.
"""

from __future__ import annotations

import json
import resource
import shutil
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from runtime.batch import layout
from runtime.batch.behaviour import draw_adoption, draw_calls, draw_contacts, draw_sessions, draw_stays
from runtime.batch.draws import labels
from runtime.batch.people import build_people, customer_columns, customer_ids
from runtime.batch.runner import JobTimer, run_parts, write_table
from runtime.batch.world import DAY_MS, PREFERENCES, PRODUCT, TIMEZONE, World, build_world
from runtime.errors import InputError

CUSTOMERS_PER_PART = 50_000


def _table(columns: dict[str, Any], schema: pa.Schema) -> pa.Table:
    return pa.table(
        [
            pa.array(columns[f.name], f.type)
            if isinstance(columns[f.name], np.ndarray)
            else columns[f.name].cast(f.type)
            for f in schema
        ],
        schema=schema,
    )


@dataclass(frozen=True)
class PartSpec:
    """What one task generates: customers ``lo`` to ``hi`` (global, 0-based) as part ``part``."""

    out: Path
    world: World
    seed: int
    part: int
    lo: int
    hi: int


def _by_customer(columns: dict[str, Any], ids: pa.Array, schema: pa.Schema) -> pa.Table:
    return _table({**columns, "customer_id": pc.take(ids, pa.array(columns["who"]))}, schema)


def generate_part(spec: PartSpec) -> dict[str, Any]:
    """Generates and writes one part of every per-customer table, one table at a time to bound
    memory; returns its row counts, its process's peak memory and the latent preferences of its
    customers (for ``truth/``)."""
    cpu_started = time.process_time()
    rng, world, rows = np.random.default_rng([spec.seed, 1 + spec.part]), spec.world, {}

    def write(name: str, table: pa.Table) -> None:
        write_table(table, layout.table_dir(spec.out, name) / f"part-{spec.part:05d}.parquet")
        rows[name] = table.num_rows

    people = build_people(rng, world, spec.lo, spec.hi)
    ids = customer_ids(people.index)
    customers = customer_columns(rng, world, people, ids)
    adoption, adopted = draw_adoption(rng, world, people, customers)
    customers["has_card"] |= adopted[:, PRODUCT["credit-card"]]
    write("customers", _table(customers, layout.CUSTOMERS))
    write("adoption", _by_customer(adoption, ids, layout.ADOPTION))
    who, cells, start, end = draw_stays(rng, world, people)
    stays = {"who": who, "cell_id": labels(world.cell_ids, cells), "start_ms": start, "end_ms": end}
    del who, cells, start, end
    write("stays", _by_customer(stays, ids, layout.STAYS))
    del stays
    write("sessions", _by_customer(draw_sessions(rng, world, people, customers["data_gb"]), ids, layout.SESSIONS))
    write("calls", _by_customer(draw_calls(rng, world, people, customers["_trend"]), ids, layout.CALLS))
    write("contacts", _by_customer(draw_contacts(rng, world, people), ids, layout.CONTACT_HISTORY))
    latent = {p: people.prefs[:, i].astype(np.float32) for i, p in enumerate(PREFERENCES)}
    return {
        "rows": rows,
        "latent": pa.table({"customer_id": ids, **latent}),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "cpu_s": time.process_time() - cpu_started,
    }


def generate(
    out: Path, *, customers: int, days: int = 30, seed: int = 7, parts: int | None = None, start: str = "2026-10-01"
) -> dict[str, Any]:
    """Writes a synthetic data set to ``out`` (see ``layout.py``) and ``out/manifest.json``, and
    returns the manifest: the parameters, rows per table, wall time and peak memory.

    One Ray task per part when Ray is up, else in this process. The per-customer tables of an
    earlier data set in ``out`` are removed first, so no stale part survives a smaller ``parts``."""
    timer = JobTimer()
    parts = max(1, customers // CUSTOMERS_PER_PART) if parts is None else parts
    _check(customers, days, parts, start)
    out = Path(out)
    world = build_world(seed, days, start)
    shared = {"places": world.places, "cells": world.cells, "products": world.products, "events": world.events}
    for name, table in shared.items():
        write_table(table, layout.table_dir(out, name) / f"{name}.parquet")
    for name in layout.PER_CUSTOMER:
        shutil.rmtree(layout.table_dir(out, name), ignore_errors=True)
    bounds = [customers * k // parts for k in range(parts + 1)]
    specs = [PartSpec(out, world, seed, k, bounds[k], bounds[k + 1]) for k in range(parts)]
    results = run_parts(generate_part, specs, label="generate")
    write_table(pa.concat_tables(r["latent"] for r in results), out / "truth" / "latent.parquet")
    rows = {name: table.num_rows for name, table in shared.items()}
    rows |= {name: sum(r["rows"][name] for r in results) for name in layout.PER_CUSTOMER}
    manifest = {
        "generator": __name__,
        "seed": seed,
        "customers": customers,
        "days": days,
        "start": start,
        "start_ms": world.start_ms,
        "end_ms": world.start_ms + days * DAY_MS,
        "timezone": TIMEZONE,
        "parts": parts,
        "preferences": list(PREFERENCES),
        "truth": "truth/latent.parquet",
        "rows": rows,
        **timer.figures(),
        "task_peak_rss_mb": max(r["peak_rss_mb"] for r in results),  # of a process that ran parts
        "task_cpu_s": round(sum(r["cpu_s"] for r in results), 1),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def _check(customers: int, days: int, parts: int, start: str) -> None:
    if customers < 1 or days < 1:
        raise InputError(f"generate: customers and days must be at least 1, got customers={customers}, days={days}")
    if not 1 <= parts <= customers:
        raise InputError(f"generate: parts must be between 1 and customers ({customers}), got {parts}")
    try:
        date.fromisoformat(start)
    except ValueError:
        raise InputError(f"generate: start must be a date like 2026-10-01, got {start!r}") from None
