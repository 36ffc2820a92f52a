"""Property test: compiled expressions agree with a tree-walking reference interpreter.

Hypothesis builds random expression trees (plain tuples, defined here), renders them to
source text (with minimal parentheses, so precedence is exercised, and fully
parenthesized), compiles that with ``compile_expr`` and evaluates it against a random
context. The oracle below walks the same tree with the language rules written out as
plainly as possible. Both the value and the error/no-error outcome must agree, and the
compiled ``fn`` must never raise anything but ``EvalError``.
"""

from __future__ import annotations

import math
import os
import re
from typing import Any

from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st

from runtime.errors import ExpressionError
from runtime.expr import EvalError, compile_expr
from runtime.expr.paths import MISSING

Tree = tuple[Any, ...]

#: Multiplies every example count; e.g. ESP_EXPR_ORACLE_SCALE=20 for a long soak.
SCALE = int(os.environ.get("ESP_EXPR_ORACLE_SCALE", "1"))

INT_MIN, INT_MAX = -(2**63), 2**63 - 1
KEYS = ["a", "b", "data", "x"]
PATTERNS = ["^a", "b$", "a.b", "[0-9]+", "^$", "é"]
TEXT = st.text(alphabet="ab01 .'\"\\é", max_size=5)
INTS = st.one_of(st.integers(-3, 3), st.sampled_from([INT_MAX, INT_MIN, 2**62, -(2**62), 10**6]))
FLOATS = st.sampled_from([0.0, -0.0, 0.5, 1.0, -2.5, 1e300, float("inf"), float("nan"), 3.0])


# -- the oracle ------------------------------------------------------------------------------


class Err(Exception):
    """Any runtime error in the reference interpreter."""


def is_num(v: object) -> bool:
    return type(v) in (int, float)


def o_eq(a: object, b: object) -> bool:
    if is_num(a) and is_num(b):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(o_eq(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(o_eq(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def o_order(op: str, a: Any, b: Any) -> bool:
    comparable = (is_num(a) and is_num(b)) or (type(a) is type(b) and type(a) in (str, bool))
    if not comparable:
        raise Err
    return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]


def o_int(v: int) -> int:
    if not INT_MIN <= v <= INT_MAX:
        raise Err
    return v


def o_arith(op: str, a: Any, b: Any) -> Any:
    if op == "+" and type(a) is str and type(b) is str:
        if len(a) + len(b) > 1 << 20:
            raise Err
        return a + b
    if op == "+" and isinstance(a, list) and isinstance(b, list):
        if len(a) + len(b) > 1 << 20:
            raise Err
        return a + b
    if not (is_num(a) and is_num(b)):
        raise Err
    both_int = type(a) is int and type(b) is int
    if op == "%":
        if not both_int or b == 0:
            raise Err
        remainder = abs(a) % abs(b)
        return -remainder if a < 0 else remainder
    if op == "/":
        if b == 0:
            raise Err
        if both_int:
            q = abs(a) // abs(b)
            return o_int(q if (a < 0) == (b < 0) else -q)
        return a / b
    result = {"+": a + b, "-": a - b, "*": a * b}[op]
    return o_int(result) if both_int else result


def o_in(item: Any, container: Any) -> bool:
    if isinstance(container, list):
        return any(o_eq(item, e) for e in container)
    if isinstance(container, dict):
        return any(o_eq(item, k) for k in container)
    if type(container) is str and type(item) is str:
        return item in container
    raise Err


def o_index(obj: Any, key: Any) -> Any:
    if isinstance(obj, list):
        if type(key) is int and 0 <= key < len(obj):
            return obj[key]
        raise Err
    if isinstance(obj, dict):
        for k, v in obj.items():
            if o_eq(k, key):
                return v
    raise Err


def o_select(obj: Any, key: str) -> Any:
    if isinstance(obj, dict) and key in obj:
        return obj[key]
    raise Err


def o_extreme(name: str, args: list[Any]) -> Any:
    items = args[0] if len(args) == 1 and isinstance(args[0], list) else args
    if not items:
        raise Err
    if not (all(is_num(i) for i in items) or all(type(i) is str for i in items)):
        raise Err
    best = items[0]
    for item in items[1:]:
        if (item < best) if name == "min" else (item > best):
            best = item
    return best


def o_call(name: str, args: list[Any]) -> Any:
    if name in ("min", "max"):
        return o_extreme(name, args)
    v = args[0]
    if name == "size":
        if type(v) in (str, list, dict):
            return len(v)
        raise Err
    if name in ("startsWith", "endsWith", "contains", "lower", "upper", "matches"):
        if not all(type(a) is str for a in args):
            raise Err
        if name == "startsWith":
            return v.startswith(args[1])
        if name == "endsWith":
            return v.endswith(args[1])
        if name == "contains":
            return args[1] in v
        if name == "matches":
            return re.search(args[1], v) is not None
        return v.lower() if name == "lower" else v.upper()
    if name == "abs":
        if type(v) is int:
            return o_int(abs(v))
        if type(v) is float:
            return abs(v)
        raise Err
    if name == "int":
        if type(v) is int:
            return v
        if type(v) is float and math.isfinite(v) and INT_MIN <= v < 2.0**63:
            return int(v)
        if type(v) is str and re.fullmatch(r"[+-]?[0-9]+", v):
            return o_int(int(v))
        raise Err
    if name == "double":
        if is_num(v):
            return float(v)
        number = r"[+-]?(([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?|inf|infinity|nan)"
        if type(v) is str and re.fullmatch(number, v, re.IGNORECASE):
            return float(v)
        raise Err
    assert name == "string"
    if type(v) is bool:
        return "true" if v else "false"
    if type(v) in (str, int, float):
        return v if type(v) is str else repr(v)
    raise Err


def attempt(tree: Tree, ctx: dict[str, Any]) -> Any:
    try:
        return oracle(tree, ctx)
    except Err as exc:
        return exc


def oracle(tree: Tree, ctx: dict[str, Any]) -> Any:
    kind = tree[0]
    if kind == "lit":
        return tree[1]
    if kind == "list":
        return [oracle(item, ctx) for item in tree[1]]
    if kind == "path":
        value: Any = ctx
        for key in tree[1]:
            value = o_select(value, key)
        return value
    if kind == "has":
        keys = tree[1]
        try:
            obj = oracle(("path", keys[:-1]), ctx) if len(keys) > 1 else ctx
        except Err:
            return False
        return isinstance(obj, dict) and keys[-1] in obj
    if kind == "sel":
        return o_select(oracle(tree[1], ctx), tree[2])
    if kind == "index":
        return o_index(oracle(tree[1], ctx), oracle(tree[2], ctx))
    if kind == "un":
        v = oracle(tree[2], ctx)
        if tree[1] == "!":
            if type(v) is not bool:
                raise Err
            return not v
        if type(v) is int:
            return o_int(-v)
        if type(v) is float:
            return -v
        raise Err
    if kind in ("&&", "||"):
        outcomes = [attempt(tree[1], ctx), attempt(tree[2], ctx)]
        decisive = kind == "||"
        if any(o is decisive for o in outcomes):
            return decisive
        if all(o is (not decisive) for o in outcomes):
            return not decisive
        raise Err
    if kind == "cond":
        c = oracle(tree[1], ctx)
        if type(c) is not bool:
            raise Err
        return oracle(tree[2] if c else tree[3], ctx)
    if kind == "call":
        return o_call(tree[1], [oracle(arg, ctx) for arg in tree[2]])
    op, left, right = tree[1], oracle(tree[2], ctx), oracle(tree[3], ctx)
    if op == "==":
        return o_eq(left, right)
    if op == "!=":
        return not o_eq(left, right)
    if op in ("<", "<=", ">", ">="):
        return o_order(op, left, right)
    if op == "in":
        return o_in(left, right)
    return o_arith(op, left, right)


# -- rendering -----------------------------------------------------------------------------

PREC = {
    "||": 1,
    "&&": 2,
    "==": 3,
    "!=": 3,
    "<": 3,
    "<=": 3,
    ">": 3,
    ">=": 3,
    "in": 3,
    "+": 4,
    "-": 4,
    "*": 5,
    "/": 5,
    "%": 5,
}


def render_literal(value: Any, quote: str = "'") -> tuple[str, int]:
    if value is None:
        return "null", 7
    if type(value) is bool:
        return ("true" if value else "false"), 7
    if type(value) is str:
        body = value.replace("\\", "\\\\").replace(quote, "\\" + quote)
        return quote + body + quote, 7
    if type(value) in (int, float):
        text = repr(value)
        return text, (6 if text.startswith("-") else 7)
    raise AssertionError(value)


def render(tree: Tree, full: bool = False) -> str:
    """Source text for ``tree``; ``full`` parenthesizes every compound sub-expression."""
    text, _ = _render(tree, full)
    return text


def _wrap(tree: Tree, need: int, full: bool) -> str:
    text, prec = _render(tree, full)
    return f"({text})" if prec < need or (full and prec < 7) else text


def _render(tree: Tree, full: bool) -> tuple[str, int]:
    kind = tree[0]
    if kind == "lit":
        return render_literal(tree[1], tree[2] if len(tree) > 2 else "'")
    if kind == "list":
        return "[" + ", ".join(_wrap(item, 0, full) for item in tree[1]) + "]", 7
    if kind == "path":
        keys = tree[1]
        text = keys[0] + "".join(f"['{k}']" if i % 2 else f".{k}" for i, k in enumerate(keys[1:]))
        return text, 7
    if kind == "has":
        return "has(" + ".".join(tree[1]) + ")", 7
    if kind == "sel":
        return _wrap(tree[1], 7, full) + "." + tree[2], 7
    if kind == "index":
        return _wrap(tree[1], 7, full) + "[" + _wrap(tree[2], 0, full) + "]", 7
    if kind == "un":
        return tree[1] + " " + _wrap(tree[2], 6, full), 6
    if kind == "cond":
        return (_wrap(tree[1], 1, full) + " ? " + _wrap(tree[2], 1, full) + " : " + _wrap(tree[3], 0, full)), 0
    if kind == "call":
        name, args, receiver = tree[1], tree[2], tree[3]
        if receiver:
            rest = ", ".join(_wrap(a, 0, full) for a in args[1:])
            return f"{_wrap(args[0], 7, full)}.{name}({rest})", 7
        return f"{name}(" + ", ".join(_wrap(a, 0, full) for a in args) + ")", 7
    if kind in ("&&", "||"):
        op, left, right = kind, tree[1], tree[2]
    else:
        op, left, right = tree[1], tree[2], tree[3]
    prec = PREC[op]
    return f"{_wrap(left, prec, full)} {op} {_wrap(right, prec + 1, full)}", prec


# -- strategies ----------------------------------------------------------------------------

scalars = st.one_of(st.none(), st.booleans(), INTS, FLOATS, TEXT)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(KEYS), inner, max_size=3),
    ),
    max_leaves=8,
)
contexts = st.dictionaries(st.sampled_from(KEYS), values, max_size=4)

literals = st.one_of(
    st.tuples(st.just("lit"), st.one_of(st.none(), st.booleans(), INTS)),
    st.tuples(st.just("lit"), FLOATS.filter(math.isfinite)),
    st.tuples(st.just("lit"), TEXT, st.sampled_from(["'", '"'])),
)
paths = st.lists(st.sampled_from(KEYS), min_size=1, max_size=3).map(lambda k: ("path", tuple(k)))
has_nodes = st.lists(st.sampled_from(KEYS), min_size=1, max_size=3).map(lambda k: ("has", tuple(k)))
leaves = st.one_of(literals, paths, paths, has_nodes)

UNARY_FNS = ["size", "lower", "upper", "int", "double", "string", "abs"]
BINARY_FNS = ["startsWith", "endsWith", "contains"]


def _extend(children: st.SearchStrategy[Tree]) -> st.SearchStrategy[Tree]:
    return st.one_of(
        st.tuples(st.just("un"), st.sampled_from(["!", "-"]), children),
        st.tuples(st.just("bin"), st.sampled_from(list(PREC.keys() - {"&&", "||"})), children, children),
        st.tuples(st.sampled_from(["&&", "||"]), children, children),
        st.tuples(st.just("cond"), children, children, children),
        st.tuples(st.just("list"), st.lists(children, max_size=3).map(tuple)),
        st.tuples(st.just("index"), children, children),
        st.tuples(st.just("sel"), children, st.sampled_from(KEYS)),
        st.tuples(st.just("call"), st.sampled_from(UNARY_FNS), st.tuples(children), st.booleans()),
        st.tuples(st.just("call"), st.sampled_from(BINARY_FNS), st.tuples(children, children), st.booleans()),
        st.tuples(
            st.just("call"),
            st.sampled_from(["min", "max"]),
            st.lists(children, min_size=1, max_size=3).map(tuple),
            st.booleans(),
        ),
        st.tuples(
            st.just("call"),
            st.just("matches"),
            st.tuples(children, st.sampled_from(PATTERNS).map(lambda p: ("lit", p))),
            st.booleans(),
        ),
    )


trees = st.recursive(leaves, _extend, max_leaves=10)


# Typed generation: expressions that mostly evaluate without error, over contexts that
# mostly follow one schema (int i, float f, string s, bool t, list l, map m, null n, and
# the same again under data.*), so that values, not just errors, get compared.

SCHEMA = {
    "i": INTS,
    "f": FLOATS,
    "s": TEXT,
    "t": st.booleans(),
    "n": st.none(),
    "l": st.lists(st.one_of(INTS, TEXT), max_size=3),
    "m": st.dictionaries(st.sampled_from(KEYS), st.one_of(INTS, TEXT), max_size=3),
}


def _slot(name: str) -> st.SearchStrategy[Any]:
    """Mostly the schema's type; sometimes any value; sometimes absent (None -> dropped)."""
    return st.one_of(SCHEMA[name], SCHEMA[name], SCHEMA[name], SCHEMA[name], values, st.just(_ABSENT))


_ABSENT = object()


@st.composite
def schema_contexts(draw: st.DrawFn) -> dict[str, Any]:
    def layer() -> dict[str, Any]:
        out = {name: draw(_slot(name)) for name in SCHEMA}
        return {k: v for k, v in out.items() if v is not _ABSENT}

    ctx = layer()
    if draw(st.integers(0, 9)):
        ctx["data"] = layer()
    return ctx


def _typed_path(name: str) -> st.SearchStrategy[Tree]:
    return st.sampled_from([("path", (name,)), ("path", ("data", name))])


def _lit(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Tree]:
    return strategy.map(lambda v: ("lit", v))


_CACHE: dict[tuple[str, int], st.SearchStrategy[Tree]] = {}


def typed(kind: str, depth: int) -> st.SearchStrategy[Tree]:
    """An expression of ``kind`` (int, num, str, bool, list, any) nested up to ``depth``."""
    key = (kind, depth)
    if key in _CACHE:
        return _CACHE[key]
    leaves: dict[str, st.SearchStrategy[Tree]] = {
        "int": st.one_of(_lit(INTS), _typed_path("i")),
        "num": st.one_of(_lit(INTS), _lit(FLOATS.filter(math.isfinite)), _typed_path("i"), _typed_path("f")),
        "str": st.one_of(_lit(TEXT), _typed_path("s")),
        "bool": st.one_of(_lit(st.booleans()), _typed_path("t"), has_nodes),
        "list": st.one_of(
            _typed_path("l"),
            st.lists(_lit(st.one_of(INTS, TEXT, st.booleans(), st.none())), max_size=4).map(
                lambda items: ("list", tuple(items))
            ),
        ),
    }
    leaves["any"] = st.one_of(*leaves.values(), _typed_path("m"), _typed_path("n"))
    if depth == 0:
        _CACHE[key] = leaves[kind]
        return leaves[kind]

    def sub(k: str) -> st.SearchStrategy[Tree]:
        return typed(k, depth - 1)

    def call(name: str, *args: st.SearchStrategy[Tree]) -> st.SearchStrategy[Tree]:
        return st.tuples(st.just("call"), st.just(name), st.tuples(*args), st.booleans())

    def binop(ops: list[str], left: str, right: str) -> st.SearchStrategy[Tree]:
        return st.tuples(st.just("bin"), st.sampled_from(ops), sub(left), sub(right))

    cond = st.tuples(st.just("cond"), sub("bool"), sub(kind), sub(kind))
    compound: dict[str, list[st.SearchStrategy[Tree]]] = {
        "int": [
            binop(["+", "-", "*", "/", "%"], "int", "int"),
            st.tuples(st.just("un"), st.just("-"), sub("int")),
            call("size", sub("str")),
            call("size", sub("list")),
            call("int", sub("num")),
            call("abs", sub("int")),
            call("min", sub("int"), sub("int")),
            st.tuples(st.just("index"), sub("list"), _lit(st.integers(0, 2))),
        ],
        "num": [
            binop(["+", "-", "*", "/"], "num", "num"),
            call("double", sub("int")),
            call("max", sub("num"), sub("num"), sub("num")),
            sub("int"),
        ],
        "str": [
            binop(["+"], "str", "str"),
            call("lower", sub("str")),
            call("upper", sub("str")),
            call("string", sub("num")),
        ],
        "bool": [
            binop(["<", "<=", ">", ">=", "==", "!="], "num", "num"),
            binop(["<", "<=", ">", ">=", "==", "!="], "str", "str"),
            binop(["==", "!="], "any", "any"),
            binop(["in"], "any", "list"),
            binop(["in"], "str", "str"),
            binop(["in"], "str", "any"),
            st.tuples(st.just("un"), st.just("!"), sub("bool")),
            st.tuples(st.sampled_from(["&&", "||"]), sub("bool"), sub("bool")),
            st.tuples(st.sampled_from(["&&", "||"]), sub("bool"), sub("any")),
            call("startsWith", sub("str"), sub("str")),
            call("endsWith", sub("str"), sub("str")),
            call("contains", sub("str"), sub("str")),
            call("matches", sub("str"), st.sampled_from(PATTERNS).map(lambda p: ("lit", p))),
        ],
        "list": [binop(["+"], "list", "list"), st.tuples(st.just("list"), st.lists(sub("any"), max_size=3).map(tuple))],
        "any": [
            sub("int"),
            sub("num"),
            sub("str"),
            sub("bool"),
            sub("list"),
            st.tuples(st.just("sel"), sub("any"), st.sampled_from(KEYS)),
            st.tuples(st.just("index"), sub("any"), sub("any")),
        ],
    }
    strategy = st.one_of(leaves[kind], cond, *compound[kind])
    _CACHE[key] = strategy
    return strategy


# -- the properties ------------------------------------------------------------------------


def same(a: Any, b: Any) -> bool:
    """Structural equality of results: same types, NaN equals NaN."""
    if type(a) is not type(b):
        return False
    if type(a) is float:
        return (math.isnan(a) and math.isnan(b)) or a == b
    if type(a) is list:
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if type(a) is dict:
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


def check(tree: Tree, ctx: dict[str, Any], full: bool) -> None:
    source = render(tree, full)
    try:
        expr = compile_expr(source, max_length=100_000, max_depth=48)
    except ExpressionError as exc:
        if "nesting" in str(exc):
            reject()
        raise AssertionError(f"{source!r} failed to compile: {exc}") from exc
    expected = attempt(tree, ctx)
    try:
        got: Any = expr.fn(ctx)
    except EvalError as exc:
        got = exc
    if isinstance(expected, Err) or isinstance(got, EvalError):
        assert isinstance(expected, Err) and isinstance(got, EvalError), (
            f"{source!r} on {ctx!r}: compiled {got!r}, oracle {expected!r}"
        )
    else:
        assert same(got, expected), f"{source!r} on {ctx!r}: compiled {got!r}, oracle {expected!r}"
    assert expr.predicate(ctx) is (expected is True), source


@settings(max_examples=1000 * SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=trees, ctx=contexts)
def test_compiled_agrees_with_oracle(tree: Tree, ctx: dict[str, Any]) -> None:
    check(tree, ctx, full=False)


@settings(max_examples=300 * SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=trees, ctx=contexts)
def test_fully_parenthesized_agrees_with_oracle(tree: Tree, ctx: dict[str, Any]) -> None:
    check(tree, ctx, full=True)


# Shapes the compiler specializes, generated densely: path OP literal, && / || chains,
# and `in` against literal lists.
_cmp = st.tuples(st.just("bin"), st.sampled_from(["==", "!=", "<", "<=", ">", ">="]), paths, literals)
_cmp_flipped = st.tuples(st.just("bin"), st.sampled_from(["==", "!=", "<", "<=", ">", ">="]), literals, paths)
_in_list = st.tuples(
    st.just("bin"),
    st.just("in"),
    st.one_of(paths, literals),
    st.tuples(st.just("list"), st.lists(literals, max_size=4).map(tuple)),
)
_hot = st.one_of(_cmp, _cmp_flipped, _in_list, has_nodes, paths)
hot_trees = st.recursive(_hot, lambda c: st.tuples(st.sampled_from(["&&", "||"]), c, c), max_leaves=6)


@settings(max_examples=800 * SCALE, deadline=None)
@given(tree=hot_trees, ctx=contexts)
def test_specialized_shapes_agree_with_oracle(tree: Tree, ctx: dict[str, Any]) -> None:
    check(tree, ctx, full=False)


def test_oracle_renderer_smoke() -> None:
    tree: Tree = (
        "&&",
        ("bin", "==", ("path", ("data", "a")), ("lit", "x")),
        ("bin", ">=", ("path", ("data", "b")), ("lit", 120)),
    )
    assert render(tree) == "data.a == 'x' && data.b >= 120"
    ctx = {"data": {"a": "x", "b": 300}}
    assert oracle(tree, ctx) is True
    check(tree, ctx, full=False)


@settings(max_examples=1000 * SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=st.sampled_from(["bool", "any", "int", "num", "str"]).flatmap(lambda k: typed(k, 3)), ctx=schema_contexts())
def test_typed_expressions_agree_with_oracle(tree: Tree, ctx: dict[str, Any]) -> None:
    check(tree, ctx, full=False)


# Operators whose exact rules are easy to get subtly wrong, applied to typed operands.
_ARITH = ["+", "-", "*", "/", "%"]
_RELATIONS = ["<", "<=", ">", ">=", "==", "!="]
focused_trees = st.one_of(
    st.tuples(st.just("bin"), st.sampled_from(_ARITH), typed("int", 1), typed("int", 1)),
    st.tuples(st.just("bin"), st.sampled_from(_ARITH + _RELATIONS), typed("num", 1), typed("num", 1)),
    st.tuples(st.just("bin"), st.just("in"), typed("any", 1), typed("list", 1)),
    st.tuples(st.just("bin"), st.sampled_from(["==", "!=", "in"]), typed("any", 1), typed("any", 1)),
    st.tuples(
        st.just("call"),
        st.sampled_from(["min", "max"]),
        st.lists(typed("any", 0), min_size=1, max_size=3).map(tuple),
        st.booleans(),
    ),
)


@settings(max_examples=600 * SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=focused_trees, ctx=schema_contexts())
def test_operators_agree_with_oracle(tree: Tree, ctx: dict[str, Any]) -> None:
    check(tree, ctx, full=False)


# The rule engine evaluates an expression that reads only data.* over the event's data alone
# (``Expr.data_predicate``): it must decide exactly as ``predicate`` over the whole context.


def _under_data(tree: Any) -> Any:
    """``tree`` with every path and has() moved under ``data``."""
    if isinstance(tree, tuple) and tree and tree[0] in ("path", "has"):
        return (tree[0], ("data", *tree[1]))
    if isinstance(tree, tuple):
        return tuple(_under_data(part) for part in tree)
    return tree


@settings(max_examples=300 * SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    tree=st.one_of(trees, hot_trees, st.sampled_from(["bool", "any", "num"]).flatmap(lambda k: typed(k, 3))),
    data=st.one_of(contexts, schema_contexts()),
    rest=contexts,
)
def test_the_data_predicate_decides_as_the_predicate_over_the_whole_context(
    tree: Tree, data: dict[str, Any], rest: dict[str, Any]
) -> None:
    source = render(_under_data(tree))
    try:
        expr = compile_expr(source, max_length=100_000, max_depth=48)
    except ExpressionError:
        reject()
    ctx = {**rest, "data": data}
    if expr.data_predicate is None:  # a path the field list cannot name, e.g. data['a b']
        assert not all(f.startswith("data.") for f in expr.fields), source
        return
    assert expr.data_predicate(data) is expr.predicate(ctx), f"{source!r} on {ctx!r}"
    assert expr.data_select is not None
    assert expr.data_select([{}, data, data], [1, 2]) == ([1, 2] if expr.predicate(ctx) else []), source
    if expr.data_field_select is not None:  # over the one field it reads, MISSING where absent
        name, select = expr.data_field_select
        values = [MISSING, data.get(name, MISSING), data.get(name, MISSING)]
        assert select(values, [1, 2]) == ([1, 2] if expr.predicate(ctx) else []), source


@settings(max_examples=500 * SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=st.one_of(_cmp, _cmp_flipped, _in_list), batch=st.lists(st.one_of(st.just(MISSING), values), max_size=8))
def test_a_filter_on_one_field_of_data_selects_over_its_values_as_over_the_events(tree: Tree, batch: list[Any]) -> None:
    """A comparison or ``in`` on one field of ``data``, over a batch of that field's values (as
    a log entry's field decoded alone gives them, MISSING where an event has none): the events
    it selects are those whose whole context passes."""
    source = render(_under_data(tree))
    try:
        expr = compile_expr(source, max_length=100_000, max_depth=48)
    except ExpressionError:
        reject()
    if expr.data_field_select is None:
        return
    name, select = expr.data_field_select
    contexts = [{"data": {} if v is MISSING else {name: v}} for v in batch]
    expected = [i for i, ctx in enumerate(contexts) if expr.predicate(ctx)]
    assert select(batch, range(len(batch))) == expected, source
    assert select(batch, iter(range(len(batch)))) == expected, source  # indices as an iterator


def test_filters_on_one_field_of_data_get_a_select_over_its_values() -> None:
    for source, name in [
        ("data.v >= 90", "v"),
        ("3 < data.v", "v"),
        ("data.channel == 'sms'", "channel"),
        ("data.channel != 'sms'", "channel"),
        ("data.tier in ['gold', 'vip', 1]", "tier"),
    ]:
        on_field = compile_expr(source).data_field_select
        assert on_field is not None and on_field[0] == name, source
    for source in ("data.a.b > 1", "data.v > 1 && data.w < 2", "has(data.v)", "data.v + 1 > 2", "size(data) > 0"):
        assert compile_expr(source).data_field_select is None, source


def test_only_expressions_that_read_data_alone_get_a_data_predicate() -> None:
    assert compile_expr("data.v >= 90").data_predicate is not None
    assert compile_expr("has(data.x) && data.s in ['a', 'b']").data_predicate is not None
    for source in ("type == 'a'", "data.v > 1 && customer == 'c'", "size(data) > 0", "profile.tier == 'gold'"):
        assert compile_expr(source).data_predicate is None, source
