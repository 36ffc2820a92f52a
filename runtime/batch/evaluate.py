"""``esp job evaluate``: did a campaign work? Reach, response and conversion of the contacted
customers against the control group, overall and by segment, channel, product, tier and day.

Where the rows come from:

- a **run** of a batch campaign (``run_id``): its ``audience.parquet`` (control flags, what was
  submitted) joined with ``responses.parquet`` in the same directory. A run has no real
  responses in a synthetic data set, so when that file is missing :func:`simulate_responses`
  draws it from the generator's latent preferences (the model is documented there);
- otherwise the generator's **contact history** (``contacts``, :data:`layout.CONTACT_HISTORY`)
  rows of the campaign, which carry their control flags; failing that, the latest run.

Metrics (:func:`arm_metrics`): the target arm is the customers reached (submitted, not held
out), the control arm the held-out ones. Rates are per customer of the arm. **Lift** is the
difference of proportions (target rate - control rate) with a 95% confidence interval by
**Newcombe's hybrid score method** (method 10 of Newcombe 1998: Wilson score intervals of each
rate, combined). Unlike the Wald interval it stays inside [-1, 1] and does not collapse to a
point when a rate is 0 or 1, which matters for small control groups. ``relative_lift`` is
``target / control - 1``.

Outputs in ``DATA/jobs/evaluate/<campaign>/``: ``summary.json``, ``report.html`` (offline,
inline SVG) and ``report.xlsx`` (a sheet per breakdown), see :mod:`runtime.batch.report`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from runtime.batch import layout
from runtime.batch.campaign import run_dir
from runtime.batch.runner import JobTimer, write_summary, write_table
from runtime.errors import NotFound

JOB = "evaluate"
Z95 = 1.959963984540054
BREAKDOWNS = ("segment", "channel", "product", "tier", "day")
PREFERENCES = ("sports", "music", "travel", "finance", "video", "family", "car")
RESPONSES = pa.schema(
    [
        ("customer_id", pa.string()),
        ("control", pa.bool_()),
        ("reached", pa.bool_()),
        ("affinity", pa.float32()),  # the customer's preference for the product, 0..1
        ("responded", pa.bool_()),
        ("converted", pa.bool_()),
        ("responded_ms", pa.int64()),  # null: did not respond
    ]
)
DAY_MS = 86_400_000

# --- the response model ----------------------------------------------------------------------------

#: Which latent preference a product appeals to: the first keyword its name contains wins.
PRODUCT_PREFERENCE = (
    ("car", "car"),
    ("auto", "car"),
    ("roaming", "travel"),
    ("travel", "travel"),
    ("flight", "travel"),
    ("video", "video"),
    ("5g", "video"),
    ("stream", "video"),
    ("music", "music"),
    ("sport", "sports"),
    ("fitness", "sports"),
    ("family", "family"),
    ("kid", "family"),
    ("home", "family"),
    ("wealth", "finance"),
    ("fund", "finance"),
    ("invest", "finance"),
    ("loan", "finance"),
    ("card", "finance"),
    ("credit", "finance"),
    ("deposit", "finance"),
    ("insurance", "finance"),
)


@dataclass(frozen=True, slots=True)
class ResponseModel:
    """P(respond) = base + slope * affinity, for contacted customers and for everyone else
    (control, or not submitted: they can still find the product on their own); P(convert |
    responded) = convert_base + convert_slope * affinity for both. A response comes uniformly
    within ``window_ms`` of the run's start."""

    contacted_base: float = 0.03
    contacted_slope: float = 0.22
    organic_base: float = 0.01
    organic_slope: float = 0.04
    convert_base: float = 0.25
    convert_slope: float = 0.45
    window_ms: int = 3 * DAY_MS

    def respond_p(self, affinity: np.ndarray, reached: np.ndarray) -> np.ndarray:
        contacted = self.contacted_base + self.contacted_slope * affinity
        organic = self.organic_base + self.organic_slope * affinity
        return np.where(reached, contacted, organic)

    def convert_p(self, affinity: np.ndarray) -> np.ndarray:
        return self.convert_base + self.convert_slope * affinity


def preference_for(product: str | None) -> str | None:
    """The latent preference ``product`` appeals to; None: the mean of all of them."""
    name = (product or "").lower()
    return next((pref for keyword, pref in PRODUCT_PREFERENCE if keyword in name), None)


def affinities(latent: pa.Table, product: str | None) -> dict[str, float]:
    """Each customer's affinity for ``product`` in [0, 1]: its latent preference (the mean of all
    when the product maps to none). A preference column outside [0, 1] is turned into its
    percentile rank first, so any scale the generator uses works."""
    columns = [preference_for(product)] if preference_for(product) in latent.column_names else None
    columns = columns or [c for c in PREFERENCES if c in latent.column_names]
    if not columns:
        raise NotFound(f"latent preferences have none of {list(PREFERENCES)}: got {latent.column_names}")
    values = np.mean([_unit(latent[c].to_numpy(zero_copy_only=False).astype(float)) for c in columns], axis=0)
    return dict(zip(latent["customer_id"].to_pylist(), values.tolist(), strict=True))


def _unit(values: np.ndarray) -> np.ndarray:
    values = np.nan_to_num(values, nan=0.0)
    if len(values) == 0 or (values.min() >= 0.0 and values.max() <= 1.0):
        return values
    return (np.argsort(np.argsort(values, kind="stable"), kind="stable") + 0.5) / len(values)


def _uniforms(seed: int, campaign: str, run_id: str, customers: Sequence[str]) -> np.ndarray:
    """Three uniforms in [0, 1) per customer, fixed by seed, campaign, run and customer."""
    out = np.empty((len(customers), 3))
    for i, customer in enumerate(customers):
        digest = hashlib.blake2b(f"{seed}\x1f{campaign}\x1f{run_id}\x1f{customer}".encode(), digest_size=24).digest()
        out[i] = [int.from_bytes(digest[j : j + 8], "big") / 2**64 for j in (0, 8, 16)]
    return out


def simulate_responses(
    data: Path, campaign: str, run_id: str, seed: int = 0, *, model: ResponseModel | None = None
) -> Path:
    """Draw who of a run's audience responded and converted (:class:`ResponseModel` over the
    affinity of :func:`affinities` from ``DATA/truth/latent.parquet`` for the run's product) and
    write ``responses.parquet`` next to the audience. Deterministic per seed."""
    model = model or ResponseModel()
    directory = run_dir(data, campaign, run_id)
    audience = _read(directory / "audience.parquet", f"audience of run {run_id!r} of campaign {campaign!r}")
    info = _run_summary(directory)
    latent = _read(Path(data) / "truth" / "latent.parquet", "latent preferences (the generator's truth)")
    affinity_of = affinities(latent, info.get("product"))
    customers = audience["customer_id"].to_pylist()
    control = np.array(audience["control"].to_pylist(), dtype=bool)
    reached = np.array(audience["submitted"].to_pylist(), dtype=bool) & ~control
    affinity = np.array([affinity_of.get(c, 0.0) for c in customers])
    draws = _uniforms(seed, campaign, run_id, customers)
    responded = draws[:, 0] < model.respond_p(affinity, reached)
    converted = responded & (draws[:, 1] < model.convert_p(affinity))
    at_ms = int(info.get("started_ms", 0)) + (draws[:, 2] * model.window_ms).astype(np.int64)
    table = pa.table(
        [
            customers,
            control,
            reached,
            affinity.astype(np.float32),
            responded,
            converted,
            pa.array(at_ms, mask=~responded),
        ],
        schema=RESPONSES,
    )
    return write_table(table, directory / "responses.parquet")


# --- metrics (pure) -------------------------------------------------------------------------------


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe(x1: int, n1: int, x2: int, n2: int, z: float = Z95) -> tuple[float, float]:
    """95% interval of ``x1/n1 - x2/n2`` by Newcombe's hybrid score method (method 10)."""
    p1, p2 = x1 / n1, x2 / n2
    l1, u1 = wilson(x1, n1, z)
    l2, u2 = wilson(x2, n2, z)
    d = p1 - p2
    return d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)


@dataclass(frozen=True, slots=True)
class Arm:
    """Customers of one arm and how many of them responded and converted."""

    n: int
    responded: int
    converted: int


def _lift(key: str, x1: int, n1: int, x2: int, n2: int) -> dict[str, Any]:
    if not n1 or not n2:
        return {f"{key}_lift": None, f"{key}_lift_ci95": None, f"{key}_relative_lift": None}
    p1, p2 = x1 / n1, x2 / n2
    low, high = newcombe(x1, n1, x2, n2)
    return {
        f"{key}_lift": round(p1 - p2, 6),
        f"{key}_lift_ci95": [round(low, 6), round(high, 6)],
        f"{key}_relative_lift": round(p1 / p2 - 1, 6) if p2 else None,
    }


def arm_metrics(target: Arm, control: Arm) -> dict[str, Any]:
    """Reach, responses and conversions of both arms, their rates, and the lifts."""
    rate = lambda x, n: round(x / n, 6) if n else None  # noqa: E731
    return {
        "reached": target.n,
        "responded": target.responded,
        "converted": target.converted,
        "response_rate": rate(target.responded, target.n),
        "conversion_rate": rate(target.converted, target.n),
        "control": control.n,
        "control_responded": control.responded,
        "control_converted": control.converted,
        "control_response_rate": rate(control.responded, control.n),
        "control_conversion_rate": rate(control.converted, control.n),
        **_lift("response", target.responded, target.n, control.responded, control.n),
        **_lift("conversion", target.converted, target.n, control.converted, control.n),
    }


def breakdown(rows: pa.Table, by: str) -> list[dict[str, Any]]:
    """:func:`arm_metrics` per value of column ``by`` of ``rows`` (columns: ``by``, ``control``,
    ``responded``, ``converted``; one row per customer of an arm), sorted by value."""
    groups = _arms(rows, [by])
    return [
        {"group": "(none)" if value is None else value, **arm_metrics(target, control)}
        for (value,), (target, control) in sorted(
            groups.items(), key=lambda item: (item[0][0] is None, str(item[0][0]))
        )
    ]


def overall(rows: pa.Table) -> dict[str, Any]:
    """:func:`arm_metrics` of all rows."""
    target, control = _arms(rows, []).get((), (Arm(0, 0, 0), Arm(0, 0, 0)))
    return arm_metrics(target, control)


def _arms(rows: pa.Table, keys: list[str]) -> dict[tuple[Any, ...], tuple[Arm, Arm]]:
    """(target, control) arms per value of ``keys``."""
    aggregates = [("responded", "sum"), ("converted", "sum"), ([], "count_all")]
    grouped = rows.group_by([*keys, "control"], use_threads=False).aggregate(aggregates)
    found: dict[tuple[Any, ...], dict[bool, Arm]] = {}
    for row in grouped.to_pylist():
        arm = Arm(row["count_all"], int(row["responded_sum"] or 0), int(row["converted_sum"] or 0))
        found.setdefault(tuple(row[k] for k in keys), {})[bool(row["control"])] = arm
    empty = Arm(0, 0, 0)
    return {key: (pair.get(False, empty), pair.get(True, empty)) for key, pair in found.items()}


# --- the rows of an evaluation --------------------------------------------------------------------


def _read(path: Path, what: str) -> pa.Table:
    if not path.exists():
        raise NotFound(f"no {what} at {path}")
    return pq.read_table(path)


def _run_summary(directory: Path) -> dict[str, Any]:
    import json

    path = directory / "summary.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _day(ms: int | None) -> str | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d")


def run_rows(data: Path, campaign: str, run_id: str, *, seed: int = 0) -> tuple[pa.Table, dict[str, Any]]:
    """A run's arms: reached targets and control customers, with their responses (simulated
    first when the run has none)."""
    directory = run_dir(data, campaign, run_id)
    audience = _read(directory / "audience.parquet", f"audience of run {run_id!r} of campaign {campaign!r}")
    info = _run_summary(directory)
    simulated = not (directory / "responses.parquet").exists()
    if simulated:
        simulate_responses(data, campaign, run_id, seed)
    responses = pq.read_table(directory / "responses.parquet", columns=["customer_id", "responded", "converted"])
    rows = audience.join(responses, "customer_id", join_type="left outer")
    rows = rows.filter(pc.or_(rows["control"], rows["submitted"]))
    day = _day(info.get("started_ms"))
    rows = pa.table(
        {
            "customer_id": rows["customer_id"],
            "control": rows["control"],
            "channel": rows["channel"],
            "product": pa.array([info.get("product")] * rows.num_rows, pa.string()),
            "day": pa.array([day] * rows.num_rows, pa.string()),
            "responded": pc.fill_null(rows["responded"], False),
            "converted": pc.fill_null(rows["converted"], False),
        }
    )
    source = {"source": "run", "run": run_id, "simulated": simulated, "audience": audience.num_rows}
    return rows, source


def history_rows(data: Path, campaign: str) -> pa.Table:
    """The campaign's rows of the generator's contact history (``contacts``)."""
    tables = [pq.read_table(p) for p in layout.parts(data, "contacts")]
    if not tables:
        return pa.table(
            {
                name: pa.array([], field.type)
                for name, field in zip(layout.CONTACT_HISTORY.names, layout.CONTACT_HISTORY, strict=True)
            }
        )
    table = pa.concat_tables(tables, promote_options="default")
    table = table.filter(pc.equal(table["campaign"], campaign))
    days = [_day(ms) for ms in table["at_ms"].to_pylist()]
    return pa.table(
        {
            "customer_id": table["customer_id"],
            "control": pc.fill_null(table["control"], False),
            "channel": table["channel"],
            "product": table["product"],
            "day": pa.array(days, pa.string()),
            "responded": pc.fill_null(table["responded"], False),
            "converted": pc.fill_null(table["converted"], False),
        }
    )


def _latest_run(data: Path, campaign: str) -> str | None:
    runs = [p.parent for p in (layout.job_dir(data, "campaign") / campaign).glob("*/audience.parquet")]
    return max(runs, key=lambda p: p.stat().st_mtime).name if runs else None


def with_customer_columns(data: Path, rows: pa.Table) -> pa.Table:
    """``rows`` plus the customer's ``tier``."""
    ids = rows["customer_id"].combine_chunks() if rows.num_rows else pa.array([], pa.string())
    tiers: dict[str, str | None] = {}
    for part in layout.parts(data, "customers"):
        table = pq.read_table(part, columns=["customer_id", "tier"])
        table = table.filter(pc.is_in(table["customer_id"], value_set=ids))
        tiers.update(zip(table["customer_id"].to_pylist(), table["tier"].to_pylist(), strict=True))
    return rows.append_column("tier", pa.array([tiers.get(c) for c in rows["customer_id"].to_pylist()], pa.string()))


def by_segment(data: Path, rows: pa.Table) -> pa.Table:
    """``rows`` once per segment the customer is in (``segment``; null: in none)."""
    path = layout.job_dir(data, "segments") / "members.parquet"
    members = (
        pq.read_table(path)
        if path.exists()
        else pa.table({"customer_id": pa.array([], pa.string()), "segment": pa.array([], pa.string())})
    )
    return rows.join(members, "customer_id", join_type="left outer")


# --- the job ---------------------------------------------------------------------------------------


def evaluate(rows: pa.Table, segmented: pa.Table | None = None) -> dict[str, Any]:
    """Overall and per-breakdown metrics of prepared rows (see :func:`breakdown`)."""
    breakdowns = {}
    for by in BREAKDOWNS:
        table = segmented if by == "segment" else rows
        if table is not None and by in table.column_names:
            breakdowns[by] = breakdown(table, by)
    return {"overall": overall(rows), "breakdowns": breakdowns}


def run(data: Path, campaign: str, *, run_id: str | None = None, seed: int = 0) -> dict[str, Any]:
    """Evaluate ``campaign``: run ``run_id``, else its contact history, else its latest run.
    Returns the summary (also jobs/evaluate/<campaign>/summary.json) with the reports' paths."""
    from runtime.batch import report

    timer = JobTimer()
    data = Path(data)
    source: dict[str, Any]
    if run_id is None:
        rows = history_rows(data, campaign)
        source = {"source": "history", "rows": rows.num_rows}
        run_id = _latest_run(data, campaign) if rows.num_rows == 0 else None
    if run_id is not None:
        rows, source = run_rows(data, campaign, run_id, seed=seed)
    if rows.num_rows == 0:
        raise NotFound(
            f"campaign {campaign!r}: nothing to evaluate (no contact history, no run with contacts in "
            f"{layout.job_dir(data, 'campaign') / campaign})"
        )
    rows = with_customer_columns(data, rows)
    result = evaluate(rows, by_segment(data, rows))
    out = layout.job_dir(data, JOB) / campaign
    summary: dict[str, Any] = {
        "job": JOB,
        "campaign": campaign,
        **source,
        "ci": "95% interval of the difference of proportions, Newcombe hybrid score (Wilson) method",
        **result,
    }
    if source.get("simulated"):
        about = " ".join((ResponseModel.__doc__ or "").split())
        summary["model"] = {"about": about, **dataclasses.asdict(ResponseModel())}
    summary["report"] = {k: str(v) for k, v in report.write(out, summary).items()}
    summary.update(timer.figures())
    write_summary(out, summary)
    return summary
