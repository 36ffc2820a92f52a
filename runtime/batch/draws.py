"""Vectorised helpers the synthetic data generator builds its tables with: a group member or a
weighted choice per row from uniform numbers the caller draws (so the order of draws from a
generator stays the caller's), weights shaped by preferences, and strings by code."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def sigmoid(x: np.ndarray) -> np.ndarray:
    """The logistic function."""
    return 1.0 / (1.0 + np.exp(-x))


def member_of(first: np.ndarray, count: np.ndarray, group: np.ndarray, u: np.ndarray) -> np.ndarray:
    """A member of each ``group`` (the contiguous range ``first``, ``count``), chosen by ``u`` in [0, 1)."""
    return first[group] + (u * count[group]).astype(np.int64)


def inverse_cdf(weights: np.ndarray, u: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """Inverse-CDF draws: the column of row ``rows[i]`` of ``weights`` that ``u[i]`` falls in. One
    searchsorted over the row-offset CDFs, so ``weights[rows]`` is never materialised."""
    n, k = weights.shape
    cdf = np.cumsum(weights, axis=1)
    flat = (cdf / cdf[:, -1:] + np.arange(n)[:, None]).ravel()
    rows = np.arange(n) if rows is None else rows
    return np.minimum(np.searchsorted(flat, rows + u, side="right") - rows * k, k - 1)


def preference_weights(table: tuple[Any, ...], prefs: np.ndarray) -> np.ndarray:
    """(customers, rows of ``table``): each row's base weight (``row[1]``) plus its weight per unit
    of a preference (``row[2]``, preference -> gain) times the customer's ``prefs``."""
    base = np.array([row[1] for row in table])
    gains = np.zeros((prefs.shape[1], len(table)))
    for j, row in enumerate(table):
        for pref, gain in row[2].items():
            gains[pref, j] = gain
    return base + prefs @ gains


def labels(names: tuple[str, ...] | list[str] | pa.Array, codes: np.ndarray) -> pa.Array:
    """Strings by code, without building a Python or NumPy string per row."""
    return pc.take(names if isinstance(names, pa.Array) else pa.array(names, pa.string()), pa.array(codes))
