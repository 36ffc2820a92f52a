"""Message and payload templates for notification channels, rendered in a sandbox.

A channel turns a notification request (a ``notifications.<channel>`` CloudEvent) into text —
the message a customer reads — and into a JSON payload for the operator's gateway. Both are
Jinja templates, written by operators and saved with the channel config, so they are compiled
once when saved (:func:`compile_template`, which refuses a bad one with its line) and rendered
per notification (:meth:`Template.render`, :meth:`Template.render_json`).

What a template sees is :func:`notification_context`::

    customer   the customer (the notification's ``subject``)
    profile    the customer's profile: attributes, ``tags``, ``segments``, ``scores``
    event      the notification CloudEvent itself
    data       ``event.data``: ``rule``, ``rule_version``, ``count``, ``events``, ``notify``
    notify     ``data.notify``: ``channel``, ``template``, ``campaign``, ``priority``
    campaign   ``notify.campaign`` (absent when the rule names none)
    message    the rendered message template (for payload templates)

For example a message ``Hi {{ profile.name | default('there') }}, your {{ campaign }} offer`` and
a payload ``{"to": {{ profile.msisdn | tojson }}, "text": {{ message | tojson }}}``.

Rules of the sandbox:

- Undefined is an error: a field the customer or notification does not have fails the render
  with the field's path, unless the template says what to do (``| default('...')``,
  ``{% if profile.name is defined %}``). An unknown variable name fails at compile time.
- ``a.b`` on a mapping reads the key ``b`` first, so ``data.items`` is a field named ``items``,
  not the dict method.
- No attributes starting with ``_``, no mutating methods, no ``include``/``import``/``extends``,
  no file system; huge repetitions (``'x' * 10**9``) and powers are refused.
- Text is not escaped (these are SMS and JSON, not HTML). In JSON payloads insert every value
  with ``| tojson``: it writes a JSON literal (quotes, newlines, Chinese text all safe) without
  HTML escaping, e.g. ``"text": {{ message | tojson }}`` (no quotes around it).
- Blocks trim their own newline (``trim_blocks``, ``lstrip_blocks``).

Errors::

    ConfigError                      (runtime.errors)
    └── TemplateError                invalid_template   does not compile: syntax, unknown variable
    InputError                       (runtime.errors)
    └── RenderError                  render_failed      this notification cannot be rendered
                                     missing_field      ... a field it uses is absent
                                     unsafe_template    ... it broke a sandbox rule
                                     invalid_json       ... a payload template did not give JSON
"""

from __future__ import annotations

import functools
import json
import traceback
from collections import deque
from collections.abc import Iterator, Mapping
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, UndefinedError, meta, nodes
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import missing

from runtime.errors import ConfigError, InputError

VARIABLES = ("customer", "profile", "event", "data", "notify", "campaign", "message")
MAX_REPEAT_LENGTH = 100_000  # 'x' * n and [..] * n: longer than any message or payload
MAX_EXPONENT = 1_000  # a ** b: 10**1000 is plenty; 2**10**9 would stall the dispatcher
_PATH_DEPTH = 6  # how deep the context is searched for the object a missing field was read on
_FORBIDDEN_NODES = (nodes.Include, nodes.Import, nodes.FromImport, nodes.Extends)


class TemplateError(ConfigError):
    """A template does not compile. Like :class:`~runtime.errors.ExpressionError`, it is a
    problem of the config document that holds the template, so the config API answers 422."""

    reason = "invalid_template"

    def __init__(self, message: str, *, template: str, line: int | None = None) -> None:
        super().__init__(message, errors=[{"path": "template", "expected": "a valid template", "got": message}])
        self.template = template
        self.line = line

    def to_dict(self) -> dict[str, object]:
        return {**super().to_dict(), "template": self.template, "line": self.line}


class RenderError(InputError):
    """A compiled template cannot be rendered for this notification; ``field`` names the
    missing field (``reason == 'missing_field'``), ``line`` the template line when known."""

    reason = "render_failed"

    def __init__(
        self,
        message: str,
        *,
        template: str,
        reason: str | None = None,
        field: str | None = None,
        line: int | None = None,
    ) -> None:
        super().__init__(message, reason=reason)
        self.template = template
        self.field = field
        self.line = line

    def to_dict(self) -> dict[str, object]:
        return {**super().to_dict(), "template": self.template, "field": self.field, "line": self.line}


class _MissingField(UndefinedError):
    """Raised by :class:`_Undefined`: carries the object the field was read on, so the render
    can name the field by its path in the context."""

    def __init__(self, message: str, *, obj: Any, name: Any) -> None:
        super().__init__(message)
        self.obj = obj
        self.name = name


class _Undefined(StrictUndefined):
    __slots__ = ()

    def __init__(self, hint: str | None = None, obj: Any = missing, name: str | None = None, exc: Any = None) -> None:
        # Only plain undefined values become _MissingField; the sandbox passes SecurityError.
        plain = exc is None or exc is UndefinedError
        factory = functools.partial(_MissingField, obj=obj, name=name) if plain else exc
        super().__init__(hint, obj, name, factory)


class _Environment(ImmutableSandboxedEnvironment):
    """The sandbox, with mapping keys before attributes and a cap on repetition and powers."""

    intercepted_binops = frozenset({"*", "**"})

    def getattr(self, obj: Any, attribute: str) -> Any:
        if isinstance(obj, Mapping) and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, int) and abs(right) > MAX_EXPONENT:
            raise SecurityError(f"the exponent {right} is above the sandbox limit of {MAX_EXPONENT}")
        if operator == "*" and _repeat_length(left, right) > MAX_REPEAT_LENGTH:
            raise SecurityError(f"a repetition longer than the sandbox limit of {MAX_REPEAT_LENGTH} items")
        return super().call_binop(context, operator, left, right)


def _repeat_length(left: Any, right: Any) -> int:
    for seq, times in ((left, right), (right, left)):
        if isinstance(seq, str | list | tuple) and isinstance(times, int):
            return len(seq) * times
    return 0


def tojson(value: Any, indent: int | None = None) -> str:
    """The ``tojson`` filter: a JSON literal, UTF-8 kept readable, no HTML escaping."""
    if isinstance(value, Undefined):
        value._fail_with_undefined_error()
    return json.dumps(value, ensure_ascii=False, indent=indent)


def _environment() -> _Environment:
    env = _Environment(
        undefined=_Undefined, autoescape=False, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=False
    )
    env.filters["tojson"] = tojson
    return env


_ENV = _environment()


class Template:
    """A compiled template; thread-safe, render as often as needed."""

    def __init__(self, name: str, source: str, variables: frozenset[str], compiled: Any) -> None:
        self.name = name
        self.source = source
        self.variables = variables  # the context variables it reads
        self._compiled = compiled

    def __repr__(self) -> str:
        return f"Template({self.name!r})"

    def render(self, context: Mapping[str, Any]) -> str:
        """The text for this context (see :func:`notification_context`); raises
        :class:`RenderError`."""
        try:
            return str(self._compiled.render(context))
        except _MissingField as exc:
            raise self._missing(exc, context) from None
        except SecurityError as exc:
            raise self._error(exc, "unsafe_template", f"is not allowed: {exc}") from None
        except Exception as exc:  # the template author's code: any error is a render failure
            raise self._error(exc, None, f"failed: {type(exc).__name__}: {exc}") from None

    def render_json(self, context: Mapping[str, Any]) -> Any:
        """Render, then parse as JSON; raises :class:`RenderError` (``invalid_json``) with the
        parser's complaint and the start of the text when it is not JSON."""
        text = self.render(context)
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            shown = text if len(text) <= 200 else text[:200] + "..."
            raise RenderError(
                f"template {self.name!r} did not render valid JSON ({exc}; insert values with '| tojson'): {shown!r}",
                template=self.name,
                reason="invalid_json",
            ) from None

    def _missing(self, exc: _MissingField, context: Mapping[str, Any]) -> RenderError:
        if exc.name is None:  # an undefined with only a hint, e.g. loop.previtem on the first item
            return self._error(exc, "missing_field", f"failed: {exc}")
        field = _field_path(exc, context, self.source)
        whose = "this customer" if field.split(".")[0] in ("profile", "customer") else "this notification"
        return RenderError(
            f"template {self.name!r} needs {field}, which {whose} does not have",
            template=self.name,
            reason="missing_field",
            field=field,
            line=_template_line(exc),
        )

    def _error(self, exc: Exception, reason: str | None, what: str) -> RenderError:
        line = _template_line(exc)
        where = f"template {self.name!r}" + (f" line {line}" if line is not None else "")
        return RenderError(f"{where} {what}", template=self.name, reason=reason, line=line)


def compile_template(source: str, *, name: str) -> Template:
    """Compile ``source``, or raise :class:`TemplateError` naming the template, the line and
    what is wrong (a syntax error, an unknown filter, ``include``, an unknown variable)."""
    try:
        ast = _ENV.parse(source)
        _check_nodes(ast, name)
        variables = frozenset(meta.find_undeclared_variables(ast)) - set(_ENV.globals)
        _check_variables(variables, name)
        compiled = _ENV.from_string(ast)
    except TemplateSyntaxError as exc:
        raise TemplateError(
            f"template {name!r} line {exc.lineno}: {exc.message}{_quote_line(source, exc.lineno)}",
            template=name,
            line=exc.lineno,
        ) from None
    return Template(name, source, variables, compiled)


def _check_nodes(ast: nodes.Template, name: str) -> None:
    for node in ast.find_all(_FORBIDDEN_NODES):
        tag = type(node).__name__.lower().replace("fromimport", "from ... import")
        raise TemplateError(
            f"template {name!r} line {node.lineno}: '{tag}' is not allowed: templates cannot read other "
            "templates or files",
            template=name,
            line=node.lineno,
        )


def _check_variables(variables: frozenset[str], name: str) -> None:
    unknown = sorted(variables - set(VARIABLES))
    if unknown:
        raise TemplateError(
            f"template {name!r} uses {', '.join(unknown)}, which {'is' if len(unknown) == 1 else 'are'} not a "
            f"template variable (variables: {', '.join(VARIABLES)})",
            template=name,
        )


def _quote_line(source: str, lineno: int | None) -> str:
    lines = source.splitlines()
    if lineno is None or not 0 < lineno <= len(lines):
        return ""
    return f" (in: {lines[lineno - 1].strip()[:120]})"


def _template_line(exc: BaseException) -> int | None:
    """The template line of the innermost template frame (Jinja rewrites tracebacks so that
    template frames carry the template's line numbers)."""
    frames = traceback.walk_tb(exc.__traceback__)
    lines = [lineno for frame, lineno in frames if frame.f_code.co_filename == "<template>"]
    return lines[-1] if lines else None


def _field_path(exc: _MissingField, context: Mapping[str, Any], source: str) -> str:
    """The dotted path of the missing field. The same object can sit at several paths
    (``notify`` is ``data.notify``): prefer the longest one the template spells, then the
    shortest."""
    if exc.obj is missing:
        return str(exc.name)
    candidates = [_join(path, exc.name) for path in _paths_to(exc.obj, context)]
    if not candidates:
        return str(exc.name)
    spelled = [path for path in candidates if path in source]
    return max(spelled, key=len) if spelled else min(candidates, key=len)


def _paths_to(target: Any, context: Mapping[str, Any]) -> Iterator[str]:
    queue: deque[tuple[str, Any, int]] = deque((str(key), value, 1) for key, value in context.items())
    while queue:
        path, value, depth = queue.popleft()
        if value is target:
            yield path
        if depth >= _PATH_DEPTH:
            continue
        if isinstance(value, Mapping):
            queue.extend((_join(path, key), child, depth + 1) for key, child in value.items())
        elif isinstance(value, list | tuple):
            queue.extend((f"{path}[{i}]", child, depth + 1) for i, child in enumerate(value))


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if isinstance(key, str) and key.isidentifier() else f"{path}[{key!r}]"


def notification_context(
    event: Mapping[str, Any], profile: Mapping[str, Any], message: str | None = None
) -> dict[str, Any]:
    """The variables a template sees, for one notification CloudEvent and the customer's
    profile (see the module docstring). Absent values are left out rather than set to None, so
    a template that needs one fails with its name instead of printing 'None'."""
    data = event.get("data") or {}
    notify = data.get("notify") or {}
    context = {
        "customer": event.get("subject"),
        "profile": profile,
        "event": event,
        "data": data,
        "notify": notify,
        "campaign": notify.get("campaign"),
        "message": message,
    }
    return {key: value for key, value in context.items() if value is not None}
