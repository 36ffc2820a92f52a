"""``esp job sync``: publish what the batch jobs computed to the profile store, as one version.

For every customer of the customers table (one Ray task per part, each writing its customers in
batches through :class:`runtime.events.profiles.BatchProfiles`)::

    tags      its batch tag names (jobs/tags), strongest first, at most ``max_tags``
    segments  the segments it is a member of (jobs/segments/<name>.roaring)
    scores    {product: score} of its ``top_scores`` best products (jobs/matrix)

Attributes a customer has none of are left out (a customer with none has no batch profile).
When every part is written, ``switch(version)`` makes the version the one readers see, at once:
``ProfileStore.get_many`` reads the old version or the new one, never a mix.

The summary (jobs/sync/summary.json) counts what was written and reports **tag usage**, the
tag lifecycle: how many customers carry each tag and, given the rule and segment documents,
which carried tags nothing uses (see :func:`tag_usage`).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyroaring import BitMap

from runtime.batch import layout
from runtime.batch.runner import JobTimer, run_parts, write_summary
from runtime.batch.segments import customer_index, job_rows
from runtime.errors import ExpressionError, NotFound
from runtime.redis_client import connect

JOB = "sync"
MAX_TAGS = 200


def default_version(now_ms: int | None = None) -> str:
    """A version named by the time it was computed, e.g. ``20261123T020000.123Z``."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(now_ms // 1000)) + f".{now_ms % 1000:03d}Z"


# --- per customer: tags, segments, scores --------------------------------------------------------


def _grouped(table: pa.Table, sort: list[tuple[str, str]], columns: list[str]) -> Iterator[tuple[str, list[tuple]]]:
    """``columns``' values by customer (a tuple per row), in ``sort`` order within each customer."""
    if table.num_rows == 0:
        return
    ordered = table.sort_by([("customer_id", "ascending"), *sort])
    ids = ordered["customer_id"].to_pylist()
    rows = list(zip(*(ordered[column].to_pylist() for column in columns), strict=True))
    start = 0
    for i in range(1, len(ids) + 1):
        if i == len(ids) or ids[i] != ids[start]:
            yield ids[start], rows[start:i]
            start = i


def customer_tags(data: Path, part: Path, customers: pa.Array) -> dict[str, list[str]]:
    """Each customer's distinct tag names, strongest (``value``) first, then by name."""
    table = job_rows(data, "tags", part, customers, ["customer_id", "tag", "value"])
    table = table.filter(pc.is_valid(table["tag"]))
    if "value" in table.column_names:
        table = table.set_column(2, "value", pc.fill_null(pc.cast(table["value"], pa.float64()), 1.0))
    out = {}
    for customer, rows in _grouped(table, [("value", "descending"), ("tag", "ascending")], ["tag"]):
        out[customer] = list(dict.fromkeys(tag for (tag,) in rows))
    return out


def customer_scores(data: Path, part: Path, customers: pa.Array, top: int) -> dict[str, dict[str, float]]:
    """Each customer's ``top`` products by score (ties: product name)."""
    table = job_rows(data, "matrix", part, customers, ["customer_id", "product", "score"])
    table = table.filter(pc.and_(pc.is_valid(table["score"]), pc.is_valid(table["product"])))
    out = {}
    for customer, rows in _grouped(table, [("score", "descending"), ("product", "ascending")], ["product", "score"]):
        out[customer] = {product: round(float(score), 2) for product, score in rows[:top]}
    return out


def customer_segments(
    bitmaps: Mapping[str, BitMap], customers: Sequence[str], index: Sequence[int]
) -> dict[str, list[str]]:
    """Each customer's segments (sorted), from the segments' member bitmaps."""
    by_index: dict[int, list[str]] = {}
    part = BitMap(index)
    for name in sorted(bitmaps):
        for number in bitmaps[name] & part:
            by_index.setdefault(number, []).append(name)
    return {customer: by_index[i] for customer, i in zip(customers, index, strict=True) if i in by_index}


def load_bitmaps(data: Path) -> dict[str, BitMap]:
    return {
        path.stem: BitMap.deserialize(path.read_bytes())
        for path in sorted(layout.job_dir(data, "segments").glob("*.roaring"))
    }


def profiles(
    customers: Sequence[str],
    tags: Mapping[str, list[str]],
    segments: Mapping[str, list[str]],
    scores: Mapping[str, Mapping[str, float]],
    *,
    max_tags: int = MAX_TAGS,
) -> dict[str, dict[str, Any]]:
    """The batch profile of each customer: only the attributes it has. The lists and maps are
    the callers' own (not copied) unless a tag list must be cut to ``max_tags``: the profiles
    are written, not changed, and the copies were a third of a profile write's time."""
    out: dict[str, dict[str, Any]] = {}
    tags_of, segments_of, scores_of = tags.get, segments.get, scores.get
    for customer in customers:
        attrs: dict[str, Any] = {}
        found = tags_of(customer)
        if found:
            attrs["tags"] = found if len(found) <= max_tags else found[:max_tags]
        found = segments_of(customer)
        if found:
            attrs["segments"] = found
        score = scores_of(customer)
        if score:
            attrs["scores"] = score if score.__class__ is dict else dict(score)
        out[customer] = attrs
    return out


def _sync_part(task: tuple[Path, Path, str, str, int, int, int]) -> dict[str, Any]:

    from runtime.events.profiles import BatchProfiles

    data, part, redis_url, version, top_scores, max_tags, batch = task
    ids = pq.read_table(part, columns=["customer_id"])["customer_id"].combine_chunks()
    customers = ids.to_pylist()
    tags = customer_tags(data, part, ids)
    segments = customer_segments(load_bitmaps(data), customers, customer_index(ids).tolist())
    scores = customer_scores(data, part, ids, top_scores)
    client = connect(redis_url)
    try:
        store = BatchProfiles(client, batch=batch)
        for start in range(0, len(customers), batch):
            chunk = customers[start : start + batch]
            store.write(version, profiles(chunk, tags, segments, scores, max_tags=max_tags))
    finally:
        client.close()
    carried = Counter(tag for customer in customers for tag in tags.get(customer, ()))
    return {
        "customers": len(customers),
        "with_tags": sum(1 for c in customers if tags.get(c)),
        "with_segments": sum(1 for c in customers if segments.get(c)),
        "with_scores": sum(1 for c in customers if scores.get(c)),
        "tags_capped": sum(1 for c in customers if len(tags.get(c, ())) > max_tags),
        "written": sum(1 for c in customers if tags.get(c) or segments.get(c) or scores.get(c)),
        "carried": carried,
    }


# --- tag usage: the tag lifecycle ----------------------------------------------------------------


def _expressions(node: Any) -> Iterator[str]:
    """Every ``where`` string anywhere in a document (rule conditions, audience, segment)."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            if key == "where" and isinstance(value, str):
                yield value
            else:
                yield from _expressions(value)
    elif isinstance(node, list):
        for item in node:
            yield from _expressions(item)


def tag_terms(document: Mapping[str, Any]) -> tuple[set[str], set[str]]:
    """What tags a rule or segment document can use: exact names (``audience.tag``, every string
    literal of its ``where`` expressions) and prefixes (literals passed to ``startsWith``)."""
    from runtime.expr.lexer import tokenize

    exact: set[str] = set()
    prefixes: set[str] = set()
    audience = document.get("audience")
    if isinstance(audience, Mapping) and isinstance(audience.get("tag"), str):
        exact.add(audience["tag"])
    for source in _expressions(document):
        try:
            tokens = tokenize(source)
        except ExpressionError:
            continue
        for i, token in enumerate(tokens):
            if token.kind != "string":
                continue
            exact.add(str(token.value))
            if (
                i >= 2
                and tokens[i - 1].kind == "("
                and tokens[i - 2].kind == "ident"
                and tokens[i - 2].value == "startsWith"
            ):
                prefixes.add(str(token.value))
    return exact, prefixes


def tag_usage(carried: Mapping[str, int], documents: Sequence[Mapping[str, Any]] | None) -> dict[str, Any]:
    """How many customers carry each tag (most first) and, when ``documents`` (rules and
    segments) are given: ``used`` (tag -> the documents using it), ``unused`` (carried tags no
    document uses: candidates to retire) and ``missing`` (``audience.tag`` names no customer
    carries). A tag is used by a document whose ``audience.tag`` names it, or one of whose
    ``where`` expressions has it as a string literal or starts it with a ``startsWith`` literal."""
    ranked = dict(sorted(carried.items(), key=lambda item: (-item[1], item[0])))
    usage: dict[str, Any] = {"tags": len(ranked), "carried": ranked}
    if documents is None:
        return usage
    terms = {f"{doc.get('kind', '?')}/{doc.get('name', '?')}": tag_terms(doc) for doc in documents}
    used: dict[str, list[str]] = {}
    for tag in ranked:
        users = [
            label
            for label, (exact, prefixes) in terms.items()
            if tag in exact or any(tag.startswith(p) for p in prefixes)
        ]
        if users:
            used[tag] = sorted(users)
    missing: dict[str, list[str]] = {}
    for doc in documents:
        audience = doc.get("audience")
        tag = audience.get("tag") if isinstance(audience, Mapping) else None
        if isinstance(tag, str) and tag not in ranked:
            missing.setdefault(tag, []).append(f"{doc.get('kind', '?')}/{doc.get('name', '?')}")
    usage["used"] = used
    usage["unused"] = [tag for tag in ranked if tag not in used]
    usage["missing"] = {tag: sorted(labels) for tag, labels in sorted(missing.items())}
    return usage


# --- the job -------------------------------------------------------------------------------------


def run(
    data: Path,
    redis_url: str,
    *,
    version: str | None = None,
    top_scores: int = 5,
    rules_and_segments: Sequence[Mapping[str, Any]] | None = None,
    max_tags: int = MAX_TAGS,
    batch: int = 5000,
) -> dict[str, Any]:
    """Write every customer's batch profile as ``version`` (default: a timestamp), then switch
    readers to it. Returns the summary (also in jobs/sync/summary.json)."""

    from runtime.events.profiles import BatchProfiles

    timer = JobTimer()
    version = version or default_version()
    parts = layout.parts(data, "customers")
    if not parts:
        raise NotFound(f"no customer parts in {layout.table_dir(data, 'customers')}: generate the data first")
    tasks = [(Path(data), part, redis_url, version, top_scores, max_tags, batch) for part in parts]
    results = run_parts(_sync_part, tasks, label="sync")
    client = connect(redis_url)
    try:
        previous = BatchProfiles(client).switch(version)
    finally:
        client.close()
    carried: Counter[str] = Counter()
    for result in results:
        carried.update(result.pop("carried"))
    totals = {key: sum(r[key] for r in results) for key in results[0]}
    summary = {
        "job": JOB,
        "version": version,
        "previous": previous,
        **totals,
        "segments": sorted(load_bitmaps(data)),
        "tag_usage": tag_usage(carried, rules_and_segments),
        **timer.figures(),
    }
    write_summary(layout.job_dir(data, JOB), summary)
    return summary
