"""Runtime value semantics shared by the compiler and the functions.

Values are plain Python objects as decoded from JSON: ``None``, ``bool``, ``int``,
``float``, ``str``, ``list`` (or tuple) and ``dict``. The rules, CEL-like:

* ``bool`` is never a number; ``int`` and ``float`` mix freely (numeric comparison,
  mixed arithmetic gives a float).
* ``==`` across unrelated types is ``false``, never an error; lists and maps compare
  element-wise with these same rules.
* ordering (``< <= > >=``) works on number/number, string/string and bool/bool only.
* integer arithmetic is checked against the int64 range; ``/`` on ints truncates toward
  zero and ``%`` takes the sign of the dividend, as in CEL.
* ``string + string`` is capped at :data:`MAX_STRING_CHARS` characters (1 Mi) and
  ``list + list`` at :data:`MAX_LIST_LENGTH` elements, so no expression can balloon.

Every failure raises :class:`EvalError`; callers never see a raw ``TypeError``.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping

INT_MIN = -(2**63)
INT_MAX = 2**63 - 1
MAX_STRING_CHARS = 1 << 20
MAX_LIST_LENGTH = 1 << 20

NUMBER_TYPES = frozenset({int, float})
LIST_TYPES = frozenset({list, tuple})

_MISSING = object()


class EvalError(Exception):
    """A runtime evaluation error (missing key, type mismatch, overflow).

    Raised inside compiled closures and by ``Expr.__call__``; ``Expr.predicate`` turns it
    into ``False``. Deliberately a plain ``Exception``, not an
    :class:`~runtime.errors.EspError`: it describes one event, not a user's config.
    """


def type_name(value: object) -> str:
    """The expression-language name of ``value``'s type, for error messages."""
    if value is None:
        return "null"
    cls = value.__class__
    if cls is bool:
        return "bool"
    if cls is int:
        return "int"
    if cls is float:
        return "double"
    if cls is str:
        return "string"
    if cls in LIST_TYPES:
        return "list"
    if isinstance(value, dict):
        return "map"
    return cls.__name__


def equals(a: object, b: object) -> bool:
    """Heterogeneous equality: same kind and equal, or both numbers and numerically equal."""
    ta = a.__class__
    tb = b.__class__
    if ta is tb:
        if ta is list or ta is tuple:
            return _list_equals(a, b)  # type: ignore[arg-type]
        if ta is dict:
            return _map_equals(a, b)  # type: ignore[arg-type]
        return a == b
    if ta in NUMBER_TYPES and tb in NUMBER_TYPES:
        return a == b
    if ta in LIST_TYPES and tb in LIST_TYPES:
        return _list_equals(a, b)  # type: ignore[arg-type]
    if isinstance(a, dict) and isinstance(b, dict):
        return _map_equals(a, b)
    return False


def _list_equals(a: list[object] | tuple[object, ...], b: list[object] | tuple[object, ...]) -> bool:
    if len(a) != len(b):
        return False
    return all(equals(x, y) for x, y in zip(a, b, strict=True))


def _map_equals(a: dict[object, object], b: dict[object, object]) -> bool:
    if len(a) != len(b):
        return False
    missing = object()
    for key, value in a.items():
        other = b.get(key, missing) if key.__class__ is str else lookup_key(b, key, missing)
        if other is missing or not equals(value, other):
            return False
    return True


def lookup_key(mapping: dict[object, object], key: object, default: object) -> object:
    """``mapping[key]`` under heterogeneous equality (so ``True`` never finds key ``1``)."""
    if key.__class__ is str:
        return mapping.get(key, default)
    for k, v in mapping.items():
        if equals(k, key):
            return v
    return default


def contains(container: object, item: object) -> bool:
    """The ``in`` operator: list element, map key or substring membership."""
    cls = container.__class__
    if cls is list or cls is tuple:
        ic = item.__class__
        if ic is str or ic is int or ic is float or item is None:
            for element in container:  # type: ignore[attr-defined]
                if element == item and element.__class__ is not bool:
                    return True
            return False
        return any(equals(item, element) for element in container)  # type: ignore[attr-defined]
    if cls is dict or isinstance(container, dict):
        return lookup_key(container, item, _MISSING) is not _MISSING  # type: ignore[arg-type]
    if cls is str:
        if item.__class__ is str:
            return item in container  # type: ignore[operator]
        raise EvalError(f"'in' on a string needs a string on the left, got {type_name(item)}")
    raise EvalError(f"'in' needs a list, map or string on the right, got {type_name(container)}")


def _ordered(a: object, b: object, symbol: str) -> None:
    """Raise unless ``a`` and ``b`` may be ordered against each other."""
    ta = a.__class__
    tb = b.__class__
    if ta in NUMBER_TYPES and tb in NUMBER_TYPES:
        return
    if ta is tb and (ta is str or ta is bool):
        return
    raise EvalError(f"cannot compare {type_name(a)} {symbol} {type_name(b)}")


def _make_order(symbol: str, op: Callable[[object, object], bool]) -> Callable[[object, object], bool]:
    def compare(a: object, b: object) -> bool:
        _ordered(a, b, symbol)
        return op(a, b)

    compare.__name__ = f"order_{op.__name__}"
    return compare


less = _make_order("<", operator.lt)
less_equal = _make_order("<=", operator.le)
greater = _make_order(">", operator.gt)
greater_equal = _make_order(">=", operator.ge)


def not_equals(a: object, b: object) -> bool:
    return not equals(a, b)


def check_int(value: int) -> int:
    """Return ``value`` or raise if it leaves the int64 range."""
    if INT_MIN <= value <= INT_MAX:
        return value
    raise EvalError("integer overflow")


def _numbers(a: object, b: object, symbol: str) -> bool:
    """True if both are ints; False if both numbers with a float; raise otherwise."""
    ta = a.__class__
    tb = b.__class__
    if ta is int and tb is int:
        return True
    if ta in NUMBER_TYPES and tb in NUMBER_TYPES:
        return False
    raise EvalError(f"no operator {type_name(a)} {symbol} {type_name(b)}")


def add(a: object, b: object) -> object:
    ta = a.__class__
    tb = b.__class__
    if ta is int and tb is int:
        return check_int(a + b)  # type: ignore[operator]
    if ta is str and tb is str:
        if len(a) + len(b) > MAX_STRING_CHARS:  # type: ignore[arg-type]
            raise EvalError(f"string concatenation exceeds {MAX_STRING_CHARS} characters")
        return a + b  # type: ignore[operator]
    if ta in LIST_TYPES and tb in LIST_TYPES:
        if len(a) + len(b) > MAX_LIST_LENGTH:  # type: ignore[arg-type]
            raise EvalError(f"list concatenation exceeds {MAX_LIST_LENGTH} elements")
        return [*a, *b]  # type: ignore[misc]
    _numbers(a, b, "+")
    return a + b  # type: ignore[operator]


def subtract(a: object, b: object) -> object:
    if _numbers(a, b, "-"):
        return check_int(a - b)  # type: ignore[operator]
    return a - b  # type: ignore[operator]


def multiply(a: object, b: object) -> object:
    if _numbers(a, b, "*"):
        return check_int(a * b)  # type: ignore[operator]
    return a * b  # type: ignore[operator]


def divide(a: object, b: object) -> object:
    if b == 0:
        _numbers(a, b, "/")
        raise EvalError("division by zero")
    if _numbers(a, b, "/"):
        q = abs(a) // abs(b)  # type: ignore[arg-type]
        return check_int(q if (a < 0) == (b < 0) else -q)  # type: ignore[operator]
    return a / b  # type: ignore[operator]


def modulo(a: object, b: object) -> object:
    if a.__class__ is not int or b.__class__ is not int:
        raise EvalError(f"no operator {type_name(a)} % {type_name(b)}")
    if b == 0:
        raise EvalError("modulus by zero")
    r = abs(a) % abs(b)  # type: ignore[arg-type]
    return -r if a < 0 else r  # type: ignore[operator]


def negate(a: object) -> object:
    cls = a.__class__
    if cls is int:
        return check_int(-a)  # type: ignore[operator]
    if cls is float:
        return -a  # type: ignore[operator]
    raise EvalError(f"no operator -{type_name(a)}")


def logical_not(a: object) -> bool:
    if a is True:
        return False
    if a is False:
        return True
    raise EvalError(f"no operator !{type_name(a)}")


#: Binary operators by symbol (generic, non-specialized forms).
BINARY_OPS: dict[str, Callable[[object, object], object]] = {
    "==": equals,
    "!=": not_equals,
    "<": less,
    "<=": less_equal,
    ">": greater,
    ">=": greater_equal,
    "+": add,
    "-": subtract,
    "*": multiply,
    "/": divide,
    "%": modulo,
    "in": lambda a, b: contains(b, a),
}


def index(obj: object, key: object) -> object:
    """``obj[key]``: a list position (int, in range) or a map key."""
    cls = obj.__class__
    if cls is list or cls is tuple:
        if key.__class__ is int:
            if 0 <= key < len(obj):  # type: ignore[operator, arg-type]
                return obj[key]  # type: ignore[index]
            raise EvalError(f"index {key} out of range for a list of {len(obj)}")  # type: ignore[arg-type]
        raise EvalError(f"a list index must be an int, got {type_name(key)}")
    if isinstance(obj, dict):
        value = lookup_key(obj, key, _MISSING)
        if value is _MISSING:
            raise EvalError(f"no such key {key!r}")
        return value
    raise EvalError(f"cannot index {type_name(obj)} with {type_name(key)}")


def select(obj: object, field: str) -> object:
    """``obj.field`` on a value that is not a plain context path."""
    if isinstance(obj, dict):
        try:
            return obj[field]
        except KeyError:
            raise EvalError(f"no such key {field!r}") from None
    raise EvalError(f"cannot select {field!r} from {type_name(obj)}")


class PathError(EvalError):
    """A context path could not be read. The message is built only when asked for, so a
    predicate over events that lack the field stays cheap."""

    # Raised as PathError(ctx, path): no Python-level __init__, to keep raising cheap.

    def __str__(self) -> str:
        current, path = self.args
        for i, key in enumerate(path):
            where = ".".join(path[:i]) or "the context"
            if not isinstance(current, Mapping):
                return f"cannot select {key!r} from {type_name(current)} {where}"
            if key not in current:
                return f"no such key {key!r} in {where}"
            current = current[key]
        return f"cannot read {'.'.join(path)}"
