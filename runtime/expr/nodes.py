"""The abstract syntax tree: small frozen, slotted dataclasses.

Every node records ``pos``, the 0-based offset of the token that introduced it, so the
compiler can report semantic problems (unknown function, bad regex) at the right place.
``&&`` and ``||`` chains are n-ary (:class:`Logical`) so that long filters stay shallow.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Literal:
    """A constant: int, float, str, bool or None."""

    value: object
    pos: int


@dataclass(frozen=True, slots=True)
class ListLit:
    """A list literal ``[a, b, ...]``."""

    items: tuple[Node, ...]
    pos: int


@dataclass(frozen=True, slots=True)
class Ident:
    """A top-level name, read from the context mapping."""

    name: str
    pos: int


@dataclass(frozen=True, slots=True)
class Select:
    """Member access ``operand.field`` (a key lookup on a map)."""

    operand: Node
    field: str
    pos: int


@dataclass(frozen=True, slots=True)
class Index:
    """Indexing ``operand[index]`` on a list (int) or map (key)."""

    operand: Node
    index: Node
    pos: int


@dataclass(frozen=True, slots=True)
class Call:
    """A whitelisted function call; a receiver call ``x.f(y)`` is stored as ``f(x, y)``."""

    name: str
    args: tuple[Node, ...]
    pos: int
    receiver: bool = False


@dataclass(frozen=True, slots=True)
class Has:
    """The presence macro ``has(operand.field)``; ``operand`` is None for ``has(name)``."""

    operand: Node | None
    field: str
    pos: int


@dataclass(frozen=True, slots=True)
class Unary:
    """``!x`` or ``-x``."""

    op: str
    operand: Node
    pos: int


@dataclass(frozen=True, slots=True)
class Binary:
    """Arithmetic, comparison or ``in``: ``left op right``."""

    op: str
    left: Node
    right: Node
    pos: int


@dataclass(frozen=True, slots=True)
class Logical:
    """An n-ary ``&&`` or ``||`` chain (``op`` is ``"&&"`` or ``"||"``)."""

    op: str
    items: tuple[Node, ...]
    pos: int


@dataclass(frozen=True, slots=True)
class Cond:
    """The ternary ``cond ? then : otherwise``."""

    cond: Node
    then: Node
    otherwise: Node
    pos: int


Node = Literal | ListLit | Ident | Select | Index | Call | Has | Unary | Binary | Logical | Cond


def children(node: Node) -> tuple[Node, ...]:
    """The direct sub-expressions of ``node``, in source order."""
    if isinstance(node, (Literal, Ident)):
        return ()
    if isinstance(node, ListLit):
        return node.items
    if isinstance(node, (Select, Unary)):
        return (node.operand,)
    if isinstance(node, Index):
        return (node.operand, node.index)
    if isinstance(node, (Call, Logical)):
        return node.args if isinstance(node, Call) else node.items
    if isinstance(node, Has):
        return () if node.operand is None else (node.operand,)
    if isinstance(node, Binary):
        return (node.left, node.right)
    return (node.cond, node.then, node.otherwise)


def depth(node: Node) -> tuple[int, int]:
    """The nesting depth of ``node`` and the position of its deepest leaf (iteratively)."""
    best, best_pos = 0, node.pos
    stack: list[tuple[Node, int]] = [(node, 1)]
    while stack:
        current, level = stack.pop()
        if level > best:
            best, best_pos = level, current.pos
        stack.extend((child, level + 1) for child in children(current))
    return best, best_pos
