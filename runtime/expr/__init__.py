"""ESP's safe expression language: a CEL-syntax subset compiled once into closures.

Used for event filters, derived fields and segment tags::

    expr = compile_expr("data.site == 'official' && data.duration_s >= 120")
    expr.predicate(event)   # -> bool; False on any runtime error (missing field, ...)
    expr(event)             # -> the value; raises EvalError on runtime errors
    expr.fields             # -> frozenset({'data.site', 'data.duration_s'})

Nothing is ever ``eval``-ed: the source is tokenized (:mod:`.lexer`), parsed into a
small AST (:mod:`.parser`, :mod:`.nodes`) and compiled into nested Python closures
(:mod:`.compiler`, :mod:`.specialize`) over the whitelisted functions (:mod:`.functions`)
and the value rules of :mod:`.values`. Every compile-time problem raises
:class:`runtime.errors.ExpressionError` with a 0-based ``position``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from runtime.errors import ExpressionError
from runtime.expr.compiler import Compiler
from runtime.expr.functions import RegexError
from runtime.expr.parser import parse
from runtime.expr.specialize import Select, field_selecting, selecting
from runtime.expr.values import EvalError

__all__ = ["EvalError", "Expr", "ExpressionError", "RegexError", "compile_expr"]

Context = Mapping[str, object]


@dataclass(frozen=True, slots=True)
class Expr:
    """A compiled expression. Immutable, thread-safe, cheap to call.

    ``fn(ctx)`` is the raw closure (fastest; raises :class:`EvalError`, and in principle
    any other exception on exotic inputs). ``predicate(ctx)`` is a closure built at
    compile time returning ``True`` only if the value is exactly ``True``, and ``False``
    on any runtime error. Values returned may share structure with the context or with
    constants in the expression: do not mutate them.
    """

    source: str
    fn: Callable[[Context], object] = field(repr=False, compare=False)
    fields: frozenset[str]
    predicate: Callable[[Context], bool] = field(repr=False, compare=False)
    # ``predicate`` over an event's ``data`` alone, when the expression reads nothing else
    # (``data.v >= 90``): the rule engine then builds no context for the event
    data_predicate: Callable[[object], bool] | None = field(default=None, repr=False, compare=False)
    # the same over a batch: which of ``indices`` index a ``data`` in ``datas`` that passes
    data_select: Select | None = field(default=None, repr=False, compare=False)
    # when it reads one field of ``data`` (``data.v``): that field, and the same select over
    # the batch's values of it (MISSING where absent), which need no ``data`` decoded whole
    data_field_select: tuple[str, Select] | None = field(default=None, repr=False, compare=False)

    def __reduce__(self) -> tuple[Callable[[str], Expr], tuple[str]]:
        """Pickle as source text; unpickling compiles again (closures do not pickle)."""
        return _recompile, (self.source,)

    def __call__(self, ctx: Context) -> object:
        """Evaluate against ``ctx``; runtime problems raise :class:`EvalError`."""
        try:
            return self.fn(ctx)
        except EvalError:
            raise
        except Exception as exc:  # a Python error the value rules did not foresee
            raise EvalError(f"{type(exc).__name__}: {exc}") from exc


def _make_predicate(fn: Callable[[Context], object]) -> Callable[[Context], bool]:
    """``fn(ctx) is True``, with any exception meaning False. ``fn`` is the root's probe
    (tri-state, never raising in practice) when it has one, else its value closure."""

    def predicate(ctx: Context) -> bool:
        try:
            return fn(ctx) is True
        except Exception:
            return False

    return predicate


def compile_expr(source: str, *, max_length: int = 2000, max_depth: int = 32) -> Expr:
    """Compile ``source`` once into an :class:`Expr`.

    Raises :class:`ExpressionError` (with ``position``) for syntax errors, unknown
    functions, names starting with ``_``, sources over ``max_length`` characters,
    nesting deeper than ``max_depth``, integer literals over 2**63, list literals over
    1000 elements and non-literal ``matches()`` patterns; :class:`RegexError` (reason
    ``invalid_regex``) for patterns RE2 refuses or longer than 1,000 characters.
    """
    try:
        tree = parse(source, max_length=max_length, max_depth=max_depth)
        compiler = Compiler(source)
        root = compiler.compile(tree)
    except RecursionError:  # only reachable with a very large max_depth
        raise ExpressionError(
            f"expected at most {max_depth} levels of nesting, found more than Python can parse", expression=source[:200]
        ) from None
    fn = root.fn
    predicate = _make_predicate(root.probe or fn)  # type: ignore[arg-type]
    return Expr(source, fn, frozenset(compiler.fields), predicate, *_data_predicate(tree, source, compiler.fields))


def _data_predicate(
    tree: object, source: str, fields: set[str]
) -> tuple[Callable[[object], bool], Select, tuple[str, Select] | None] | tuple[None, None, None]:
    """The predicate compiled against ``data`` when every field it reads is inside it, alone,
    over a batch, and over a batch of one field's values when it reads one."""
    if not all(f.startswith("data.") for f in fields):
        return None, None, None
    try:
        rooted = Compiler(source, root="data").compile(tree)  # type: ignore[arg-type]
    except ValueError:  # a path the field list does not show (e.g. data['a-b']) reads data whole
        return None, None, None
    predicate = _make_predicate(rooted.probe or rooted.fn)  # type: ignore[arg-type]
    on_field = field_selecting(rooted.probe) if rooted.probe is not None else None
    return predicate, selecting(rooted.probe or rooted.fn, predicate), on_field  # type: ignore[arg-type]


def _recompile(source: str) -> Expr:
    """Rebuild a pickled :class:`Expr`; it was validated once, so only loose limits apply."""
    return compile_expr(source, max_length=max(len(source), 2000), max_depth=64)
