"""The static consumption tags: value tier, ARPU trend, usage intensity, high-value residence, car
owner and travel (definitions in ``tags.py``'s docstring).

The value tiers and the intensity thresholds compare a customer with the whole population:
:func:`population_part` gives one customers part's figures, :func:`population` the edges over
all of them (the tags job's first pass).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from runtime.batch.visits import City, Visits, best_in_group, group_rows, lookup, plain, strings, tag_table

TREND_SHARE = 0.05
INTENSIVE_QUANTILE = 0.8
HIGH_VALUE_PRICE_BAND = 4
USAGE = {"data": "data_gb", "voice": "voice_min", "sms": "sms_count"}


@dataclass(frozen=True)
class Population:
    """Edges over all customers that each part's tags compare against."""

    arpu_edges: tuple[float, ...]  # the 20/40/60/80% quantiles of mean monthly ARPU
    intensive: tuple[tuple[str, float], ...]  # (usage, its 80th percentile)


def arpu_stats(arpu: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """Per customer: mean monthly ARPU and its least-squares slope per month (NaN when there is
    no month, for the slope also with one)."""
    arr = plain(arpu)
    lengths = np.asarray(pc.list_value_length(arr).fill_null(0).to_numpy(), dtype=np.int64)
    y = np.asarray(pc.list_flatten(arr).to_numpy(zero_copy_only=False), dtype=np.float64)
    row = np.repeat(np.arange(len(arr)), lengths)
    x = (np.arange(len(y)) - np.repeat(np.cumsum(lengths) - lengths, lengths)).astype(np.float64)
    ok = ~np.isnan(y)
    row, x, y = row[ok], x[ok], y[ok]

    def total(w: np.ndarray) -> np.ndarray:
        return np.bincount(row, weights=w, minlength=len(arr))

    n, sx, sy, sxy, sxx = total(np.ones_like(y)), total(x), total(y), total(x * y), total(x * x)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = sy / n
        slope = (n * sxy - sx * sy) / (n * sxx - sx * sx)
    slope[n < 2] = np.nan
    return mean, slope


def population(arpu_mean: np.ndarray, usage: dict[str, np.ndarray]) -> Population:
    """Quintile edges of mean ARPU and the top-quintile threshold of each usage."""

    def quantiles(values: np.ndarray, q: list[float]) -> list[float]:
        values = values[np.isfinite(values)]
        return [float(v) for v in np.quantile(values, q)] if len(values) else [np.inf] * len(q)

    edges = tuple(quantiles(np.asarray(arpu_mean, dtype=np.float64), [0.2, 0.4, 0.6, 0.8]))
    intensive = tuple(
        (name, quantiles(np.asarray(usage[name], dtype=np.float64), [INTENSIVE_QUANTILE])[0]) for name in USAGE
    )
    return Population(edges, intensive)


def population_part(path: Path) -> dict[str, np.ndarray]:
    """One customers part's figures for the population edges: mean ARPU and each usage."""
    customers = pq.read_table(path, columns=["arpu", *USAGE.values()])
    usage = {name: _floats(customers, column).astype(np.float32) for name, column in USAGE.items()}
    return {"arpu_mean": arpu_stats(customers.column("arpu"))[0].astype(np.float32), **usage}


def value_bands(mean: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """Band 1..5 of each mean between the edges (on an edge: the upper band); 0 when unknown."""
    band = 1 + np.searchsorted(np.asarray(edges), mean, side="right")
    return np.where(np.isfinite(mean), band, 0)


def arpu_trend(mean: np.ndarray, slope: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``up|flat|down`` per customer ("" when unknown) and the slope as a share of the mean."""
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(mean > 0, slope / mean, np.nan)
    label = np.select([share >= TREND_SHARE, share <= -TREND_SHARE, np.isfinite(share)], ["up", "down", "flat"], "")
    return label, share


def _floats(table: pa.Table, column: str) -> np.ndarray:
    return np.asarray(table.column(column).to_numpy(zero_copy_only=False), dtype=np.float64)


def consumption_tags(customers: pa.Table, city: City, pop: Population) -> pa.Table:
    """value tier, ARPU trend, usage intensity, high-value residence, car owner."""
    ids = strings(customers, "customer_id")
    mean, slope = arpu_stats(customers.column("arpu"))
    band = value_bands(mean, pop.arpu_edges)
    label, share = arpu_trend(mean, slope)
    out = [tag_table(ids[band > 0], [f"value:{b}" for b in band[band > 0]])]
    out.append(tag_table(ids[label != ""], [f"arpu-trend:{t}" for t in label[label != ""]], share[label != ""]))
    for name, threshold in pop.intensive:
        usage = _floats(customers, USAGE[name])
        out.append(tag_table(ids[(usage >= threshold) & (usage > 0)], f"intensive:{name}"))
    home = city.cell_place(customers.column("home_cell"))
    rich = lookup(city.price_band, home, 0) >= HIGH_VALUE_PRICE_BAND
    out.append(tag_table(ids[rich], "residence:high-value", 1.0, city.place_id[home[rich]]))
    car = np.asarray(customers.column("car_owner").fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)
    out.append(tag_table(ids[car], "car-owner"))
    return pa.concat_tables(out)


def travel_tags(visits: Visits, ids: np.ndarray, city: City) -> pa.Table:
    """``travel``: any stay at an airport; the key building is the airport with most time."""
    at = visits.take(city.is_airport[visits.place])
    (customer, place), group = group_rows(at.customer, at.place)
    time = np.bincount(group, weights=at.end_ms - at.start_ms, minlength=len(customer))
    best = best_in_group(customer, time)
    return tag_table(ids[customer[best]], "travel", 1.0, city.place_id[place[best]])
