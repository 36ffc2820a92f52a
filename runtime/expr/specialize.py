"""Hand-specialized closures for the hot shapes of filter expressions.

* :func:`path_getter` -- ``data.x`` as one closure doing ``ctx["data"]["x"]``.
* :func:`compare_path` -- ``data.x >= 120`` as one closure with the lookup inlined.
* :func:`member_of_set` -- ``x in ['a', 'b']`` as a frozenset lookup.
* :func:`logical_chain` -- ``a && b && c`` as one closure over a tuple.

Each must behave exactly like the generic forms in :mod:`runtime.expr.values`; the
oracle tests check that.
"""

from __future__ import annotations

from collections.abc import Callable

from runtime.expr.values import EvalError, equals, path_error, type_name

Fn = Callable[[object], object]

_NUMBER_KINDS = frozenset({int, float})


def path_getter(path: tuple[str, ...]) -> Fn:
    """A closure returning ``ctx[path[0]][path[1]]...``; raises EvalError if absent."""
    if len(path) == 1:
        (a,) = path

        def get1(ctx: object) -> object:
            try:
                return ctx[a]  # type: ignore[index]
            except Exception:
                raise path_error(ctx, path) from None

        return get1
    if len(path) == 2:
        a, b = path

        def get2(ctx: object) -> object:
            try:
                return ctx[a][b]  # type: ignore[index]
            except Exception:
                raise path_error(ctx, path) from None

        return get2

    def get_n(ctx: object) -> object:
        try:
            value = ctx
            for key in path:
                value = value[key]  # type: ignore[index]
            return value
        except Exception:
            raise path_error(ctx, path) from None

    return get_n


def _kinds(literal: object) -> frozenset[type]:
    """The value classes a literal may equal or be ordered against."""
    cls = literal.__class__
    return _NUMBER_KINDS if cls in _NUMBER_KINDS else frozenset({cls})


def _order_error(value: object, symbol: str, literal: object) -> EvalError:
    return EvalError(f"cannot compare {type_name(value)} {symbol} {type_name(literal)}")


def compare_path(path: tuple[str, ...], op: str, lit: object) -> Fn:
    """``path op lit`` for a scalar literal (not null for ordering), lookup inlined."""
    kinds = _kinds(lit)
    if len(path) == 2:
        a, b = path
    else:
        getter = path_getter(path)
        a, b = "", ""

    if op in ("==", "!="):
        want = op == "=="
        if len(path) == 2:

            def eq2(ctx: object) -> bool:
                try:
                    v = ctx[a][b]  # type: ignore[index]
                except Exception:
                    raise path_error(ctx, path) from None
                return (v.__class__ in kinds and v == lit) is want

            return eq2

        def eq_n(ctx: object) -> bool:
            v = getter(ctx)
            return (v.__class__ in kinds and v == lit) is want

        return eq_n

    if len(path) == 2:
        get = None
    else:
        get = getter
    return _ORDER_FACTORIES[op](a, b, get, path, kinds, lit)


def _lt(a: str, b: str, get: Fn | None, path: tuple[str, ...], kinds: frozenset[type],
        lit: object) -> Fn:
    if get is None:
        def lt2(ctx: object) -> bool:
            try:
                v = ctx[a][b]  # type: ignore[index]
            except Exception:
                raise path_error(ctx, path) from None
            if v.__class__ in kinds:
                return v < lit  # type: ignore[operator]
            raise _order_error(v, "<", lit)
        return lt2

    def lt_n(ctx: object) -> bool:
        v = get(ctx)
        if v.__class__ in kinds:
            return v < lit  # type: ignore[operator]
        raise _order_error(v, "<", lit)
    return lt_n


def _le(a: str, b: str, get: Fn | None, path: tuple[str, ...], kinds: frozenset[type],
        lit: object) -> Fn:
    if get is None:
        def le2(ctx: object) -> bool:
            try:
                v = ctx[a][b]  # type: ignore[index]
            except Exception:
                raise path_error(ctx, path) from None
            if v.__class__ in kinds:
                return v <= lit  # type: ignore[operator]
            raise _order_error(v, "<=", lit)
        return le2

    def le_n(ctx: object) -> bool:
        v = get(ctx)
        if v.__class__ in kinds:
            return v <= lit  # type: ignore[operator]
        raise _order_error(v, "<=", lit)
    return le_n


def _gt(a: str, b: str, get: Fn | None, path: tuple[str, ...], kinds: frozenset[type],
        lit: object) -> Fn:
    if get is None:
        def gt2(ctx: object) -> bool:
            try:
                v = ctx[a][b]  # type: ignore[index]
            except Exception:
                raise path_error(ctx, path) from None
            if v.__class__ in kinds:
                return v > lit  # type: ignore[operator]
            raise _order_error(v, ">", lit)
        return gt2

    def gt_n(ctx: object) -> bool:
        v = get(ctx)
        if v.__class__ in kinds:
            return v > lit  # type: ignore[operator]
        raise _order_error(v, ">", lit)
    return gt_n


def _ge(a: str, b: str, get: Fn | None, path: tuple[str, ...], kinds: frozenset[type],
        lit: object) -> Fn:
    if get is None:
        def ge2(ctx: object) -> bool:
            try:
                v = ctx[a][b]  # type: ignore[index]
            except Exception:
                raise path_error(ctx, path) from None
            if v.__class__ in kinds:
                return v >= lit  # type: ignore[operator]
            raise _order_error(v, ">=", lit)
        return ge2

    def ge_n(ctx: object) -> bool:
        v = get(ctx)
        if v.__class__ in kinds:
            return v >= lit  # type: ignore[operator]
        raise _order_error(v, ">=", lit)
    return ge_n


_ORDER_FACTORIES = {"<": _lt, "<=": _le, ">": _gt, ">=": _ge}

#: How an operator reads with its operands swapped: ``5 < x`` is ``x > 5``.
FLIPPED = {"==": "==", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}


def is_scalar(value: object) -> bool:
    """True for literal values the specialized comparisons handle."""
    return value is None or value.__class__ in (bool, int, float, str)


def member_of_set(operand: Fn, items: list[object] | tuple[object, ...]) -> Fn | None:
    """``operand in [scalars...]`` as a set lookup, or None if ``items`` has non-scalars."""
    if not all(is_scalar(item) for item in items):
        return None
    bools = frozenset(item for item in items if item.__class__ is bool)
    others = frozenset(item for item in items if item.__class__ is not bool)

    def member(ctx: object) -> bool:
        v = operand(ctx)
        if v.__class__ is bool:
            return v in bools
        try:
            return v in others
        except TypeError:  # unhashable list/map: equal to no scalar
            return any(equals(v, item) for item in items)

    return member


def logical_chain(op: str, fns: tuple[Fn, ...], typed: bool) -> Fn:
    """An n-ary ``&&`` (``op='&&'``) or ``||`` with CEL's commutative error absorption.

    Evaluation stops at the first deciding operand (``false`` for ``&&``, ``true`` for
    ``||``). An error or non-bool operand is remembered and raised only if no later
    operand decides. ``typed`` means every operand is known to yield a bool or raise.
    """
    decide = op == "&&"  # the value that is *not* deciding: && continues while True
    stop = not decide

    if typed and len(fns) == 2:
        first, second = fns

        def chain2(ctx: object) -> bool:
            try:
                left = first(ctx)
            except Exception as exc:
                try:
                    right = second(ctx)
                except Exception:
                    raise exc from None
                if right is stop:
                    return stop
                raise
            if left is stop:
                return stop
            return second(ctx)  # type: ignore[return-value]

        return chain2

    def chain(ctx: object) -> bool:
        error: Exception | None = None
        for fn in fns:
            try:
                value = fn(ctx)
            except Exception as exc:
                if error is None:
                    error = exc
                continue
            if value is stop:
                return stop
            if value is not decide and error is None:
                error = EvalError(f"'{op}' expects bool operands, got {type_name(value)}")
        if error is not None:
            raise error
        return decide

    return chain
