"""AST -> nested Python closures. No ``eval``/``exec``; every node becomes one closure.

Beyond the direct translation the compiler

* folds constants: a node whose operands are all constants is evaluated once here (if
  that evaluation fails, the node is left to fail at run time, unchanged);
* turns context paths (``data.a.b``, ``data['k']``) into one lookup closure;
* gives boolean nodes a non-raising tri-state *probe* where it can, using the
  specialized closures of :mod:`runtime.expr.specialize` for path-vs-literal
  comparisons, ``in`` against literal lists, ``has()``, string tests and flat
  ``&&``/``||`` chains; ``Expr.predicate`` runs the root's probe;
* validates functions (whitelist, arity) and pre-compiles literal ``matches()`` patterns
  with RE2 (linear time; refused ones raise :class:`RegexError`);
* records the dotted paths the expression reads, for :attr:`Expr.fields`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from runtime.errors import ExpressionError
from runtime.expr import nodes, specialize, values
from runtime.expr.functions import FUNCTIONS, RegexError, compile_pattern, make_matcher
from runtime.expr.paths import path_getter, path_peek, safe

Fn = Callable[[object], object]
Probe = specialize.Probe

_NO_CONST = object()
_BOOL_OPS = frozenset({"==", "!=", "<", "<=", ">", ">=", "in"})
_FIELD_NAME = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


@dataclass(slots=True)
class Compiled:
    """One compiled sub-expression.

    ``const`` is the folded value (or the private no-constant marker); ``boolean`` says
    the closure always yields a bool or raises. ``probe``, when set, is the non-raising
    tri-state form (True / False / None for error) of a boolean node, see
    :mod:`runtime.expr.specialize`.
    """

    fn: Fn
    const: object = _NO_CONST
    boolean: bool = False
    probe: Probe | None = None

    @property
    def is_const(self) -> bool:
        return self.const is not _NO_CONST


def _constant(value: object) -> Compiled:
    fn: Fn = lambda ctx: value  # noqa: E731
    is_bool = value.__class__ is bool
    return Compiled(fn, value, is_bool, fn if is_bool else None)  # type: ignore[arg-type]


def _probed(probe: Probe, slow: Fn) -> Compiled:
    """A boolean node whose fast form is ``probe``; ``slow`` explains its errors."""
    return Compiled(specialize.raising(probe, slow), boolean=True, probe=probe)


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
    # compile against this field of the usual context instead of the context: ``data`` gives
    # a closure over ``event.data`` (for expressions that read nothing else; see compile_expr)
    root: str | None = None

    def error(self, message: str, pos: int) -> ExpressionError:
        return ExpressionError(message, expression=self.source, position=pos)

    def compile(self, node: nodes.Node) -> Compiled:
        path = _path(node)
        if path is not None:
            self._record(path)
            return Compiled(path_getter(self._rooted(path)))
        method = getattr(self, "_" + type(node).__name__.lower())
        result: Compiled = method(node)
        return result

    def _rooted(self, path: tuple[str, ...]) -> tuple[str, ...]:
        """``path`` as seen from ``root`` (unchanged without one)."""
        if self.root is None:
            return path
        if path[0] != self.root:
            raise ValueError(f"{'.'.join(path)} is not under {self.root}")
        return path[1:]

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
            probe: Probe = lambda ctx: name in ctx  # type: ignore[operator]  # noqa: E731
            return Compiled(probe, boolean=True, probe=probe)
        path = _path(node.operand)
        if path is not None:
            self._record((*path, name))
            path = self._rooted(path)
            probe = specialize.has_field(path, name) if path else (lambda ctx: name in ctx)  # type: ignore[operator]
            return Compiled(probe, boolean=True, probe=probe)
        get = safe(self.compile(node.operand).fn)

        def has(ctx: object) -> bool:
            obj = get(ctx)
            return isinstance(obj, dict) and name in obj

        return Compiled(has, boolean=True, probe=has)

    # -- operators -------------------------------------------------------------------------

    def _unary(self, node: nodes.Unary) -> Compiled:
        operand = self.compile(node.operand)
        fn = operand.fn
        if node.op == "!":
            if operand.probe is not None and not operand.is_const:
                slow: Fn = lambda ctx: values.logical_not(fn(ctx))  # noqa: E731
                return _probed(specialize.not_probe(operand.probe), slow)
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
        generic = Compiled(_generic_binary(op, left, right), boolean=boolean)
        probe = self._probe_binary(node, left, right)
        return generic if probe is None else _probed(probe, generic.fn)

    def _probe_binary(self, node: nodes.Binary, left: Compiled, right: Compiled) -> Probe | None:
        """A specialized probe for ``x in [literals]`` and ``path op literal``, if any."""
        op = node.op
        if op == "in" and right.is_const and right.const.__class__ is list:
            path = _path(node.left)
            rooted = self._rooted(path) if path is not None else ()
            field = rooted[0] if len(rooted) == 1 else None  # what the probe reads, if one field
            return specialize.member_probe(self._safe(node.left, left), right.const, field)  # type: ignore[arg-type]
        if op == "in" and left.is_const and (path := _path(node.right)) is not None:
            return specialize.contains_probe(path_peek(self._rooted(path)), left.const)
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
        return specialize.compare_probe(self._rooted(path), op, lit)

    def _safe(self, node: nodes.Node, compiled: Compiled) -> Fn:
        """A getter for ``node`` that returns MISSING instead of raising."""
        path = _path(node)
        return path_peek(self._rooted(path)) if path is not None else safe(compiled.fn)

    def _logical(self, node: nodes.Logical) -> Compiled:
        parts = [self.compile(item) for item in node.items]
        probes = tuple(part.probe or specialize.as_probe(part.fn) for part in parts)
        slow = specialize.absorbing_chain(node.op, tuple(part.fn for part in parts))
        return self._fold(_probed(specialize.chain_probe(node.op, probes), slow), parts)

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
            f1, c2 = fns[0], parts[1].const
            probe = specialize.string_probe(node.name, self._safe(node.args[0], parts[0]), c2)  # type: ignore[arg-type]
            return _probed(probe, lambda ctx: impl(f1(ctx), c2))
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
            search = compile_pattern(pattern_node.value)  # type: ignore[arg-type]
        except ValueError as exc:
            raise RegexError(
                f"expected a valid RE2 pattern at position {pattern_node.pos}, found {exc}",
                expression=self.source,
                position=pattern_node.pos,
            ) from None
        part = self.compile(subject)
        matcher, fn = make_matcher(search), part.fn
        if part.is_const:
            return self._fold(Compiled(lambda ctx: matcher(fn(ctx)), boolean=True), [part])
        get = self._safe(subject, part)

        def probe(ctx: object) -> bool | None:
            v = get(ctx)
            if v.__class__ is not str:
                return None
            try:
                return search(v)  # type: ignore[arg-type]
            except values.EvalError:
                return None

        return _probed(probe, lambda ctx: matcher(fn(ctx)))


def _generic_binary(op: str, left: Compiled, right: Compiled) -> Fn:
    """``left op right`` through the generic value rules of :mod:`runtime.expr.values`."""
    fl, fr = left.fn, right.fn
    if op == "in":  # contains(container, item), called directly
        contains = values.contains
        if left.is_const:
            c = left.const
            return lambda ctx: contains(fr(ctx), c)
        if right.is_const:
            c = right.const
            return lambda ctx: contains(c, fl(ctx))

        def member(ctx: object) -> bool:
            item = fl(ctx)
            return contains(fr(ctx), item)

        return member
    impl = values.BINARY_OPS[op]
    if right.is_const:
        c = right.const
        return lambda ctx: impl(fl(ctx), c)
    if left.is_const:
        c = left.const
        return lambda ctx: impl(c, fr(ctx))
    return lambda ctx: impl(fl(ctx), fr(ctx))
