"""Hand-specialized closures for the hot shapes of filter expressions.

The closures here are *probes*: boolean tests that return ``True``, ``False`` or
``None`` -- ``None`` meaning "this would be a runtime error" -- and never raise. Raising in Python costs about a
  microsecond, so filters over events that lack a field would be slow if errors were
  exceptions. ``Expr.predicate`` and ``&&``/``||`` chains run on probes; the raising
  ``fn`` of a probed node is :func:`raising`, which falls back to the generic closure
  (with its precise error message) only when the probe says ``None``.

Hot shapes: path-vs-literal comparisons (:func:`compare_probe`), ``in`` against a literal
list (:func:`member_probe`, a frozenset lookup), ``has()`` (:func:`has_field`), string
tests with a literal argument (:func:`string_probe`), ``'lit' in path``
(:func:`contains_probe`) and flat ``&&``/``||`` chains
(:func:`chain_probe`). All must agree with the generic rules in
:mod:`runtime.expr.values`; the oracle tests check that they do.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from typing import NamedTuple

from runtime.expr.paths import MISSING, path_peek
from runtime.expr.values import EvalError, contains, equals, type_name

Fn = Callable[[object], object]
Probe = Callable[[object], "bool | None"]


_NUMBER_KINDS = frozenset({int, float})
_ORDER = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}

#: How an operator reads with its operands swapped: ``5 < x`` is ``x > 5``.
FLIPPED = {"==": "==", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}


# ``path op lit`` over one field's values: the comparison written out, no call per value
_SELECT_ORDER: dict[str, Callable[..., list[int]]] = {
    "<": lambda values, indices, kinds, lit: [i for i in indices if (v := values[i]).__class__ in kinds and v < lit],
    "<=": lambda values, indices, kinds, lit: [i for i in indices if (v := values[i]).__class__ in kinds and v <= lit],
    ">": lambda values, indices, kinds, lit: [i for i in indices if (v := values[i]).__class__ in kinds and v > lit],
    ">=": lambda values, indices, kinds, lit: [i for i in indices if (v := values[i]).__class__ in kinds and v >= lit],
}


# -- probes ----------------------------------------------------------------------------------


def raising(probe: Probe, slow: Fn) -> Fn:
    """The value-returning form of a probed node: ``slow`` explains (raises) a ``None``."""

    def fn(ctx: object) -> object:
        result = probe(ctx)
        if result is None:
            return slow(ctx)
        return result

    return fn


Select = Callable[[Sequence[object], Iterable[int]], list[int]]


def selecting(probe: Probe, predicate: Callable[[object], bool]) -> Select:
    """The positions among ``indices`` whose context in ``contexts`` passes ``predicate`` (of
    which ``probe`` is the fast form): the probe's own loop for the shapes that have one, else
    the probe per context; when the probe raises on a context, ``predicate`` for each. A batch
    of events is tested in one call."""
    own: Select | None = getattr(probe, "select", None)

    def select(contexts: Sequence[object], indices: Iterable[int]) -> list[int]:
        indices = list(indices)
        try:
            if own is not None:
                return own(contexts, indices)
            return [i for i in indices if probe(contexts[i]) is True]
        except Exception:
            return [i for i in indices if predicate(contexts[i])]

    return select


class OnField(NamedTuple):
    """A probe that reads one top-level field of its context, over that field's values
    (MISSING where absent): ``test`` is the probe of one value, ``select`` its loop over a
    batch (which may raise where ``test`` would not; see :func:`field_selecting`)."""

    field: str
    test: Callable[[object], bool | None]
    select: Select


def field_selecting(probe: Probe) -> tuple[str, Select] | None:
    """``probe`` as a filter over a batch of one field's values, when it reads one field:
    (the field, which of ``indices`` index a value in ``values`` that passes). A batch's
    field decoded alone costs a fraction of its contexts, and the loop skips the lookups."""
    on: OnField | None = getattr(probe, "on_field", None)
    if on is None:
        return None
    test, own = on.test, on.select

    def select(values: Sequence[object], indices: Iterable[int]) -> list[int]:
        indices = list(indices)
        try:
            return own(values, indices)
        except Exception:
            return [i for i in indices if test(values[i]) is True]

    return on.field, select


def as_probe(fn: Fn) -> Probe:
    """Any closure as a probe: a bool passes through, anything else is ``None``."""

    def probe(ctx: object) -> bool | None:
        try:
            value = fn(ctx)
        except Exception:
            return None
        return value if value is True or value is False else None  # type: ignore[return-value]

    return probe


def _kinds(literal: object) -> frozenset[type]:
    """The value classes a literal may equal or be ordered against."""
    cls = literal.__class__
    return _NUMBER_KINDS if cls in _NUMBER_KINDS else frozenset({cls})


def is_scalar(value: object) -> bool:
    """True for literal values the specialized comparisons handle."""
    return value is None or value.__class__ in (bool, int, float, str)


def compare_probe(path: tuple[str, ...], op: str, lit: object) -> Probe:
    """``path op lit`` for a scalar literal (never null for ordering), lookup inlined.

    Equality holds only for a value of the literal's kind (ints and floats are one kind,
    bool its own) that is equal; ordering is an error unless the value is of that kind.
    A MISSING value is of no kind, so it fails the kind test and yields None.
    """
    kinds = _kinds(lit)
    if op in ("==", "!="):
        return _equality(path, lit, kinds, want=op == "==")
    compare = _ORDER[op]
    if len(path) == 1:
        (a,) = path

        def order1(ctx: object) -> bool | None:
            try:
                v = ctx.get(a, MISSING)  # type: ignore[attr-defined]
            except Exception:
                return None
            if v.__class__ in kinds:
                return compare(v, lit)  # type: ignore[no-any-return]
            return None

        def select1(contexts: Sequence[object], indices: Iterable[int]) -> list[int]:
            return [
                i
                for i in indices
                if (v := contexts[i].get(a, MISSING)).__class__ in kinds and compare(v, lit)  # type: ignore[attr-defined]
            ]

        def test1(v: object) -> bool | None:
            return compare(v, lit) if v.__class__ in kinds else None  # type: ignore[no-any-return]

        order1.select = select1  # type: ignore[attr-defined]
        order1.on_field = OnField(a, test1, partial(_SELECT_ORDER[op], kinds=kinds, lit=lit))  # type: ignore[attr-defined]
        return order1
    if len(path) == 2:
        a, b = path

        def order2(ctx: object) -> bool | None:
            try:
                v = ctx.get(a, MISSING).get(b, MISSING)  # type: ignore[attr-defined]
            except Exception:
                return None
            if v.__class__ in kinds:
                return compare(v, lit)  # type: ignore[no-any-return]
            return None

        return order2
    peek = path_peek(path)

    def order_n(ctx: object) -> bool | None:
        v = peek(ctx)
        if v.__class__ in kinds:
            return compare(v, lit)  # type: ignore[no-any-return]
        return None

    return order_n


def _equality(path: tuple[str, ...], lit: object, kinds: frozenset[type], *, want: bool) -> Probe:
    if len(path) == 1:
        (a,) = path

        def eq1(ctx: object) -> bool | None:
            try:
                v = ctx.get(a, MISSING)  # type: ignore[attr-defined]
            except Exception:
                return None
            if v is MISSING:
                return None
            return (v.__class__ in kinds and v == lit) is want

        def test1(v: object) -> bool | None:
            return None if v is MISSING else (v.__class__ in kinds and v == lit) is want

        def select_equal(values: Sequence[object], indices: Iterable[int]) -> list[int]:
            return [i for i in indices if (v := values[i]).__class__ in kinds and v == lit]

        def select_unequal(values: Sequence[object], indices: Iterable[int]) -> list[int]:
            return [i for i in indices if (v := values[i]) is not MISSING and not (v.__class__ in kinds and v == lit)]

        eq1.on_field = OnField(a, test1, select_equal if want else select_unequal)  # type: ignore[attr-defined]
        return eq1
    if len(path) == 2:
        a, b = path

        def eq2(ctx: object) -> bool | None:
            try:
                v = ctx.get(a, MISSING).get(b, MISSING)  # type: ignore[attr-defined]
            except Exception:
                return None
            if v is MISSING:
                return None
            return (v.__class__ in kinds and v == lit) is want

        return eq2
    peek = path_peek(path)

    def eq_n(ctx: object) -> bool | None:
        v = peek(ctx)
        if v is MISSING:
            return None
        return (v.__class__ in kinds and v == lit) is want

    return eq_n


def member_probe(get: Fn, items: list[object] | tuple[object, ...], field: str | None = None) -> Probe | None:
    """``get(ctx) in [scalars...]`` as a set lookup (``get`` returns MISSING, never
    raises), or None if ``items`` holds non-scalars. ``field``: the top-level field ``get``
    reads, if that is all it reads."""
    if not all(is_scalar(item) for item in items):
        return None
    bools = frozenset(item for item in items if item.__class__ is bool)
    others = frozenset(item for item in items if item.__class__ is not bool)

    def test(v: object) -> bool | None:
        if v is MISSING:
            return None
        if v.__class__ is bool:
            return v in bools
        try:
            return v in others
        except TypeError:
            return any(equals(v, item) for item in items)

    def member_checked(ctx: object) -> bool | None:
        return test(get(ctx))

    def select(values: Sequence[object], indices: Iterable[int]) -> list[int]:  # an unhashable value raises
        return [
            i
            for i in indices
            if (v := values[i]) is not MISSING and (v in bools if v.__class__ is bool else v in others)
        ]

    if field is not None:
        member_checked.on_field = OnField(field, test, select)  # type: ignore[attr-defined]
    return member_checked


def contains_probe(peek: Fn, item: object) -> Probe:
    """``item in path`` for a literal ``item``: list element, map key or substring."""
    if item.__class__ is str:
        # A string equals only strings, so Python's own ``in`` is exact for all three.
        exact = frozenset({list, tuple, dict, str})

        def contains_string(ctx: object) -> bool | None:
            container = peek(ctx)
            if container.__class__ in exact:
                return item in container  # type: ignore[operator]
            if container is MISSING:
                return None
            try:
                return contains(container, item)
            except Exception:
                return None

        return contains_string

    def contains_literal(ctx: object) -> bool | None:
        container = peek(ctx)
        if container is MISSING:
            return None
        try:
            return contains(container, item)
        except Exception:
            return None

    return contains_literal


def has_field(path: tuple[str, ...], name: str) -> Probe:
    """``has(path.name)``: true iff ``path`` reads to a map holding key ``name``."""
    if len(path) == 1:
        (a,) = path

        def has1(ctx: object) -> bool:
            try:
                obj = ctx.get(a)  # type: ignore[attr-defined]
            except Exception:
                return False
            return isinstance(obj, dict) and name in obj

        return has1
    peek = path_peek(path)

    def has_n(ctx: object) -> bool:
        obj = peek(ctx)
        return isinstance(obj, dict) and name in obj

    return has_n


_STRING_TESTS: dict[str, Callable[[str, str], bool]] = {
    "startsWith": str.startswith,
    "endsWith": str.endswith,
    "contains": str.__contains__,
}


def string_probe(name: str, get: Fn, lit: str) -> Probe:
    """``get(ctx).name(lit)`` for startsWith/endsWith/contains with a literal string."""
    test = _STRING_TESTS[name]

    def string_test(ctx: object) -> bool | None:
        v = get(ctx)
        if v.__class__ is str:
            return test(v, lit)  # type: ignore[arg-type]
        return None

    return string_test


def not_probe(probe: Probe) -> Probe:
    """``!x`` over a probe."""

    def negated(ctx: object) -> bool | None:
        v = probe(ctx)
        return None if v is None else not v

    return negated


def chain_probe(op: str, probes: tuple[Probe, ...]) -> Probe:
    """A flat ``&&``/``||`` over probes with CEL's commutative error absorption.

    Stops at the first deciding operand (``False`` for ``&&``, ``True`` for ``||``);
    an undecided chain with an error (``None``) anywhere is ``None``.
    """
    stop = op == "||"
    go_on = not stop
    if len(probes) == 2:
        first, second = probes

        def chain2(ctx: object) -> bool | None:
            v = first(ctx)
            if v is go_on:
                return second(ctx)  # the chain's value is exactly the second's
            if v is stop:
                return stop
            return stop if second(ctx) is stop else None

        return chain2

    def chain(ctx: object) -> bool | None:
        undecided = False
        for probe in probes:
            v = probe(ctx)
            if v is not go_on:
                if v is stop:
                    return stop
                undecided = True
        return None if undecided else go_on

    return chain


def absorbing_chain(op: str, fns: tuple[Fn, ...]) -> Fn:
    """The raising form of an ``&&``/``||`` chain over ordinary closures: a deciding
    operand anywhere wins; otherwise the first error (or non-bool operand) is raised."""
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
