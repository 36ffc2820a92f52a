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
- Nothing is evaluated when a template is saved: compiling only parses and generates code
  (Jinja's constant folding is off and every filter and operator runs at render time only).
- Rendering is bounded: no value a filter or operator builds may exceed
  :data:`MAX_VALUE_LENGTH` characters or items, the text may not exceed
  :data:`MAX_OUTPUT_LENGTH` characters, and loop iterations, calls and the characters or items
  built share a budget of :data:`MAX_WORK` units per render. String methods that can grow a text
  (``center``, ``format``, ``join``, ``replace``, ...) are not callable: the filters of the same
  names are, and they are bounded.
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
                                     template_too_large ... its text or a value it builds is too big
                                     template_work_exceeded ... it loops or calls too much
                                     invalid_json       ... a payload template did not give JSON
"""

from __future__ import annotations

import functools
import json
import re
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, UndefinedError, meta, nodes, pass_context
from jinja2.exceptions import SecurityError
from jinja2.filters import make_attrgetter
from jinja2.runtime import Context, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import _PassArg, generate_lorem_ipsum, missing
from jinja2.visitor import NodeTransformer

from runtime.errors import ConfigError, InputError

VARIABLES = ("customer", "profile", "event", "data", "notify", "campaign", "message")
MAX_VALUE_LENGTH = 100_000  # characters or items of any value a filter or operator builds
MAX_OUTPUT_LENGTH = 64 * 1024  # characters of one rendered message or payload
MAX_WORK = 1_000_000  # units per render: loop iterations, calls, characters or items built (< 0.5 s)
_CALL_COST = 50  # units per call: a macro call costs as much time as some 20-50 loop iterations
MAX_EXPONENT = 1_000  # a ** b: 10**1000 is plenty; 2**10**9 would stall the dispatcher
MAX_INT_BITS = 64 * 1024  # integers built by * and **: ~20,000 digits
MAX_JSON_INDENT = 16
_LOOP_FILTER = "esp-loop"  # filters the compiler wraps loops and '~' in; the dash keeps them
_CONCAT_FILTER = "esp-concat"  # out of reach of template authors
_GROWING_STR_METHODS = frozenset(
    {"center", "ljust", "rjust", "zfill", "expandtabs", "format", "format_map", "join", "replace", "translate"}
)
_PRINTF_FIELD = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")
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


class _LimitExceeded(Exception):
    """A render went over a bound; ``reason`` is the :class:`RenderError` reason."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def _too_large(what: str, size: int, limit: int) -> _LimitExceeded:
    return _LimitExceeded(f"{what} is {size:,}, above the limit of {limit:,}", reason="template_too_large")


_BUDGET: ContextVar[list[int]] = ContextVar("template_budget")


def _charge(units: int) -> None:
    """Spend ``units`` of the current render's work budget (set by :meth:`Template.render`)."""
    budget = _BUDGET.get()
    budget[0] -= units
    if budget[0] < 0:
        raise _LimitExceeded(
            f"the render needs more than {MAX_WORK:,} units of work (loop iterations, calls and "
            "characters or items built)",
            reason="template_work_exceeded",
        )


def _text_size(value: Any) -> int:
    """About how long ``str(value)`` is, found without building it (``[big] * 100000`` is a
    short list with a text of gigabytes); raises once it is above :data:`MAX_VALUE_LENGTH`."""
    if isinstance(value, str):
        size = len(value)
    else:
        size, stack = 0, [value]
        while stack and size <= MAX_VALUE_LENGTH:
            item = stack.pop()
            if isinstance(item, str):
                size += len(item) + 2
            elif isinstance(item, Mapping):
                size += 2 + 4 * len(item)
                stack.extend(item.keys())
                stack.extend(item.values())
            elif isinstance(item, list | tuple | set | frozenset):
                size += 2 + 2 * len(item)
                stack.extend(item)
            else:
                size += 8
    if size > MAX_VALUE_LENGTH:
        raise _too_large("the length of the text of a value", size, MAX_VALUE_LENGTH)
    return size


def _text(value: Any) -> str:
    """``str(value)``, refused when it would be too long."""
    _text_size(value)
    return str(value)


def _finalize(value: Any) -> Any:
    """Every ``{{ ... }}`` value before Jinja turns it into text."""
    if value.__class__ is not str:
        _text_size(value)
    return value


def _checked(value: Any) -> Any:
    """``value``, once its size is under :data:`MAX_VALUE_LENGTH` and charged."""
    if isinstance(value, str | list | tuple | dict):
        if len(value) > MAX_VALUE_LENGTH:
            raise _too_large("the length of a value", len(value), MAX_VALUE_LENGTH)
        _charge(len(value))
    elif isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise _too_large("the size in bits of an integer", value.bit_length(), MAX_INT_BITS)
    return value


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
    """The sandbox, with mapping keys before attributes, every operator checked at render
    time, calls charged to the work budget and text-growing string methods refused."""

    intercepted_binops = frozenset({"+", "-", "*", "/", "//", "%", "**"})  # never folded at compile time

    def getattr(self, obj: Any, attribute: str) -> Any:
        if isinstance(obj, Mapping) and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if isinstance(obj, str | bytes) and attr in _GROWING_STR_METHODS:
            return False  # unbounded growth: the filters of the same names are bounded
        return super().is_safe_attribute(obj, attr, value)

    def wrap_str_format(self, value: Any) -> None:
        """No ``str.format``: ``'{:>999999999}'.format(1)`` pads to any width; the bounded
        ``format`` filter does the same job."""
        return None

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        _check_binop(operator, left, right)
        return _checked(super().call_binop(context, operator, left, right))

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        _charge(_CALL_COST)
        return _checked(super().call(__context, __obj, *args, **kwargs))


def _check_binop(operator: str, left: Any, right: Any) -> None:
    """Refuse an operation whose result would be too big, before it is computed."""
    if operator == "**" and isinstance(right, int) and abs(right) > MAX_EXPONENT:
        raise SecurityError(f"the exponent {right} is above the sandbox limit of {MAX_EXPONENT}")
    if operator == "**" and isinstance(left, int) and isinstance(right, int) and right > 0:
        bits = abs(left).bit_length() * right
        if bits > MAX_INT_BITS:
            raise _too_large("the size in bits of an integer", bits, MAX_INT_BITS)
    if operator == "*" and isinstance(left, int) and isinstance(right, int):
        if left.bit_length() + right.bit_length() > MAX_INT_BITS:
            raise _too_large("the size in bits of an integer", left.bit_length() + right.bit_length(), MAX_INT_BITS)
    if operator == "*" and _repeat_length(left, right) > MAX_VALUE_LENGTH:
        raise _too_large("the length of a repetition", _repeat_length(left, right), MAX_VALUE_LENGTH)
    if operator == "+" and isinstance(left, str | list | tuple) and isinstance(right, str | list | tuple):
        if len(left) + len(right) > MAX_VALUE_LENGTH:
            raise _too_large("the length of a concatenation", len(left) + len(right), MAX_VALUE_LENGTH)
    if operator == "%" and isinstance(left, str):
        _check_printf(left)
        _text_size(right)


def _repeat_length(left: Any, right: Any) -> int:
    for seq, times in ((left, right), (right, left)):
        if isinstance(seq, str | list | tuple) and isinstance(times, int):
            return len(seq) * times
    return 0


def _check_printf(template: str) -> None:
    """``'%5d' % x`` pads to its width: refuse widths from arguments and above the limit."""
    for width, precision in _PRINTF_FIELD.findall(template):
        for number in (width, precision):
            if number == "*":
                raise SecurityError("'*' widths in '%' formatting are not allowed")
            if number and int(number) > MAX_VALUE_LENGTH:
                raise _too_large("a '%' format width", int(number), MAX_VALUE_LENGTH)
    _charge(len(template))


def tojson(value: Any, indent: int | None = None) -> str:
    """The ``tojson`` filter: a JSON literal, UTF-8 kept readable, no HTML escaping."""
    if isinstance(value, Undefined):
        value._fail_with_undefined_error()
    if indent is not None and not 0 <= indent <= MAX_JSON_INDENT:
        raise SecurityError(f"a tojson indent of {indent} (at most {MAX_JSON_INDENT})")
    _text_size(value)
    return json.dumps(value, ensure_ascii=False, indent=indent)


def _lines(text: Any) -> int:
    return _text(text).count("\n") + 1


# Filters that turn their value into text: its text must be bounded first.
_STRINGIFYING = frozenset(
    {"capitalize", "center", "e", "escape", "forceescape", "indent", "lower", "pprint", "replace", "string"}
    | {"striptags", "title", "trim", "truncate", "upper", "urlencode", "urlize", "wordcount", "wordwrap"}
)
# Checks run before a filter whose result can be much bigger than its input; their arguments
# are the filter's, by name where the filter usually gets them by name.
_PRECHECKS: dict[str, Callable[..., int]] = {
    "center": lambda value, width=80, *_: max(len(_text(value)), width),
    "indent": lambda s, width=4, *_, **__: (
        len(_text(s)) + _lines(s) * (width if isinstance(width, int) else len(_text(width)))
    ),
    "wordwrap": lambda s, width=79, break_long_words=True, wrapstring=None, *_, **__: (
        len(_text(s)) * (1 + len(_text(wrapstring or "\n")))
    ),
    "replace": lambda s, old, new, count=None: (
        len(_text(s)) + (len(_text(s)) + 1 if old == "" else _text(s).count(_text(old))) * len(_text(new))
    ),
    "batch": lambda value, linecount, *_, **__: linecount,
    "slice": lambda value, slices, *_, **__: slices,
}


def _bounded(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """``func`` as a context filter: Jinja never folds those at compile time, and the render's
    bounds apply to its arguments and result."""
    pass_arg = _PassArg.from_obj(func)
    precheck = _PRECHECKS.get(name)

    @pass_context
    def bounded(context: Context, value: Any, *args: Any, **kwargs: Any) -> Any:
        _charge(1)
        if precheck is not None:
            size = precheck(value, *args, **kwargs)
            if size > MAX_VALUE_LENGTH:
                raise _too_large(f"the length of the result of '{name}'", int(size), MAX_VALUE_LENGTH)
        if name in _STRINGIFYING:
            _text_size(value)
        if name == "format":
            _check_printf(_text(value))
            _text_size([args, kwargs])
        if name == "join":
            value = _join_items(context, value, *args, **kwargs)
            args, kwargs = args[:1], {"d": kwargs["d"]} if "d" in kwargs else {}
        if pass_arg is _PassArg.context:
            return _checked(func(context, value, *args, **kwargs))
        if pass_arg is _PassArg.eval_context:
            return _checked(func(context.eval_ctx, value, *args, **kwargs))
        if pass_arg is _PassArg.environment:
            return _checked(func(context.environment, value, *args, **kwargs))
        return _checked(func(value, *args, **kwargs))

    return bounded


def _join_items(context: Context, value: Iterable[Any], d: str = "", attribute: Any = None) -> list[str]:
    """The texts ``join`` would join, refused when the joined text would be too big."""
    values = list(value)
    if attribute is not None:
        getter = make_attrgetter(context.environment, attribute)
        values = [getter(item) for item in values]
    size = sum(_text_size(item) for item in values) + len(_text(d)) * max(len(values) - 1, 0)
    if size > MAX_VALUE_LENGTH:
        raise _too_large("the length of the joined text", size, MAX_VALUE_LENGTH)
    return [str(item) for item in values]


@pass_context
def _loop(context: Context, iterable: Iterable[Any]) -> Iterator[Any]:
    """What a ``for`` loop iterates: the items of ``iterable``, one unit of work each."""
    for item in iterable:
        _charge(1)
        yield item


@pass_context
def _concat(context: Context, parts: list[Any]) -> str:
    """``a ~ b``: bounded like ``join``."""
    return _checked("".join(_join_items(context, parts)))


def _lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:
    """The ``lipsum`` global, with at most 20 paragraphs of at most 1,000 words."""
    if n > 20 or max > 1_000:
        raise _too_large("lipsum's paragraphs times words", n * max, 20_000)
    return str(generate_lorem_ipsum(n, html, min, max))


class _Bounds(NodeTransformer):
    """Routes loops and ``~`` through the bounded filters."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        node = self.generic_visit(node)
        node.iter = nodes.Filter(node.iter, _LOOP_FILTER, [], [], None, None, lineno=node.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        node = self.generic_visit(node)
        items = nodes.List(node.nodes, lineno=node.lineno)
        return nodes.Filter(items, _CONCAT_FILTER, [], [], None, None, lineno=node.lineno)


def _environment() -> _Environment:
    env = _Environment(
        undefined=_Undefined,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
        optimized=False,  # no constant folding: nothing of a template runs when it is saved
        finalize=_finalize,
    )
    env.filters["tojson"] = tojson
    env.filters = {name: _bounded(name, func) for name, func in env.filters.items()}
    env.filters[_LOOP_FILTER] = _loop
    env.filters[_CONCAT_FILTER] = _concat
    env.globals["lipsum"] = _lipsum
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
        :class:`RenderError`. The text is collected as it is produced and the render stops at
        the first chunk over :data:`MAX_OUTPUT_LENGTH`."""
        token = _BUDGET.set([MAX_WORK])
        chunks = self._compiled.generate(context)
        try:
            return self._collect(chunks)
        except _LimitExceeded as exc:
            raise self._error(exc, exc.reason, f"is too expensive: {exc}") from None
        except _MissingField as exc:
            raise self._missing(exc, context) from None
        except SecurityError as exc:
            raise self._error(exc, "unsafe_template", f"is not allowed: {exc}") from None
        except Exception as exc:  # the template author's code: any error is a render failure
            raise self._error(exc, None, f"failed: {type(exc).__name__}: {exc}") from None
        finally:
            chunks.close()
            _BUDGET.reset(token)

    @staticmethod
    def _collect(chunks: Iterator[str]) -> str:
        parts: list[str] = []
        size = 0
        for chunk in chunks:
            size += len(chunk)
            if size > MAX_OUTPUT_LENGTH:
                raise _too_large("the length of the output so far", size, MAX_OUTPUT_LENGTH)
            parts.append(chunk)
        return "".join(parts)

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
    what is wrong (a syntax error, an unknown filter, ``include``, an unknown variable).
    Nothing of the template is evaluated: loops and ``~`` are routed through the bounded
    filters, and every filter and operator waits for the render."""
    try:
        ast = _ENV.parse(source)
        _check_nodes(ast, name)
        variables = frozenset(meta.find_undeclared_variables(ast)) - set(_ENV.globals)
        _check_variables(variables, name)
        compiled = _ENV.from_string(_Bounds().visit(ast))
    except (ValueError, RecursionError) as exc:  # an integer literal of 5,000 digits, 10,000 nested brackets
        raise TemplateError(f"template {name!r}: {type(exc).__name__}: {str(exc)[:200]}", template=name) from None
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
