"""The features of the match matrix: one float32 row per customer, columns named by
:class:`Vocabulary` (``matrix.py`` fits and scores on them).

From the customers table: age, gender, tier one-hot, plan, ARPU mean / last / trend, usage, car,
housing fund, card, bank, workplace, device brand bucket. Per customer, counts of the
``vocabulary_size`` most frequent tag keys (:func:`tag_keys`: ``value:5``,
``circle:demand:sports``, ``stay:frequent:office>tower``, ``event:cba-game``...); sessions per site
(share and minutes), hotline calls per line, and past campaign contacts and responses per product
(not conversions: those are adoptions). A missing input (no tags job run, no sessions table) gives
zero counts.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

TIERS = ("bronze", "silver", "gold", "platinum")
PLANS = ("prepaid", "4g-basic", "5g-basic", "5g-plus")
BRANDS = ("huawei", "apple", "xiaomi", "oppo", "vivo", "honor", "samsung")  # anything else: brand:other
CUSTOMER_FEATURES = (
    "age",
    "gender:f",
    *(f"tier:{t}" for t in TIERS),
    "tier:rank",
    *(f"plan:{p}" for p in PLANS),
    "arpu:mean",
    "arpu:last",
    "arpu:trend",
    "data_gb",
    "voice_min",
    "sms_count",
    "car_owner",
    "housing_fund",
    "has_card",
    "has_main_bank",
    "has_workplace",
    *(f"brand:{b}" for b in BRANDS),
    "brand:other",
)


def plain(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """A column's chunks as one array (an array as it is)."""
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values


def _floats(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """As float32, null -> NaN (the models treat NaN as missing)."""
    array = pc.cast(plain(values), pa.float32())
    return np.asarray(array.to_numpy(zero_copy_only=False), dtype=np.float32)


def _equals(values: pa.Array | pa.ChunkedArray, value: str) -> np.ndarray:
    return np.asarray(pc.fill_null(pc.equal(plain(values), value), False).to_numpy(zero_copy_only=False))


def arpu_features(arpu: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """(n, 3): mean monthly ARPU, the last month's, and the least-squares slope per month as a
    share of the mean (NaN where undefined). Null months are skipped."""
    arr = plain(arpu)
    n = len(arr)
    lengths = np.asarray(pc.list_value_length(arr).fill_null(0).to_numpy(), dtype=np.int64)
    y = np.asarray(pc.list_flatten(arr).to_numpy(zero_copy_only=False), dtype=np.float64)
    row = np.repeat(np.arange(n), lengths)
    x = (np.arange(len(y)) - np.repeat(np.cumsum(lengths) - lengths, lengths)).astype(np.float64)
    last = np.full(n, np.nan)
    last[lengths > 0] = y[np.cumsum(lengths)[lengths > 0] - 1]
    ok = ~np.isnan(y)
    row, x, y = row[ok], x[ok], y[ok]

    def total(w: np.ndarray) -> np.ndarray:
        return np.bincount(row, weights=w, minlength=n)

    k, sx, sy, sxy, sxx = total(np.ones_like(y)), total(x), total(y), total(x * y), total(x * x)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = sy / k
        slope = (k * sxy - sx * sy) / (k * sxx - sx * sx)
        trend = np.where(mean > 0, slope / mean, np.nan)
    return np.column_stack([mean, last, trend]).astype(np.float32)


def customer_features(customers: pa.Table) -> np.ndarray:
    """(customers, len(CUSTOMER_FEATURES)) float32, columns in the order of CUSTOMER_FEATURES."""
    col = customers.column
    tier = [_equals(col("tier"), t) for t in TIERS]
    rank = np.where(np.any(tier, axis=0), np.argmax(tier, axis=0), np.nan)
    gender = np.where(pc.is_null(col("gender")).to_numpy(zero_copy_only=False), np.nan, _equals(col("gender"), "f"))
    brand = pc.utf8_lower(plain(col("device_brand")))
    brands = [_equals(brand, b) for b in BRANDS]
    columns = [
        _floats(col("age")),
        gender,
        *tier,
        rank,
        *(_equals(col("plan"), p) for p in PLANS),
        *arpu_features(col("arpu")).T,
        _floats(col("data_gb")),
        _floats(col("voice_min")),
        _floats(col("sms_count")),
        _floats(col("car_owner")),
        _floats(col("housing_fund")),
        _floats(col("has_card")),
        pc.is_valid(col("main_bank")).to_numpy(zero_copy_only=False),
        pc.is_valid(col("work_cell")).to_numpy(zero_copy_only=False),
        *brands,
        ~np.any(brands, axis=0),
    ]
    return np.column_stack([np.asarray(c, dtype=np.float32) for c in columns])


def tag_keys(tag: str) -> list[str]:
    """The vocabulary keys a tag counts towards: its prefixes of one to three ``:`` segments, a
    category path segment (``a>b>c``) giving its l1 and l1>l2 levels and ending the prefixes.

    >>> tag_keys("stay:frequent:office>tower>grade-a-tower:day-weekday")
    ['stay', 'stay:frequent', 'stay:frequent:office', 'stay:frequent:office>tower']
    """
    keys: list[str] = []
    head = ""
    for segment in tag.split(":")[:3]:
        if ">" in segment:
            levels = segment.split(">")
            keys += [f"{head}{levels[0]}", f"{head}{levels[0]}>{levels[1]}"]
            break
        head = f"{head}{segment}"
        keys.append(head)
        head += ":"
    return keys


def tag_key_counts(tags: pa.Table) -> Counter[str]:
    """How many tag rows count towards each key (distinct tags are expanded, not rows)."""
    counts: Counter[str] = Counter()
    for item in pc.value_counts(plain(tags.column("tag"))).to_pylist():
        if item["values"] is not None:
            for key in tag_keys(item["values"]):
                counts[key] += item["counts"]
    return counts


def choose_vocabulary(counts: Counter[str], size: int) -> tuple[str, ...]:
    """The ``size`` most frequent keys (ties by name), sorted by name."""
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:size]
    return tuple(sorted(key for key, _ in ranked))


def tag_features(tags: pa.Table, customer_ids: pa.Array, vocabulary: Sequence[str]) -> tuple[np.ndarray, int]:
    """(customers, len(vocabulary)) float32: per customer, the tag rows counting towards each key;
    and the number of tag rows whose customer is not in ``customer_ids``."""
    out = np.zeros((len(customer_ids), len(vocabulary)), dtype=np.float32)
    if tags.num_rows == 0 or not vocabulary:
        return out, 0
    who = np.asarray(pc.index_in(plain(tags.column("customer_id")), value_set=customer_ids).fill_null(-1))
    distinct = pc.unique(plain(tags.column("tag"))).drop_null()
    code = np.asarray(pc.index_in(plain(tags.column("tag")), value_set=distinct).fill_null(-1))
    ok = (who >= 0) & (code >= 0)
    index = {key: j for j, key in enumerate(vocabulary)}
    rows, cols = [], []
    for i, tag in enumerate(distinct.to_pylist()):
        for key in tag_keys(tag):
            if key in index:
                rows.append(i)
                cols.append(index[key])
    per_tag = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(distinct), len(vocabulary)))
    present = sp.csr_matrix(
        (np.ones(int(ok.sum()), np.float32), (who[ok], code[ok])), shape=(len(customer_ids), len(distinct))
    )
    out[:] = (present @ per_tag).toarray()
    return out, int(np.sum((who < 0) & (code >= 0)))


def _index(values: pa.Array | pa.ChunkedArray, value_set: Sequence[str] | pa.Array) -> np.ndarray:
    """Position of each value in ``value_set``, -1 when absent or null."""
    found = pc.index_in(plain(values), value_set=pa.array(value_set, pa.string()))
    return np.asarray(found.fill_null(-1), dtype=np.int64)


def _counts(who: np.ndarray, what: np.ndarray, shape: tuple[int, int], weights: np.ndarray | None = None) -> np.ndarray:
    """(rows, columns) float32 sums of ``weights`` (or counts) per (who, what); -1s skipped."""
    ok = (who >= 0) & (what >= 0)
    flat = np.bincount(
        who[ok] * shape[1] + what[ok], None if weights is None else weights[ok], minlength=shape[0] * shape[1]
    )
    return flat.reshape(shape).astype(np.float32)


def session_features(sessions: pa.Table, customer_ids: pa.Array, sites: Sequence[str]) -> np.ndarray:
    """(customers, 1 + 2 x sites): sessions in all, then per site its share of them and its
    minutes in all (what a customer browses says what it is into)."""
    n, who = len(customer_ids), _index(sessions.column("customer_id"), customer_ids)
    site = _index(sessions.column("site"), sites)
    count = _counts(who, site, (n, len(sites)))
    seconds = np.asarray(pc.fill_null(sessions.column("duration_s"), 0).to_numpy(), dtype=np.float64)
    minutes = _counts(who, site, (n, len(sites)), seconds / 60)
    total = np.bincount(who[who >= 0], minlength=n).astype(np.float32)
    share = np.divide(count, total[:, None], out=np.zeros_like(count), where=total[:, None] > 0)
    return np.hstack([total[:, None], share, minutes])


def call_features(calls: pa.Table, customer_ids: pa.Array, lines: Sequence[str]) -> np.ndarray:
    """(customers, lines): hotline calls per line."""
    who = _index(calls.column("customer_id"), customer_ids)
    return _counts(who, _index(calls.column("line"), lines), (len(customer_ids), len(lines)))


def contact_features(contacts: pa.Table, customer_ids: pa.Array, products: Sequence[str]) -> np.ndarray:
    """(customers, 2 x products): past campaign contacts per product, then responses. Control
    rows (not contacted) and conversions are left out: a conversion is an adoption."""
    contacted = ~np.asarray(pc.fill_null(contacts.column("control"), False).to_numpy(zero_copy_only=False), dtype=bool)
    responded = np.asarray(pc.fill_null(contacts.column("responded"), False).to_numpy(zero_copy_only=False), dtype=bool)
    who = _index(contacts.column("customer_id"), customer_ids)
    what, shape = _index(contacts.column("product"), products), (len(customer_ids), len(products))
    return np.hstack(
        [_counts(np.where(contacted, who, -1), what, shape), _counts(np.where(responded, who, -1), what, shape)]
    )


@dataclass(frozen=True)
class Vocabulary:
    """What the count features are over, fixed for a run by the census of every part."""

    tags: tuple[str, ...] = ()  # tag keys
    sites: tuple[str, ...] = ()  # session sites
    lines: tuple[str, ...] = ()  # hotline lines
    products: tuple[str, ...] = ()  # of past campaign contacts

    def names(self) -> list[str]:
        """The feature names, in column order."""
        return [
            *CUSTOMER_FEATURES,
            *(f"tag:{key}" for key in self.tags),
            "sessions",
            *(f"site:{site}:share" for site in self.sites),
            *(f"site:{site}:minutes" for site in self.sites),
            *(f"calls:{line}" for line in self.lines),
            *(f"contacted:{product}" for product in self.products),
            *(f"responded:{product}" for product in self.products),
        ]

    def describe(self) -> dict[str, Any]:
        lists = {key: list(value) for key, value in self.__dict__.items()}
        return {"count": len(self.names()), "customer": list(CUSTOMER_FEATURES), **lists}


def part_features(tables: Mapping[str, pa.Table], vocabulary: Vocabulary) -> tuple[np.ndarray, int]:
    """(customers, features) float32 of one part's ``customers`` from its ``tags``, ``sessions``,
    ``calls`` and ``contacts``; and how many tag rows were of customers not in the part."""
    customers = tables["customers"]
    ids = plain(customers.column("customer_id"))
    tags, stray = tag_features(tables["tags"], ids, vocabulary.tags)
    blocks = [
        customer_features(customers),
        tags,
        session_features(tables["sessions"], ids, vocabulary.sites),
        call_features(tables["calls"], ids, vocabulary.lines),
        contact_features(tables["contacts"], ids, vocabulary.products),
    ]
    return np.hstack(blocks).astype(np.float32), stray
