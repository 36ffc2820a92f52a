"""mkdocs hooks: the reference pages are generated from the code at build time, and what the
pages say about the code is checked against it.

Generated (each marker is an HTML comment in a page, replaced when the site is built):

- ``<!-- esp:config-reference -->``: the config documents' fields, walked from the document
  registry (``runtime.config.documents.KINDS``) through every nested pydantic model: name, type,
  default, constraints and the ``Field(description=...)``.
- ``<!-- esp:settings-reference -->``: the ``ESP_*`` settings from ``EspSettings``.
- ``<!-- esp:api-reference -->``: every route of the FastAPI app's OpenAPI
  (``serve.app.app.openapi()``) with the credential ``serve/access.py`` asks for, its parameters,
  request bodies and responses, then every schema.
- ``<!-- esp:modules runtime/x -->``: a package's modules with the first line of each docstring;
  ``<!-- esp:tree -->`` the source tree; ``<!-- esp:make-targets -->`` the Makefile's targets.
- The CLI reference is rendered by ``mkdocs-click`` from ``runtime.cli.main:main``.

Checked, in every page and in README.md (a miss is a warning, which ``mkdocs build --strict``
turns into a failed build, so the docs cannot silently rot when code moves): code paths in
backticks (``runtime/...``, ``tests/...``, ``configs/...``) and dotted modules (``serve.app``)
exist; cited ``test_...`` functions are defined under tests/; ``<!-- esp:claim PATH REGEX -->``
claims still hold; README links into docs/ resolve. Nothing here fetches anything: the site
builds offline.
"""

from __future__ import annotations

import enum
import glob
import importlib
import json
import logging
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

log = logging.getLogger("mkdocs.plugins.esp")
ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

MARKERS = {
    "<!-- esp:tree -->": lambda: source_tree(),
    "<!-- esp:make-targets -->": lambda: make_targets(),
    "<!-- esp:config-reference -->": lambda: config_reference(),
    "<!-- esp:settings-reference -->": lambda: settings_reference(),
    "<!-- esp:api-reference -->": lambda: api_reference(),
}


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Fill the generated sections, then check the code paths the page names."""
    for marker, render in MARKERS.items():
        if marker in markdown:
            markdown = markdown.replace(marker, _generated(render, page.file.src_uri))
    markdown = _MODULES.sub(lambda m: module_table(m.group(1), page.file.src_uri), markdown)
    check_paths(markdown, page.file.src_uri)
    check_claims(markdown, page.file.src_uri)
    check_test_names(markdown, page.file.src_uri)
    return markdown


def _generated(render: Any, page: str) -> str:
    """A generated section, or an error naming the page and the cause (fails a strict build)."""
    try:
        return render()
    except Exception as exc:  # an import error in the code under documentation, most often
        log.error("%s: could not generate its reference section: %s: %s", page, type(exc).__name__, exc)
        return f"*This section could not be generated: {type(exc).__name__}.*"


def on_post_build(config: Any) -> None:
    """README.md is not part of the site, but it names code too: hold it to the same checks."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    check_paths(readme, "README.md")
    check_claims(readme, "README.md")
    check_test_names(readme, "README.md")
    for link in re.findall(r"\]\((docs/[^)#]+)", readme):
        if not (ROOT / link).exists():
            log.warning("README.md links to `%s`, which does not exist", link)


# --- a package's modules, from their docstrings -------------------------------------------------

_MODULES = re.compile(r"<!-- esp:modules ([\w/]+) -->")


def module_table(package: str, page: str) -> str:
    """One row per module of ``package`` with the first sentence of its docstring."""
    import ast

    folder = ROOT / package
    if not folder.is_dir():
        log.warning("%s lists the modules of `%s`, which does not exist in the repository", page, package)
        return ""
    rows = ["| Module | What it is |", "|---|---|"]
    for path in sorted(folder.glob("*.py")):
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        first = re.sub(r":\w+:`~?", "`", " ".join(doc.split("\n\n")[0].split()))  # :class:`~x` -> `x`
        if path.name == "__init__.py" and not first:
            continue
        rows.append(f"| `{package}/{path.name}` | {_cell(first)} |")
    for path in sorted(folder.glob("*.lua")):
        rows.append(f"| `{package}/{path.name}` | Lua script run atomically in Redis |")
    return "\n".join(rows)


def source_tree() -> str:
    """The packages of runtime/, actors/, serve/ and tests/ with their modules, as a text tree."""
    import ast

    lines = ["```"]
    for top in ("runtime", "actors", "serve", "tests"):
        for folder in sorted(p for p in [ROOT / top, *sorted((ROOT / top).rglob("*"))] if _is_package(p)):
            rel = folder.relative_to(ROOT).as_posix() + "/"
            init = folder / "__init__.py"
            doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))) if init.exists() else None
            summary = " ".join((doc or "").split("\n\n")[0].split())
            summary = re.sub(r":\w+:`~?", "`", summary)
            summary = summary if len(summary) <= 100 else summary[:97].rsplit(" ", 1)[0] + " ..."
            lines.append(f"{rel:<24} {summary}".rstrip())
            names = sorted(p.name for p in folder.iterdir() if p.suffix in (".py", ".lua") and p.name != "__init__.py")
            for chunk in range(0, len(names), 5):
                lines.append("    " + "  ".join(names[chunk : chunk + 5]))
    lines.append("```")
    return "\n".join(lines)


def _is_package(path: Path) -> bool:
    return path.is_dir() and "__pycache__" not in path.parts and any(path.glob("*.py"))


def make_targets() -> str:
    """The Makefile's documented targets, as `make help` lists them."""
    rows = ["| Target | What it does |", "|---|---|"]
    for line in (ROOT / "Makefile").read_text(encoding="utf-8").splitlines():
        match = re.match(r"^([a-z-]+):.*## (.*)$", line)
        if match:
            rows.append(f"| `make {match.group(1)}` | {_cell(match.group(2))} |")
    return "\n".join(rows)


# --- code paths named in the pages -------------------------------------------------------------

_PATH = re.compile(r"`((?:runtime|actors|serve|tests|configs)/[A-Za-z0-9_./*-]*)`")
_MODULE = re.compile(r"`((?:runtime|actors|serve)(?:\.[A-Za-z_][A-Za-z0-9_]*)+)(?::[A-Za-z_]\w*)?`")


def check_paths(markdown: str, page: str) -> None:
    """Warn about every `runtime/...`-style path or `runtime.x.y` module the page names that is gone."""
    for path in set(_PATH.findall(markdown)):
        if path.endswith("..."):  # `runtime/...`: a family of paths, not one
            continue
        if not glob.glob(str(ROOT / path.rstrip("/"))):
            log.warning("%s names `%s`, which does not exist in the repository", page, path)
    for dotted in set(_MODULE.findall(markdown)):
        if not _module_exists(dotted):
            log.warning("%s names the module `%s`, which does not exist in the repository", page, dotted)


_CLAIM = re.compile(r"^<!-- esp:claim (\S+) (.+?) -->$", re.M)  # on a line of its own


def check_claims(markdown: str, page: str) -> None:
    """``<!-- esp:claim PATH REGEX -->`` next to a sentence about the code: PATH must match REGEX.

    When the code changes what the sentence says (say, the policy stage leaves the dispatcher
    actor), the build fails and names the page, instead of the page going on saying it.
    """
    for path, pattern in _CLAIM.findall(markdown):
        target = ROOT / path
        text = target.read_text(encoding="utf-8") if target.is_file() else ""
        if not re.search(pattern, text):
            log.warning("%s: the text next to its claim '%s in %s' is out of date", page, pattern, path)


_TEST = re.compile(r"`(test_[a-z0-9_]+)`")
_TEST_NAMES: set[str] = set()


def check_test_names(markdown: str, page: str) -> None:
    """Every `test_...` function a page names must still be defined somewhere under tests/."""
    if not _TEST_NAMES:
        for path in (ROOT / "tests").rglob("test_*.py"):
            _TEST_NAMES.update(re.findall(r"def (test_\w+)\(", path.read_text(encoding="utf-8")))
    for name in set(_TEST.findall(markdown)) - _TEST_NAMES:
        log.warning("%s names the test `%s`, which no file under tests/ defines", page, name)


def _module_exists(dotted: str) -> bool:
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):  # a trailing attribute (`runtime.errors.EspError`) is allowed
        base = ROOT.joinpath(*parts[:end])
        if base.with_suffix(".py").exists() or (base / "__init__.py").exists() or base.is_dir():
            return end >= len(parts) - 1
    return False


# --- pydantic models -> tables -----------------------------------------------------------------


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ").strip()


def _first_paragraph(doc: str | None) -> str:
    if not doc:
        return ""
    return " ".join(doc.strip().split("\n\n")[0].split())


def _anchor(model: type) -> str:
    return "model-" + re.sub(r"[^a-z0-9]+", "-", model.__name__.lower()).strip("-")


class ModelRenderer:
    """Renders a model and, after it, every model its fields refer to (each once, linked)."""

    def __init__(self) -> None:
        self.done: set[type] = set()
        self.queue: list[type] = []

    def type_name(self, tp: Any) -> str:
        origin = typing.get_origin(tp)
        args = typing.get_args(tp)
        if origin is typing.Annotated:
            return self.type_name(args[0])
        if origin in (typing.Union, types.UnionType):
            return " \\| ".join(self.type_name(a) for a in args)
        if origin is typing.Literal:
            return " \\| ".join(f"`{a!r}`" for a in args)
        if origin in (list, tuple, set, frozenset):
            inner = ", ".join(self.type_name(a) for a in args if a is not Ellipsis)
            return f"{origin.__name__}[{inner}]"
        if origin is dict:
            return f"dict[{', '.join(self.type_name(a) for a in args)}]"
        if tp is type(None):
            return "null"
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            if tp not in self.done and tp not in self.queue:
                self.queue.append(tp)
            return f"[{tp.__name__}](#{_anchor(tp)})"
        if isinstance(tp, type) and issubclass(tp, enum.Enum):
            return " \\| ".join(f"`{m.value!r}`" for m in tp)
        if isinstance(tp, typing.TypeAliasType if hasattr(typing, "TypeAliasType") else ()):
            return self.type_name(tp.__value__)
        return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")

    @staticmethod
    def default(field: FieldInfo) -> str:
        if field.is_required():
            return "required"
        if field.default_factory is not None:
            try:
                value = field.default_factory()  # type: ignore[call-arg]
            except TypeError:
                return "computed"
        else:
            value = field.default
        if value is PydanticUndefined:
            return "required"
        if isinstance(value, BaseModel):
            value = value.model_dump(mode="json")
        if isinstance(value, enum.Enum):
            value = value.value
        text = str(value) if isinstance(value, Path) else json.dumps(value, default=str, ensure_ascii=False)
        return f"`{text}`" if len(text) <= 60 else "see description"  # a pipe in a code span is no cell boundary

    @staticmethod
    def constraints(field: FieldInfo) -> str:
        names = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<", "min_length": "min length", "max_length": "max length"}
        found = []
        for meta in field.metadata:
            for attr, label in names.items():
                value = getattr(meta, attr, None)
                if value is not None:
                    found.append(f"{label} {value}")
            pattern = getattr(meta, "pattern", None)
            if pattern:
                found.append(f"pattern `{pattern}`")
        return "; ".join(found)

    def table(self, model: type[BaseModel]) -> list[str]:
        rows = ["| Field | Type | Default | Description |", "|---|---|---|---|"]
        for name, field in model.model_fields.items():
            if field.exclude:
                continue
            shown = field.alias or name
            description = field.description or ""
            limits = self.constraints(field)
            if limits:
                description = f"{description} ({limits})" if description else limits
            rows.append(
                f"| `{shown}` | {self.type_name(field.annotation)} | {self.default(field)} | {_cell(description)} |"
            )
        return rows

    def section(self, model: type[BaseModel], level: int, title: str | None = None) -> list[str]:
        self.done.add(model)
        heading = title or f"`{model.__name__}`"
        lines = [f"{'#' * level} {heading} {{#{_anchor(model)}}}", ""]
        about = _first_paragraph(model.__doc__)
        if about and not about.startswith("!!! abstract"):
            lines += [about, ""]
        lines += [f"Defined in `{model.__module__}`.", ""]
        return lines + self.table(model) + [""]

    def drain(self, level: int) -> list[str]:
        lines: list[str] = []
        while self.queue:
            model = self.queue.pop(0)
            if model not in self.done:
                lines += self.section(model, level)
        return lines


def _import(name: str) -> Any:
    """Import ``name`` and make sure it is this tree's code, not another checkout's (an editable
    install of ESP elsewhere would otherwise document that one)."""
    module = importlib.import_module(name)
    origin = Path(getattr(module, "__file__", "") or "").resolve()
    if ROOT not in origin.parents:
        log.warning("`%s` was imported from %s, not from this tree (%s)", name, origin, ROOT)
    return module


def _kinds() -> dict[str, type[BaseModel]]:
    for where in ("runtime.config.documents", "runtime.config.models"):
        try:
            return dict(_import(where).KINDS)
        except (ImportError, AttributeError):
            continue
    raise RuntimeError("no document registry: expected KINDS in runtime.config.documents")


def config_reference() -> str:
    renderer = ModelRenderer()
    kinds = _kinds()
    lines = ["| Kind | Model |", "|---|---|"]
    lines += [f"| `{kind}` | [{model.__name__}](#{_anchor(model)}) |" for kind, model in kinds.items()]
    lines.append("")
    for kind, model in kinds.items():
        lines += renderer.section(model, 2, f"`kind: {kind}`")
    lines += ["## Nested objects", ""]
    lines += renderer.drain(3)
    return "\n".join(lines)


def settings_reference() -> str:
    EspSettings = _import("runtime.settings").EspSettings
    prefix = EspSettings.model_config.get("env_prefix", "ESP_")
    renderer = ModelRenderer()
    rows = ["| Env var | Type | Default | Description |", "|---|---|---|---|"]
    for name, field in EspSettings.model_fields.items():
        description = field.description or ""
        limits = renderer.constraints(field)
        if limits:
            description = f"{description} ({limits})"
        rows.append(
            f"| `{prefix}{name.upper()}` | {renderer.type_name(field.annotation)} | {renderer.default(field)} "
            f"| {_cell(description)} |"
        )
    return "\n".join(rows)


# --- OpenAPI -> pages --------------------------------------------------------------------------


class OpenApiRenderer:
    """Every route with its parameters, request body and responses; then every schema."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.schemas: dict[str, dict[str, Any]] = dict(spec.get("components", {}).get("schemas", {}))
        self.access: dict[tuple[str, str], str] = _access_table()

    @staticmethod
    def anchor(name: str) -> str:
        return "schema-" + re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")

    def type_of(self, schema: dict[str, Any]) -> str:
        if "$ref" in schema:
            name = schema["$ref"].rsplit("/", 1)[-1]
            return f"[{name}](#{self.anchor(name)})"
        for key in ("anyOf", "oneOf", "allOf"):
            if key in schema:
                return " \\| ".join(self.type_of(s) for s in schema[key])
        if "enum" in schema:
            return " \\| ".join(f"`{v!r}`" for v in schema["enum"])
        if "const" in schema:
            return f"`{schema['const']!r}`"
        kind = schema.get("type")
        if kind == "array":
            return f"array[{self.type_of(schema.get('items', {}))}]"
        if kind == "object" and schema.get("properties") and schema.get("title"):
            title = schema["title"]
            self.schemas.setdefault(title, schema)  # an inline model: listed with the others
            return f"[{title}](#{self.anchor(title)})"
        if kind == "object":
            extra = schema.get("additionalProperties")
            return f"object[string, {self.type_of(extra)}]" if isinstance(extra, dict) and extra else "object"
        if kind == "null":
            return "null"
        return kind or "any"

    @staticmethod
    def limits(schema: dict[str, Any]) -> str:
        names = {"minimum": "≥", "maximum": "≤", "exclusiveMinimum": ">", "exclusiveMaximum": "<",
                 "minLength": "min length", "maxLength": "max length", "minItems": "min items",
                 "maxItems": "max items"}  # fmt: skip
        found = [f"{label} {schema[key]}" for key, label in names.items() if key in schema]
        if "pattern" in schema:
            found.append(f"pattern `{schema['pattern']}`")
        return "; ".join(found)

    def parameters(self, op: dict[str, Any]) -> list[str]:
        params = op.get("parameters", [])
        if not params:
            return []
        rows = ["| Parameter | In | Type | Required | Default | Notes |", "|---|---|---|---|---|---|"]
        for p in params:
            schema = p.get("schema", {})
            default = f"`{json.dumps(schema['default'])}`" if "default" in schema else ""
            notes = "; ".join(x for x in (p.get("description", ""), self.limits(schema)) if x)
            rows.append(
                f"| `{p['name']}` | {p['in']} | {self.type_of(schema)} | {'yes' if p.get('required') else 'no'} "
                f"| {default} | {_cell(notes)} |"
            )
        return [*rows, ""]

    def body(self, op: dict[str, Any]) -> list[str]:
        request = op.get("requestBody")
        if not request:
            return []
        lines = [f"**Request body**{' (required)' if request.get('required') else ''}:", ""]
        for media, content in request.get("content", {}).items():
            lines.append(f"- `{media}`: {self.type_of(content.get('schema', {}))}")
        return [*lines, ""]

    def responses(self, op: dict[str, Any]) -> list[str]:
        rows = ["| Status | Meaning | Body |", "|---|---|---|"]
        errors: dict[str, list[str]] = {}
        for status, answer in op.get("responses", {}).items():
            content = answer.get("content", {})
            body = "; ".join(f"`{m}` {self.type_of(c.get('schema', {}))}" for m, c in content.items()) or "none"
            if status.startswith(("4", "5")):
                errors.setdefault(body, []).append(status)
                continue
            rows.append(f"| {status} | {_cell(answer.get('description', ''))} | {body} |")
        for body, statuses in errors.items():
            rows.append(f"| {', '.join(statuses)} | errors (see [Errors](#errors)) | {body} |")
        return [*rows, ""]

    def routes(self) -> list[str]:
        lines: list[str] = []
        for path, ops in self.spec.get("paths", {}).items():
            for method, op in ops.items():
                slug = re.sub(r"[^a-z0-9]+", "-", f"{method} {path}".lower()).strip("-")
                lines += [f"### `{method.upper()} {path}` {{#{slug}}}", ""]
                if op.get("summary"):
                    lines += [f"**{op['summary']}.**", ""]
                lines += [f"Credential: {_credential(self.access.get((method.upper(), path)))}.", ""]
                if op.get("description"):
                    lines += [op["description"].strip(), ""]
                lines += self.parameters(op) + self.body(op) + self.responses(op)
        return lines

    def schema_sections(self) -> list[str]:
        lines: list[str] = []
        rendered: set[str] = set()
        while len(rendered) < len(self.schemas):  # rendering may discover inline models
            for name in sorted(set(self.schemas) - rendered):
                rendered.add(name)
                schema = self.schemas[name]
                lines += [f"### `{name}` {{#{self.anchor(name)}}}", ""]
                if schema.get("description"):
                    lines += [" ".join(schema["description"].split()), ""]
                props = schema.get("properties", {})
                if not props:
                    lines += [f"Type: {self.type_of({k: v for k, v in schema.items() if k != 'title'})}", ""]
                    continue
                required = set(schema.get("required", []))
                lines += ["| Field | Type | Required | Notes |", "|---|---|---|---|"]
                for prop, sub in props.items():
                    notes = "; ".join(x for x in (sub.get("description", ""), self.limits(sub)) if x)
                    if "default" in sub and (not isinstance(sub["default"], (dict, list)) or not sub["default"]):
                        default = f"default `{json.dumps(sub['default'])}`"
                        notes = f"{notes}; {default}" if notes else default
                    lines.append(
                        f"| `{prop}` | {self.type_of(sub)} | {'yes' if prop in required else 'no'} | {_cell(notes)} |"
                    )
                lines.append("")
        return lines


def _access_table() -> dict[tuple[str, str], str]:
    try:
        return dict(importlib.import_module("serve.access").ACCESS)
    except (ImportError, AttributeError):
        return {}


_LEVELS = {
    "public": "none",
    "source": "a source key (`Authorization: Bearer <source key>`)",
    "viewer": "an operator token, role `viewer` or above",
    "operator": "an operator token, role `operator` or above",
    "admin": "an operator token, role `admin`",
}


def _credential(level: str | None) -> str:
    """The access level of ``serve/access.py`` in words."""
    if level is None:
        log.warning("a route of the OpenAPI has no access level in serve/access.py")
        return "not listed in `serve/access.py`, so refused to everyone"
    if level.startswith("subscriber:"):
        role = level.split(":", 1)[1]
        return f"the subscription's own subscriber token, or an operator token, role `{role}` or above"
    return _LEVELS.get(level, f"`{level}`")


def api_reference() -> str:
    spec = _import("serve.app").app.openapi()
    renderer = OpenApiRenderer(spec)
    info = spec.get("info", {})
    operations = sum(len(v) for v in spec.get("paths", {}).values())
    title = f"*{info.get('title', 'ESP')}* {info.get('version', '')}"
    head = [f"Generated from the OpenAPI {spec.get('openapi')} of {title}: {operations} operations.", ""]
    routes = ["## Routes", "", *renderer.routes()]
    schemas = ["## Schemas", "", *renderer.schema_sections()]
    return "\n".join(head + routes + schemas)
