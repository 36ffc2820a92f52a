"""AST -> nested Python closures. No ``eval``/``exec``; every node becomes one closure.

Beyond the direct translation the compiler

* folds constants: a node whose operands are all constants is evaluated once here (if
  that evaluation fails, the node is left to fail at run time, unchanged);
* turns context paths (``data.a.b``, ``data['k']``) into one lookup closure;
* uses the specialized closures of :mod:`runtime.expr.specialize` for
  path-vs-literal comparisons, ``in`` against literal lists and ``&&``/``||`` chains;
* validates functions (whitelist, arity) and pre-compiles literal ``matches()`` patterns;
* records the dotted paths the expression reads, for :attr:`Expr.fields`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from runtime.errors import ExpressionError
from runtime.expr import nodes, specialize, values
from runtime.expr.functions import FUNCTIONS, compile_pattern, make_matcher

Fn = Callable[[object], object]

_NO_CONST = object()
_BOOL_OPS = frozenset({"==", "!=", "<", "<=", ">", ">=", "in"})
_FIELD_NAME = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


@dataclass(slots=True)
class Compiled:
    """One compiled sub-expression.

    ``const`` is the folded value (or the private no-constant marker); ``boolean`` says
    the closure always yields a bool or raises, which lets ``&&``/``||`` skip a check.
    """

    fn: Fn
    const: object = _NO_CONST
    boolean: bool = False

    @property
    def is_const(self) -> bool:
        return self.const is not _NO_CONST


def _constant(value: object) -> Compiled:
    return Compiled(lambda ctx: value, value, value.__class__ is bool)


def _path(node: nodes.Node) -> tuple[str, ...] | None:
    """The key path of ``a.b['c']`` style nodes rooted at an identifier, else None."""
    keys: list[str] = []
    while True:
        if isinstance(node, nodes.Ident):
            keys.append(node.name)
            return tuple(reversed(keys))
        if isinstance(node, nodes.Select):
            keys.append(node.field)
        elif (
            isinstance(node, nodes.Index)
            and isinstance(node.index, nodes.Literal)
            and node.index.value.__class__ is str
        ):
            keys.append(node.index.value)  # type: ignore[arg-type]
        else:
            return None
        node = node.operand


def _dotted(path: tuple[str, ...]) -> str:
    """The ``fields`` entry of a path: its keys up to the first non-identifier key."""
    usable: list[str] = []
    for key in path:
        if not key or not set(key) <= _FIELD_NAME or key[0].isdigit():
            break
        usable.append(key)
    return ".".join(usable)


@dataclass(slots=True)
class Compiler:
    """Compiles one AST; collects the referenced paths in ``fields``."""

    source: str
    fields: set[str] = field(default_factory=set)

    def error(self, message: str, pos: int) -> ExpressionError:
        return ExpressionError(message, expression=self.source, position=pos)

    def compile(self, node: nodes.Node) -> Compiled:
        path = _path(node)
        if path is not None:
            self._record(path)
            return Compiled(specialize.path_getter(path))
        method = getattr(self, "_" + type(node).__name__.lower())
        result: Compiled = method(node)
        return result

    def _record(self, path: tuple[str, ...]) -> None:
        dotted = _dotted(path)
        if dotted:
            self.fields.add(dotted)

    def _fold(self, result: Compiled, parts: list[Compiled]) -> Compiled:
        """Evaluate ``result`` now if all its operands are constants and it succeeds."""
        if all(part.is_const for part in parts):
            try:
                return _constant(result.fn({}))
            except Exception:
                return result
        return result

    # -- leaves ----------------------------------------------------------------------------

    def _literal(self, node: nodes.Literal) -> Compiled:
        return _constant(node.value)

    def _listlit(self, node: nodes.ListLit) -> Compiled:
        parts = [self.compile(item) for item in node.items]
        if all(part.is_const for part in parts):
            return _constant([part.const for part in parts])
        fns = tuple(part.fn for part in parts)
        return Compiled(lambda ctx: [fn(ctx) for fn in fns])

    # -- member access ---------------------------------------------------------------------

    def _select(self, node: nodes.Select) -> Compiled:
        operand = self.compile(node.operand)
        get, name = operand.fn, node.field
        return self._fold(Compiled(lambda ctx: values.select(get(ctx), name)), [operand])

    def _index(self, node: nodes.Index) -> Compiled:
        operand = self.compile(node.operand)
        key = self.compile(node.index)
        get_obj, get_key = operand.fn, key.fn
        if key.is_const:
            k = key.const
            result = Compiled(lambda ctx: values.index(get_obj(ctx), k))
        else:
            result = Compiled(lambda ctx: values.index(get_obj(ctx), get_key(ctx)))
        return self._fold(result, [operand, key])

    def _has(self, node: nodes.Has) -> Compiled:
        name = node.field
        if node.operand is None:
            self._record((name,))
            return Compiled(lambda ctx: name in ctx, boolean=True)  # type: ignore[operator]
        path = _path(node.operand)
        if path is not None:
            self._record((*path, name))
            return Compiled(specialize.has_field(path, name), boolean=True)
        get = self.compile(node.operand).fn

        def has(ctx: object) -> bool:
            try:
                obj = get(ctx)
            except Exception:
                return False
            return isinstance(obj, dict) and name in obj

        return Compiled(has, boolean=True)

    # -- operators -------------------------------------------------------------------------

    def _unary(self, node: nodes.Unary) -> Compiled:
        operand = self.compile(node.operand)
        fn = operand.fn
        if node.op == "!":
            if operand.boolean:
                result = Compiled(lambda ctx: not fn(ctx), boolean=True)
            else:
                result = Compiled(lambda ctx: values.logical_not(fn(ctx)), boolean=True)
        else:
            result = Compiled(lambda ctx: values.negate(fn(ctx)))
        return self._fold(result, [operand])

    def _binary(self, node: nodes.Binary) -> Compiled:
        op = node.op
        left, right = self.compile(node.left), self.compile(node.right)
        boolean = op in _BOOL_OPS
        if left.is_const and right.is_const:
            impl = values.BINARY_OPS[op]
            a, b = left.const, right.const
            return self._fold(Compiled(lambda ctx: impl(a, b), boolean=boolean), [left, right])
        special = self._special_binary(node, left, right)
        if special is not None:
            return Compiled(special, boolean=boolean)
        fl, fr = left.fn, right.fn
        if op == "in":  # call contains(container, item) directly, without the swapping shim
            contains = values.contains
            if left.is_const:
                c = left.const
                return Compiled(lambda ctx: contains(fr(ctx), c), boolean=True)
            if right.is_const:
                c = right.const
                return Compiled(lambda ctx: contains(c, fl(ctx)), boolean=True)

            def member(ctx: object) -> bool:
                item = fl(ctx)
                return contains(fr(ctx), item)

            return Compiled(member, boolean=True)
        impl = values.BINARY_OPS[op]
        if right.is_const:
            c = right.const
            return Compiled(lambda ctx: impl(fl(ctx), c), boolean=boolean)
        if left.is_const:
            c = left.const
            return Compiled(lambda ctx: impl(c, fr(ctx)), boolean=boolean)
        return Compiled(lambda ctx: impl(fl(ctx), fr(ctx)), boolean=boolean)

    def _special_binary(self, node: nodes.Binary, left: Compiled, right: Compiled) -> Fn | None:
        op = node.op
        if op == "in" and right.is_const and right.const.__class__ is list:
            return specialize.member_of_set(left.fn, right.const)  # type: ignore[arg-type]
        if op not in specialize.FLIPPED:
            return None
        if right.is_const:
            path, lit = _path(node.left), right.const
        elif left.is_const:
            path, lit, op = _path(node.right), left.const, specialize.FLIPPED[op]
        else:
            return None
        if path is None or not specialize.is_scalar(lit):
            return None
        if lit is None and op not in ("==", "!="):
            return None
        return specialize.compare_path(path, op, lit)

    def _logical(self, node: nodes.Logical) -> Compiled:
        parts = [self.compile(item) for item in node.items]
        typed = all(part.boolean for part in parts)
        fn = specialize.logical_chain(node.op, tuple(part.fn for part in parts), typed)
        return self._fold(Compiled(fn, boolean=True), parts)

    def _cond(self, node: nodes.Cond) -> Compiled:
        cond, then, other = (self.compile(n) for n in (node.cond, node.then, node.otherwise))
        fc, ft, fo = cond.fn, then.fn, other.fn

        def choose(ctx: object) -> object:
            c = fc(ctx)
            if c is True:
                return ft(ctx)
            if c is False:
                return fo(ctx)
            raise values.EvalError(f"'?:' expects a bool condition, got {values.type_name(c)}")

        result = Compiled(choose, boolean=then.boolean and other.boolean)
        if cond.is_const and cond.const.__class__ is bool:
            return then if cond.const else other
        return self._fold(result, [cond, then, other])

    # -- calls -----------------------------------------------------------------------------

    def _call(self, node: nodes.Call) -> Compiled:
        spec = FUNCTIONS.get(node.name)
        if spec is None:
            known = ", ".join(sorted([*FUNCTIONS, "has"]))
            raise self.error(
                f"expected a known function ({known}) at position {node.pos}, found {node.name!r}", node.pos
            )
        count = len(node.args) - (1 if node.receiver else 0)
        low, high = spec.min_args, spec.max_args
        if len(node.args) < low or (high is not None and len(node.args) > high):
            want = f"{low}" if low == high else f"at least {low}"
            if node.receiver:
                want = f"{low - 1}" if low == high else f"at least {max(low - 1, 0)}"
            raise self.error(
                f"expected {want} argument(s) to {node.name}() at position {node.pos}, found {count}", node.pos
            )
        if node.name == "matches":
            return self._matches(node)
        parts = [self.compile(arg) for arg in node.args]
        impl = spec.impl
        fns = tuple(part.fn for part in parts)
        boolean = node.name in ("startsWith", "endsWith", "contains")
        if boolean and parts[1].is_const and parts[1].const.__class__ is str and not parts[0].is_const:
            return Compiled(specialize.string_test(node.name, fns[0], parts[1].const), boolean=True)  # type: ignore[arg-type]
        if len(fns) == 1:
            (f1,) = fns
            result = Compiled(lambda ctx: impl(f1(ctx)), boolean=boolean)
        elif len(fns) == 2 and parts[1].is_const:
            f1, c2 = fns[0], parts[1].const
            result = Compiled(lambda ctx: impl(f1(ctx), c2), boolean=boolean)
        elif len(fns) == 2:
            f1, f2 = fns
            result = Compiled(lambda ctx: impl(f1(ctx), f2(ctx)), boolean=boolean)
        else:
            result = Compiled(lambda ctx: impl(*[fn(ctx) for fn in fns]), boolean=boolean)
        return self._fold(result, parts)

    def _matches(self, node: nodes.Call) -> Compiled:
        subject, pattern_node = node.args
        if not (isinstance(pattern_node, nodes.Literal) and pattern_node.value.__class__ is str):
            raise self.error(
                f"expected a string literal pattern for matches() at position {pattern_node.pos}, found an expression",
                pattern_node.pos,
            )
        try:
            pattern = compile_pattern(pattern_node.value)  # type: ignore[arg-type]
        except ValueError as exc:
            raise self.error(
                f"expected a valid RE2-style pattern at position {pattern_node.pos}, found {exc}", pattern_node.pos
            ) from None
        part = self.compile(subject)
        matcher, fn = make_matcher(pattern), part.fn
        return self._fold(Compiled(lambda ctx: matcher(fn(ctx)), boolean=True), [part])
