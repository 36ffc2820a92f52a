"""Precedence-climbing parser from tokens to the AST in :mod:`runtime.expr.nodes`.

Precedence, lowest first (as in CEL)::

    c ? a : b                      right-associative
    ||
    &&
    < <= > >= == != in             left-associative, one level
    + -
    * / %
    ! -  (unary)
    a.b  a[b]  f(x)  x.f(y)        postfix

Safety limits enforced here: source length, nesting depth (both while parsing and on the
finished tree), list literal size, and names starting with ``_``.
"""

from __future__ import annotations

from runtime.errors import ExpressionError
from runtime.expr import nodes
from runtime.expr.lexer import INT_LITERAL_MAX, Token, tokenize

#: Binding power of each binary operator; ``?:`` sits below all of them.
BINARY_PRECEDENCE: dict[str, int] = {
    "||": 1,
    "&&": 2,
    "<": 3, "<=": 3, ">": 3, ">=": 3, "==": 3, "!=": 3, "in": 3,
    "+": 4, "-": 4,
    "*": 5, "/": 5, "%": 5,
}  # fmt: skip

MAX_LIST_ITEMS = 1000

_FIELD_KINDS = frozenset({"ident", "true", "false", "null", "in"})


def parse(source: str, *, max_length: int = 2000, max_depth: int = 32) -> nodes.Node:
    """Parse ``source`` into an AST, or raise :class:`ExpressionError` with a position."""
    if not isinstance(source, str):
        raise ExpressionError(
            f"expected an expression string, found {type(source).__name__}",
            expression=repr(source)[:200],
            position=None,
        )
    if len(source) > max_length:
        raise ExpressionError(
            f"expected at most {max_length} characters at position {max_length}, found {len(source)} characters",
            expression=source[:200],
            position=max_length,
        )
    tree = _Parser(source, tokenize(source), max_depth).parse()
    level, pos = nodes.depth(tree)
    if level > max_depth:
        raise ExpressionError(
            f"expected at most {max_depth} levels of nesting at position {pos}, found {level}",
            expression=source,
            position=pos,
        )
    return tree


class _Parser:
    """A one-shot recursive-descent / precedence-climbing parser over a token list."""

    __slots__ = ("i", "max_depth", "nesting", "source", "tokens")

    def __init__(self, source: str, tokens: list[Token], max_depth: int) -> None:
        self.source = source
        self.tokens = tokens
        self.i = 0
        self.max_depth = max_depth
        self.nesting = 0

    # -- helpers ---------------------------------------------------------------------------

    def peek(self, ahead: int = 0) -> Token:
        return self.tokens[min(self.i + ahead, len(self.tokens) - 1)]

    def advance(self) -> Token:
        tok = self.tokens[self.i]
        if tok.kind != "eof":
            self.i += 1
        return tok

    def error(self, expected: str, tok: Token, note: str = "") -> ExpressionError:
        message = f"expected {expected} at position {tok.pos}, found {tok.describe()}{note}"
        return ExpressionError(message, expression=self.source, position=tok.pos)

    def expect(self, kind: str) -> Token:
        tok = self.peek()
        if tok.kind != kind:
            raise self.error(repr(kind), tok)
        return self.advance()

    def enter(self) -> None:
        self.nesting += 1
        if self.nesting > self.max_depth:
            tok = self.peek()
            raise ExpressionError(
                f"expected at most {self.max_depth} levels of nesting at position {tok.pos}, found deeper nesting",
                expression=self.source,
                position=tok.pos,
            )

    def name(self, tok: Token) -> str:
        """Validate an identifier or field name: names starting with '_' are refused."""
        name = str(tok.value)
        if name.startswith("_"):
            raise self.error("a name not starting with '_'", tok)
        return name

    # -- grammar ---------------------------------------------------------------------------

    def parse(self) -> nodes.Node:
        tree = self.expr()
        tok = self.peek()
        if tok.kind != "eof":
            raise self.error("an operator or end of input", tok)
        return tree

    def expr(self) -> nodes.Node:
        """``cond ? then : otherwise`` or a binary expression."""
        self.enter()
        node = self.binary(1)
        if self.peek().kind == "?":
            q = self.advance()
            then = self.expr()
            self.expect(":")
            otherwise = self.expr()
            node = nodes.Cond(node, then, otherwise, q.pos)
        self.nesting -= 1
        return node

    def binary(self, min_prec: int) -> nodes.Node:
        left = self.unary()
        while True:
            tok = self.peek()
            prec = BINARY_PRECEDENCE.get(tok.kind)
            if prec is None or prec < min_prec:
                return left
            self.advance()
            right = self.binary(prec + 1)
            if tok.kind in ("&&", "||"):
                left = _logical(tok.kind, left, right, tok.pos)
            else:
                left = nodes.Binary(tok.kind, left, right, tok.pos)

    def unary(self) -> nodes.Node:
        tok = self.peek()
        if tok.kind not in ("!", "-"):
            return self.postfix()
        self.advance()
        nxt = self.peek()
        if (
            tok.kind == "-"
            and nxt.kind == "int"
            and nxt.value == INT_LITERAL_MAX
            and self.peek(1).kind not in (".", "[")
        ):
            self.advance()
            return nodes.Literal(-INT_LITERAL_MAX, tok.pos)
        self.enter()
        operand = self.unary()
        self.nesting -= 1
        return nodes.Unary(tok.kind, operand, tok.pos)

    def postfix(self) -> nodes.Node:
        node = self.primary()
        while True:
            tok = self.peek()
            if tok.kind == ".":
                self.advance()
                field_tok = self.peek()
                if field_tok.kind not in _FIELD_KINDS:
                    raise self.error("a field name after '.'", field_tok)
                self.advance()
                field = self.name(field_tok)
                if self.peek().kind == "(":
                    args = self.arguments()
                    node = nodes.Call(field, (node, *args), field_tok.pos, receiver=True)
                else:
                    node = nodes.Select(node, field, tok.pos)
            elif tok.kind == "[":
                self.advance()
                index = self.expr()
                self.expect("]")
                node = nodes.Index(node, index, tok.pos)
            else:
                return node

    def primary(self) -> nodes.Node:
        tok = self.peek()
        kind = tok.kind
        if kind in ("int", "float", "string"):
            self.advance()
            if kind == "int" and tok.value == INT_LITERAL_MAX:
                raise self.error("an integer literal below 2**63", tok, " (only -9223372036854775808 may use it)")
            return nodes.Literal(tok.value, tok.pos)
        if kind in ("true", "false", "null"):
            self.advance()
            return nodes.Literal({"true": True, "false": False, "null": None}[kind], tok.pos)
        if kind == "ident":
            self.advance()
            name = self.name(tok)
            if self.peek().kind != "(":
                return nodes.Ident(name, tok.pos)
            if name == "has":
                return self.has_macro(tok)
            return nodes.Call(name, tuple(self.arguments()), tok.pos)
        if kind == "(":
            self.advance()
            node = self.expr()
            self.expect(")")
            return node
        if kind == "[":
            return self.list_literal()
        raise self.error("an operand", tok)

    def arguments(self) -> list[nodes.Node]:
        """``( [expr {, expr}] )`` starting at the '(' token."""
        self.expect("(")
        args: list[nodes.Node] = []
        if self.peek().kind != ")":
            while True:
                args.append(self.expr())
                if self.peek().kind != ",":
                    break
                self.advance()
        tok = self.peek()
        if tok.kind != ")":
            raise self.error("',' or ')'", tok)
        self.advance()
        return args

    def list_literal(self) -> nodes.ListLit:
        start = self.expect("[")
        items: list[nodes.Node] = []
        while self.peek().kind != "]":
            items.append(self.expr())
            if len(items) > MAX_LIST_ITEMS:
                raise ExpressionError(
                    f"expected at most {MAX_LIST_ITEMS} list elements at position {start.pos}, found more",
                    expression=self.source,
                    position=start.pos,
                )
            if self.peek().kind != ",":
                break
            self.advance()
        tok = self.peek()
        if tok.kind != "]":
            raise self.error("',' or ']'", tok)
        self.advance()
        return nodes.ListLit(tuple(items), start.pos)

    def has_macro(self, tok: Token) -> nodes.Has:
        args = self.arguments()
        if len(args) != 1:
            raise ExpressionError(
                f"expected exactly 1 argument to has() at position {tok.pos}, found {len(args)}",
                expression=self.source,
                position=tok.pos,
            )
        arg = args[0]
        if isinstance(arg, nodes.Select):
            return nodes.Has(arg.operand, arg.field, tok.pos)
        if isinstance(arg, nodes.Ident):
            return nodes.Has(None, arg.name, tok.pos)
        raise ExpressionError(
            f"expected a field selection like has(a.b) at position {arg.pos}, found {type(arg).__name__.lower()}",
            expression=self.source,
            position=arg.pos,
        )


def _logical(op: str, left: nodes.Node, right: nodes.Node, pos: int) -> nodes.Logical:
    """Join ``left op right`` into one flat n-ary chain (&&/|| are associative)."""
    items: list[nodes.Node] = []
    for side in (left, right):
        if isinstance(side, nodes.Logical) and side.op == op:
            items.extend(side.items)
        else:
            items.append(side)
    first = left.pos if isinstance(left, nodes.Logical) and left.op == op else pos
    return nodes.Logical(op, tuple(items), first)
