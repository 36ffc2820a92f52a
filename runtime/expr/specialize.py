"""Hand-specialized closures for the hot shapes of filter expressions.

* :func:`path_getter` -- ``data.x`` as one closure doing ``ctx["data"]["x"]``.
* :func:`compare_path` -- ``data.x >= 120`` as one closure with the lookup inlined.
* :func:`member_of_set` -- ``x in ['a', 'b']`` as a frozenset lookup.
* :func:`logical_chain` -- ``a && b && c`` as one closure over a tuple.
* :func:`has_field` -- ``has(data.x)`` without building any error.
* :func:`string_test` -- ``s.startsWith('lit')`` and friends with a literal argument.

Each must behave exactly like the generic forms in :mod:`runtime.expr.values`; the
oracle tests check that.
"""

from __future__ import annotations

import operator
from collections.abc import Callable

from runtime.expr.values import EvalError, PathError, equals, type_name

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


def _kinds(literal: object) -> frozenset[type]:
    """The value classes a literal may equal or be ordered against."""
    cls = literal.__class__
    return _NUMBER_KINDS if cls in _NUMBER_KINDS else frozenset({cls})


def _order_error(value: object, symbol: str, literal: object) -> EvalError:
    return EvalError(f"cannot compare {type_name(value)} {symbol} {type_name(literal)}")


_ORDER = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


def compare_path(path: tuple[str, ...], op: str, lit: object) -> Fn:
    """``path op lit`` for a scalar literal (never null for ordering), lookup inlined.

    Equality is true only for a value of the literal's kind (numbers count as one kind,
    bool is its own) that is equal; ordering raises unless the value is of that kind.
    """
    kinds = _kinds(lit)
    if op in ("==", "!="):
        return _equality(path, lit, kinds, want=op == "==")
    compare = _ORDER[op]
    if len(path) == 1:
        (a,) = path

        def order1(ctx: object) -> bool:
            try:
                v = ctx[a]  # type: ignore[index]
            except Exception:
                raise PathError(ctx, path) from None
            if v.__class__ in kinds:
                return compare(v, lit)  # type: ignore[no-any-return]
            raise _order_error(v, op, lit)

        return order1
    if len(path) == 2:
        a, b = path

        def order2(ctx: object) -> bool:
            try:
                v = ctx[a][b]  # type: ignore[index]
            except Exception:
                raise PathError(ctx, path) from None
            if v.__class__ in kinds:
                return compare(v, lit)  # type: ignore[no-any-return]
            raise _order_error(v, op, lit)

        return order2
    get = path_getter(path)

    def order_n(ctx: object) -> bool:
        v = get(ctx)
        if v.__class__ in kinds:
            return compare(v, lit)  # type: ignore[no-any-return]
        raise _order_error(v, op, lit)

    return order_n


def _equality(path: tuple[str, ...], lit: object, kinds: frozenset[type], *, want: bool) -> Fn:
    if len(path) == 1:
        (a,) = path

        def eq1(ctx: object) -> bool:
            try:
                v = ctx[a]  # type: ignore[index]
            except Exception:
                raise PathError(ctx, path) from None
            return (v.__class__ in kinds and v == lit) is want

        return eq1
    if len(path) == 2:
        a, b = path

        def eq2(ctx: object) -> bool:
            try:
                v = ctx[a][b]  # type: ignore[index]
            except Exception:
                raise PathError(ctx, path) from None
            return (v.__class__ in kinds and v == lit) is want

        return eq2
    get = path_getter(path)

    def eq_n(ctx: object) -> bool:
        v = get(ctx)
        return (v.__class__ in kinds and v == lit) is want

    return eq_n


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

    The fast path evaluates left to right and stops at the first deciding operand
    (``false`` for ``&&``, ``true`` for ``||``). If an operand raises or is not a bool,
    the chain is re-run by :func:`_absorbing` (operands are pure, so re-running is safe):
    a deciding operand anywhere wins, otherwise the first error is raised. ``typed``
    means every operand is known to yield a bool or raise.
    """
    stop = op == "||"  # the deciding value
    go_on = not stop
    slow = _absorbing(op, fns)
    if typed and len(fns) == 2:
        first, second = fns

        def chain2(ctx: object) -> bool:
            try:
                if first(ctx) is stop:
                    return stop
                return second(ctx)  # type: ignore[return-value]
            except Exception:
                return slow(ctx)

        return chain2

    def chain(ctx: object) -> bool:
        try:
            for fn in fns:
                value = fn(ctx)
                if value is not go_on:
                    if value is stop:
                        return stop
                    break  # not a bool: let the slow path sort it out
            else:
                return go_on
        except Exception:
            pass
        return slow(ctx)

    return chain


def _absorbing(op: str, fns: tuple[Fn, ...]) -> Callable[[object], bool]:
    stop = op == "||"
    go_on = not stop

    def absorbing(ctx: object) -> bool:
        error: Exception | None = None
        for fn in fns:
            try:
                value = fn(ctx)
            except Exception as exc:
                error = error or exc
                continue
            if value is stop:
                return stop
            if value is not go_on:
                error = error or EvalError(f"'{op}' expects bool operands, got {type_name(value)}")
        if error is not None:
            raise error
        return go_on

    return absorbing


def has_field(path: tuple[str, ...], name: str) -> Fn:
    """``has(path.name)``: true iff ``path`` reads to a map holding key ``name``."""
    if len(path) == 1:
        (a,) = path

        def has1(ctx: object) -> bool:
            try:
                obj = ctx[a]  # type: ignore[index]
            except Exception:
                return False
            return isinstance(obj, dict) and name in obj

        return has1

    def has_n(ctx: object) -> bool:
        try:
            obj = ctx
            for key in path:
                obj = obj[key]  # type: ignore[index]
        except Exception:
            return False
        return isinstance(obj, dict) and name in obj

    return has_n


_STRING_TESTS: dict[str, Callable[[str, str], bool]] = {
    "startsWith": str.startswith,
    "endsWith": str.endswith,
    "contains": str.__contains__,
}


def string_test(name: str, operand: Fn, lit: str) -> Fn:
    """``operand.name(lit)`` for startsWith/endsWith/contains with a literal string."""
    test = _STRING_TESTS[name]

    def string_test(ctx: object) -> bool:
        v = operand(ctx)
        if v.__class__ is str:
            return test(v, lit)  # type: ignore[arg-type]
        raise EvalError(f"{name}() expects a string, got {type_name(v)}")

    return string_test
