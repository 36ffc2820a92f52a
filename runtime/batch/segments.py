"""``esp job segments``: customers for whom a segment's ``where`` holds, as bitmaps.

Each customer part is one Ray task. It builds, per customer, the context a segment's ``where``
sees::

    {"tags": ["value:5", "arpu-trend:up", ...],        # the customer's batch tags (jobs/tags), names
     "profile": {"age": 34, "tier": "gold", ...}}        # the customer's row of the customers table

and evaluates every segment's compiled ``where`` on it (``Expr.predicate``: an error is false).

Members are kept as pyroaring ``BitMap`` s of the **customer index**: the integer of the digits of
``customer_id`` (``c000123`` -> 123; see :func:`customer_index`). Ids must have digits, at most
``2**32 - 1`` as a number, and no two customers may share the number: the job says so otherwise.

Outputs in ``DATA/jobs/segments/``::

    <segment>.roaring       BitMap.serialize() of its members' indices (stale ones are removed)
    members.parquet         (customer_id, segment), one row per membership
    stats.json              per segment and for all customers: tag, tier and age-band counts
    summary.json            per segment: size, share, top tags with lift, tiers, age bands;
                            ``compare`` for the pairs asked

:func:`load` reads the bitmaps and stats back as :class:`SegmentStats`; :func:`compare` sets two
of them side by side (sizes, overlap, Jaccard, tag lift differences).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyroaring import BitMap

from runtime.batch import layout
from runtime.batch.runner import JobTimer, run_parts, write_summary, write_table
from runtime.errors import EspError, InputError, NotFound
from runtime.policy.models import Segment

JOB = "segments"
MEMBERS = pa.schema([("customer_id", pa.string()), ("segment", pa.string())])
AGE_BANDS = ((25, "<25"), (35, "25-34"), (45, "35-44"), (55, "45-54"), (65, "55-64"))
_INDEX_MAX = 2**32 - 1


# --- the customer index --------------------------------------------------------------------------


def customer_index(customer_ids: pa.Array | pa.ChunkedArray | Sequence[str]) -> np.ndarray:
    """The bitmap index of each customer: the integer of the digits of its id (``c000123`` ->
    123), as ``uint32``. Stable across runs and jobs, so a bitmap of one run reads in another."""
    ids = customer_ids if isinstance(customer_ids, pa.Array | pa.ChunkedArray) else pa.array(customer_ids, pa.string())
    if len(ids) == 0:
        return np.zeros(0, np.uint32)
    digits = pc.utf8_ltrim(pc.replace_substring_regex(ids, pattern=r"\D", replacement=""), characters="0")
    has_digits = pc.fill_null(pc.match_substring_regex(ids, pattern=r"\d"), False)
    short = pc.less_equal(pc.utf8_length(digits), 10)
    if not pc.all(pc.fill_null(pc.and_(has_digits, short), False)).as_py():
        raise InputError(_bad_ids(ids), reason="invalid_customer_id")
    numbers = pc.cast(pc.if_else(pc.equal(digits, ""), "0", digits), pa.uint64()).to_numpy(zero_copy_only=False)
    if len(numbers) and int(numbers.max()) > _INDEX_MAX:
        raise InputError(_bad_ids(ids), reason="invalid_customer_id")
    return numbers.astype(np.uint32)


def _bad_ids(ids: pa.Array | pa.ChunkedArray) -> str:
    def bad(customer: str | None) -> bool:
        digits = re.sub(r"\D", "", customer or "")
        return not digits or int(digits) > _INDEX_MAX

    examples = [customer for customer in ids.to_pylist() if bad(customer)][:3]
    return f"customer ids must contain digits forming a number up to {_INDEX_MAX} (the bitmap index), got {examples}"


# --- reading one part of a job's output ----------------------------------------------------------


def job_rows(data: Path, job: str, part: Path, customers: pa.Array | pa.ChunkedArray, columns: list[str]) -> pa.Table:
    """The rows of ``jobs/<job>/`` for ``customers`` (the customers of input part ``part``).
    Jobs write one output part per input part with the same file name; when that part holds
    exactly these customers' rows it is all that is read, else every part is read and filtered."""
    directory = layout.job_dir(data, job)
    same = directory / part.name
    if same.exists():
        table = pq.read_table(same, columns=columns)
        mine = table.filter(pc.is_in(table["customer_id"], value_set=_plain(customers)))
        if mine.num_rows == table.num_rows:
            return mine
    files = sorted(directory.glob("part-*.parquet"))
    if not files:
        return pa.table({name: pa.array([], pa.string()) for name in columns}).select(columns)
    table = pa.concat_tables([pq.read_table(f, columns=columns) for f in files], promote_options="default")
    return table.filter(pc.is_in(table["customer_id"], value_set=_plain(customers)))


def _plain(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values


def tags_by_customer(data: Path, part: Path, customers: pa.Array | pa.ChunkedArray) -> dict[str, list[str]]:
    """Each customer's distinct batch tag names (sorted) from ``jobs/tags``."""
    table = job_rows(data, "tags", part, customers, ["customer_id", "tag"])
    grouped = table.group_by("customer_id", use_threads=False).aggregate([("tag", "distinct")])
    return {
        customer: sorted(t for t in tags if t is not None)
        for customer, tags in zip(grouped["customer_id"].to_pylist(), grouped["tag_distinct"].to_pylist(), strict=True)
    }


# --- evaluating one part -------------------------------------------------------------------------


def age_band(age: int | None) -> str:
    if age is None:
        return "unknown"
    for upper, band in AGE_BANDS:
        if age < upper:
            return band
    return "65+"


@dataclass(slots=True)
class Counts:
    """Who is in a set of customers: how many carry each tag, each tier, each age band."""

    tags: Counter[str]
    tiers: Counter[str]
    ages: Counter[str]

    @classmethod
    def empty(cls) -> Counts:
        return cls(Counter(), Counter(), Counter())

    def add(self, tags: Iterable[str], profile: Mapping[str, Any]) -> None:
        self.tags.update(tags)
        self.tiers[str(profile.get("tier") or "unknown")] += 1
        self.ages[age_band(profile.get("age"))] += 1

    def merge(self, other: Counts) -> None:
        self.tags.update(other.tags)
        self.tiers.update(other.tiers)
        self.ages.update(other.ages)

    def to_json(self) -> dict[str, dict[str, int]]:
        return {"tags": dict(self.tags), "tiers": dict(self.tiers), "ages": dict(self.ages)}

    @classmethod
    def from_json(cls, raw: Mapping[str, Mapping[str, int]]) -> Counts:
        return cls(Counter(raw["tags"]), Counter(raw["tiers"]), Counter(raw["ages"]))


@dataclass(slots=True)
class PartResult:
    customers: int
    everyone: bytes  # serialized BitMap of every customer index of the part
    members: dict[str, bytes]  # segment -> serialized BitMap
    member_ids: dict[str, list[str]]
    population: Counts
    counts: dict[str, Counts]


def _evaluate_part(task: tuple[Path, Path, list[tuple[str, str]]]) -> PartResult:
    from runtime.expr import compile_expr

    data, part, specs = task
    exprs = [(name, compile_expr(where, max_length=4000)) for name, where in specs]
    table = pq.read_table(part)
    ids = table["customer_id"]
    index = customer_index(ids).tolist()
    tags = tags_by_customer(data, part, ids)
    population = Counts.empty()
    members = {name: BitMap() for name, _ in exprs}
    member_ids: dict[str, list[str]] = {name: [] for name, _ in exprs}
    counts = {name: Counts.empty() for name, _ in exprs}
    for number, profile in zip(index, table.to_pylist(), strict=True):
        context = {"tags": tags.get(profile["customer_id"], []), "profile": profile}
        population.add(context["tags"], profile)
        for name, expr in exprs:
            if expr.predicate(context):
                members[name].add(number)
                member_ids[name].append(profile["customer_id"])
                counts[name].add(context["tags"], profile)
    everyone = BitMap(index).serialize()
    serialized = {name: bitmap.serialize() for name, bitmap in members.items()}
    return PartResult(len(index), everyone, serialized, member_ids, population, counts)


# --- stats, profiles and comparison --------------------------------------------------------------


@dataclass(slots=True)
class SegmentStats:
    """One segment's members and who they are, next to the whole customer base."""

    name: str
    members: BitMap
    counts: Counts
    population: Counts
    population_size: int

    @property
    def size(self) -> int:
        return len(self.members)

    def lift(self, tag: str) -> float | None:
        """How much more common ``tag`` is among members than among all customers (1 = as
        common); None when no customer carries it."""
        overall = self.population.tags.get(tag, 0)
        if not overall or not self.size:
            return None
        return (self.counts.tags.get(tag, 0) / self.size) / (overall / self.population_size)


def profile(stats: SegmentStats, *, top_tags: int = 20) -> dict[str, Any]:
    """Size, share of all customers, the ``top_tags`` most carried tags (members, share, lift),
    tier and age-band distributions."""
    ranked = sorted(stats.counts.tags.items(), key=lambda item: (-item[1], item[0]))[:top_tags]
    tags = [
        {"tag": tag, "members": n, "share": _ratio(n, stats.size), "lift": _round(stats.lift(tag))} for tag, n in ranked
    ]
    return {
        "size": stats.size,
        "share": _ratio(stats.size, stats.population_size),
        "tags": tags,
        "tiers": dict(sorted(stats.counts.tiers.items())),
        "ages": _ordered_ages(stats.counts.ages),
    }


def compare(a: SegmentStats, b: SegmentStats, *, top_tags: int = 10) -> dict[str, Any]:
    """Two segments side by side: sizes, overlap, Jaccard (overlap / union) and the
    ``top_tags`` tags whose lift differs most (``difference = lift_a - lift_b``)."""
    overlap = a.members.intersection_cardinality(b.members)
    union = a.members.union_cardinality(b.members)
    rows = []
    for tag in set(a.counts.tags) | set(b.counts.tags):
        lift_a, lift_b = a.lift(tag) or 0.0, b.lift(tag) or 0.0
        rows.append({"tag": tag, "lift_a": round(lift_a, 4), "lift_b": round(lift_b, 4), "difference": lift_a - lift_b})
    rows.sort(key=lambda row: (-abs(row["difference"]), row["tag"]))
    for row in rows:
        row["difference"] = round(row["difference"], 4)
    return {
        "a": a.name,
        "b": b.name,
        "size_a": a.size,
        "size_b": b.size,
        "overlap": overlap,
        "only_a": a.size - overlap,
        "only_b": b.size - overlap,
        "union": union,
        "jaccard": _ratio(overlap, union),
        "tag_lift": rows[:top_tags],
    }


def _ratio(n: int, d: int) -> float:
    return round(n / d, 6) if d else 0.0


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _ordered_ages(ages: Mapping[str, int]) -> dict[str, int]:
    order = [band for _, band in AGE_BANDS] + ["65+", "unknown"]
    return {band: ages[band] for band in order if ages.get(band)}


# --- the job -------------------------------------------------------------------------------------


def _specs(segments: Sequence[Segment | Mapping[str, Any]]) -> list[Segment]:
    docs = [s if isinstance(s, Segment) else Segment.model_validate({"kind": "segment", **s}) for s in segments]
    names = [doc.name for doc in docs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InputError(f"segment names must be unique, got {duplicates} more than once", reason="invalid_segments")
    return docs


def run(
    data: Path,
    segments: Sequence[Segment | Mapping[str, Any]],
    *,
    compare_pairs: Sequence[tuple[str, str]] = (),
    top_tags: int = 20,
) -> dict[str, Any]:
    """Materialise ``segments`` (Segment documents or dicts with ``name`` and ``where``) over
    the customers of ``data``; returns the summary (also written to jobs/segments/summary.json)."""
    timer = JobTimer()
    docs = _specs(segments)
    known = {doc.name for doc in docs}
    for pair in compare_pairs:
        if not set(pair) <= known:
            raise InputError(f"compare {pair}: segments must be among {sorted(known)}", reason="invalid_segments")
    parts = layout.parts(data, "customers")
    if not parts:
        raise NotFound(f"no customer parts in {layout.table_dir(data, 'customers')}: generate the data first")
    tasks = [(Path(data), part, [(doc.name, doc.where) for doc in docs]) for part in parts]
    results = run_parts(_evaluate_part, tasks, label="segments")
    stats = _merge(docs, results)
    out = _write(Path(data), docs, results, stats)
    summary: dict[str, Any] = {
        "job": JOB,
        "customers": sum(r.customers for r in results),
        "parts": len(parts),
        "segments": {doc.name: {"where": doc.where, **profile(stats[doc.name], top_tags=top_tags)} for doc in docs},
        "members": str(out / "members.parquet"),
        "bitmaps": {doc.name: str(out / f"{doc.name}.roaring") for doc in docs},
    }
    if compare_pairs:
        summary["compare"] = [compare(stats[a], stats[b]) for a, b in compare_pairs]
    summary.update(timer.figures())
    write_summary(out, summary)
    return summary


def _merge(docs: Sequence[Segment], results: Sequence[PartResult]) -> dict[str, SegmentStats]:
    everyone = BitMap()
    population = Counts.empty()
    for result in results:
        everyone |= BitMap.deserialize(result.everyone)
        population.merge(result.population)
    total = sum(r.customers for r in results)
    if len(everyone) != total:
        raise EspError(
            f"{total} customers map to {len(everyone)} bitmap indices: two customer ids have the same digits",
            reason="invalid_customer_id",
        )
    stats = {}
    for doc in docs:
        members, counts = BitMap(), Counts.empty()
        for result in results:
            members |= BitMap.deserialize(result.members[doc.name])
            counts.merge(result.counts[doc.name])
        stats[doc.name] = SegmentStats(doc.name, members, counts, population, total)
    return stats


def _write(data: Path, docs: Sequence[Segment], results: Sequence[PartResult], stats: dict[str, SegmentStats]) -> Path:
    out = layout.job_dir(data, JOB)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("*.roaring"):
        if stale.stem not in stats:
            stale.unlink()
    for name, segment in stats.items():
        (out / f"{name}.roaring").write_bytes(segment.members.serialize())
    customers: list[str] = []
    names: list[str] = []
    for doc in docs:
        for result in results:
            customers += result.member_ids[doc.name]
            names += [doc.name] * len(result.member_ids[doc.name])
    write_table(
        pa.table([pa.array(customers, pa.string()), pa.array(names, pa.string())], schema=MEMBERS),
        out / "members.parquet",
    )
    population = next(iter(stats.values())).population if stats else Counts.empty()
    raw = {
        "customers": sum(r.customers for r in results),
        "population": population.to_json(),
        "segments": {name: s.counts.to_json() for name, s in stats.items()},
    }
    (out / "stats.json").write_text(json.dumps(raw))
    return out


def load(data: Path) -> dict[str, SegmentStats]:
    """The segments of the last run, from their bitmaps and ``stats.json``."""
    out = layout.job_dir(data, JOB)
    if not (out / "stats.json").exists():
        raise NotFound(f"no segments in {out}: run the segments job first")
    raw = json.loads((out / "stats.json").read_text())
    population = Counts.from_json(raw["population"])
    return {
        name: SegmentStats(
            name,
            BitMap.deserialize((out / f"{name}.roaring").read_bytes()),
            Counts.from_json(counts),
            population,
            raw["customers"],
        )
        for name, counts in raw["segments"].items()
    }


def members(data: Path) -> pa.Table:
    """``members.parquet``: (customer_id, segment)."""
    path = layout.job_dir(data, JOB) / "members.parquet"
    if not path.exists():
        raise NotFound(f"no segment members at {path}: run the segments job first")
    return pq.read_table(path, schema=MEMBERS)
