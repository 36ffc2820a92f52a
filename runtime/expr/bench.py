"""A micro-benchmark for compiled expressions (used by ``esp bench``)."""

from __future__ import annotations

import timeit
from collections.abc import Mapping

from runtime.expr import compile_expr


def measure(
    source: str, ctx: Mapping[str, object], n: int = 100_000, *, repeat: int = 5, predicate: bool = True
) -> float:
    """Nanoseconds per evaluation of ``source`` against ``ctx``: best of ``repeat`` runs of
    ``n`` calls. Times ``Expr.predicate`` by default, the raw ``Expr.fn`` otherwise (which
    must then not raise). Compilation is excluded; loop overhead is included.
    """
    if n <= 0 or repeat <= 0:
        raise ValueError(f"expected positive n and repeat, got n={n}, repeat={repeat}")
    expr = compile_expr(source)
    call = expr.predicate if predicate else expr.fn
    timer = timeit.Timer("call(ctx)", globals={"call": call, "ctx": ctx})
    best = min(timer.repeat(repeat=repeat, number=n))
    return best * 1e9 / n
