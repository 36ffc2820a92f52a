"""Reading dotted context paths (``data.a.b``) in one closure.

:func:`path_getter` raises :class:`~runtime.expr.values.PathError` when the path cannot
be read; :func:`path_peek` returns :data:`MISSING` instead and never raises, which is
what the non-raising probes of :mod:`runtime.expr.specialize` build on. Context maps are
expected to be plain dicts (``defaultdict``-style ``__missing__`` is not honoured by
the ``.get``-based peek).
"""

from __future__ import annotations

from collections.abc import Callable

from runtime.expr.values import PathError

Fn = Callable[[object], object]


class _Missing:
    """The absent value. ``MISSING.get(key, default)`` is MISSING again, so a path lookup
    can chain ``.get`` calls without raising when an intermediate key is absent."""

    __slots__ = ()

    def get(self, key: object, default: object = None) -> _Missing:
        return self

    def __repr__(self) -> str:
        return "MISSING"


#: What :func:`path_peek` and safe getters return instead of raising.
MISSING: object = _Missing()


def path_getter(path: tuple[str, ...]) -> Fn:
    """A closure returning ``ctx[path[0]][path[1]]...``; raises PathError if absent."""
    if len(path) == 1:
        (a,) = path

        def get1(ctx: object) -> object:
            try:
                return ctx[a]  # type: ignore[index]
            except Exception:
                raise PathError(ctx, path) from None

        return get1
    if len(path) == 2:
        a, b = path

        def get2(ctx: object) -> object:
            try:
                return ctx[a][b]  # type: ignore[index]
            except Exception:
                raise PathError(ctx, path) from None

        return get2

    def get_n(ctx: object) -> object:
        try:
            value = ctx
            for key in path:
                value = value[key]  # type: ignore[index]
            return value
        except Exception:
            raise PathError(ctx, path) from None

    return get_n


def path_peek(path: tuple[str, ...]) -> Fn:
    """Like :func:`path_getter` but returns :data:`MISSING` instead of raising.

    Uses ``.get`` so that an absent key costs no exception; a non-map intermediate has
    no ``.get`` (AttributeError), which also ends in MISSING.
    """
    if len(path) == 1:
        (a,) = path

        def peek1(ctx: object) -> object:
            try:
                return ctx.get(a, MISSING)  # type: ignore[attr-defined]
            except Exception:
                return MISSING

        return peek1
    if len(path) == 2:
        a, b = path

        def peek2(ctx: object) -> object:
            try:
                return ctx.get(a, MISSING).get(b, MISSING)  # type: ignore[attr-defined]
            except Exception:
                return MISSING

        return peek2

    def peek_n(ctx: object) -> object:
        try:
            value = ctx
            for key in path:
                value = value.get(key, MISSING)  # type: ignore[attr-defined]
            return value
        except Exception:
            return MISSING

    return peek_n


def safe(fn: Fn) -> Fn:
    """``fn`` returning :data:`MISSING` instead of raising (exceptions stay the slow path)."""

    def safe_fn(ctx: object) -> object:
        try:
            return fn(ctx)
        except Exception:
            return MISSING

    return safe_fn
