"""Where in a YAML text a validation error's path points: the line of the deepest node the path
reaches, found with the marks ``yaml.compose`` keeps on every node.

Paths are the config API's dotted paths (``when.absence.within``, ``then.0.emit``). Segments that
name no node (pydantic's union tags, a field that is missing) are skipped, so a missing field
points at the mapping that should hold it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import yaml

MAX_DEPTH = 32  # config documents nest a few levels; the API's JSON bodies have the same kind of bound


class Unsupported(yaml.MarkedYAMLError):
    """YAML the console refuses though it parses: anchors and aliases (a few bytes of them can
    stand for millions of nodes) or nesting deeper than ``MAX_DEPTH``."""


def load(text: str) -> Any:
    """``text`` as one document, like ``yaml.safe_load``, but refused with :class:`Unsupported`
    (at the offending line) before any node is built when it holds an alias or an anchor or
    nests deeper than ``MAX_DEPTH``. Raises ``yaml.YAMLError`` for invalid YAML."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise Unsupported(problem="anchors and aliases are not supported", problem_mark=event.start_mark)
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise Unsupported(problem=f"nested deeper than {MAX_DEPTH} levels", problem_mark=event.start_mark)
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
    return yaml.safe_load(text)


def compose(text: str) -> yaml.Node | None:
    """The YAML node tree of ``text`` (None if empty); raises ``yaml.YAMLError`` if invalid."""
    return yaml.compose(text, Loader=yaml.SafeLoader)


def line_of(text: str, path: str | Sequence[Any]) -> int | None:
    """The 1-based line of the node ``path`` reaches in ``text`` (None if the text does not parse):
    a scalar's own line; for a mapping or list reached by a key, the key's line."""
    try:
        root = compose(text)
    except yaml.YAMLError:
        return None
    if root is None:
        return None
    segments = path.split(".") if isinstance(path, str) else [str(p) for p in path]
    return _walk(root, [s for s in segments if s], root.start_mark.line) + 1


def _walk(node: yaml.Node, segments: list[str], line: int) -> int:
    """The 0-based line of the deepest node the segments reach (``line``: where ``node`` is named)."""
    for i, segment in enumerate(segments):
        found = _child(node, segment)
        if found is not None:
            child, named_at = found
            return _walk(child, segments[i + 1 :], named_at)
    return node.start_mark.line if isinstance(node, yaml.ScalarNode) else line


def _child(node: yaml.Node, segment: str) -> tuple[yaml.Node, int] | None:
    """The child named by ``segment`` and the line that names it (its key's, or its own)."""
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.value == segment:
                return (key if _empty(value) else value), key.start_mark.line
    elif isinstance(node, yaml.SequenceNode) and segment.isdigit():
        index = int(segment)
        if index < len(node.value):
            return node.value[index], node.value[index].start_mark.line
    return None


def _empty(node: yaml.Node) -> bool:
    """A key with no value (``field:``): its null node's mark is past the line's end."""
    return isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null") and node.value == ""


def yaml_error_line(exc: yaml.YAMLError) -> int | None:
    """The 1-based line a YAML syntax error points at."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    return mark.line + 1 if mark is not None else None


def place(text: str, errors: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each error (``path``, ``expected``, ``got``) with the ``line`` it concerns (or None)."""
    return [{**e, "line": line_of(text, str(e.get("path") or ""))} for e in errors]
