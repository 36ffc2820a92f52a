"""The document registry (:data:`KINDS`: kind -> model) and turning YAML/JSON into validated
documents, with errors that name the document, the field path, what was expected and what
arrived. The models live with their concepts; this module only knows them by kind."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from runtime.config.types import Doc
from runtime.errors import ConfigError, ExpressionError, NotFound
from runtime.events.limits import locate
from runtime.events.models import EventType
from runtime.policy.models import Campaign, Policy, Segment
from runtime.rules.models import Rule, leaves
from runtime.sources.models import Source
from runtime.subscriptions.models import Channel, Subscription

KINDS: dict[str, type[Doc]] = {
    "source": Source,
    "event-type": EventType,
    "rule": Rule,
    "subscription": Subscription,
    "channel": Channel,
    "policy": Policy,
    "campaign": Campaign,
    "segment": Segment,
}


def _describe(kind: str, name: object) -> str:
    return f"{kind} {name!r}" if name else f"{kind} document"


def validation_errors(exc: ValidationError) -> list[dict[str, object]]:
    """pydantic's errors reshaped: dotted path, what was expected, what arrived."""
    errors = []
    for err in exc.errors(include_url=False):
        path = ".".join(str(p) for p in err["loc"] if not str(p).startswith("_"))
        got = err.get("input")
        errors.append({"path": path, "expected": err["msg"], "got": got if _jsonable(got) else repr(got)})
    return errors


def _jsonable(value: object) -> bool:
    return value is None or isinstance(value, (str, int, float, bool, list, dict))


def parse_document(raw: Any, *, kind: str | None = None, name: str | None = None) -> Doc:
    """Validate one document. ``kind``/``name`` from a URL fill in or must match the body."""
    if not isinstance(raw, dict):
        raise ConfigError(f"a config document must be a mapping, got {type(raw).__name__}")
    problem = locate(raw)
    if problem is not None:  # before pydantic: it would store a NaN or a lone surrogate that no GET could answer
        reason, where, what = problem
        path = where.lstrip(".") or "(document)"
        raise ConfigError(
            f"config document: field '{path}' {what} ({reason})",  # names nothing from it: they may be unencodable
            errors=[{"path": path, "expected": reason, "got": None}],
        )
    body = dict(raw)
    doc_kind = body.get("kind", kind)
    if kind is not None and doc_kind != kind:
        raise ConfigError(f"document kind {doc_kind!r} does not match the URL's kind {kind!r}")
    if name is not None:
        if body.setdefault("name", name) != name:
            raise ConfigError(f"document name {body['name']!r} does not match the URL's name {name!r}")
    if doc_kind is None:
        raise ConfigError(
            "a config document needs a 'kind'",
            errors=[{"path": "kind", "expected": f"one of {sorted(KINDS)}", "got": None}],
        )
    model = KINDS.get(str(doc_kind))
    if model is None:
        raise NotFound(f"unknown config kind {doc_kind!r}; expected one of {sorted(KINDS)}")
    body["kind"] = doc_kind
    try:
        doc = model.model_validate(body)
    except ValidationError as exc:
        errors = validation_errors(exc)
        first = errors[0]
        raise ConfigError(
            f"{_describe(str(doc_kind), body.get('name'))}: field '{first['path']}': {first['expected']} "
            f"(got {first['got']!r})",
            errors=errors,
        ) from None
    check_expressions(doc)
    return doc


def check_expressions(doc: Doc) -> None:
    """Compile every expression (and a source's mapping) now, so a bad one is refused at apply
    time with the document, the field and the position."""
    from runtime.expr import compile_expr

    expressions: list[tuple[str, str]] = []
    if isinstance(doc, Rule):
        expressions += [(f"{path}.where", leaf.where) for path, leaf in leaves(doc.when) if leaf.where is not None]
        if doc.audience is not None and doc.audience.where is not None:
            expressions.append(("audience.where", doc.audience.where))
    if isinstance(doc, Source):
        if doc.filter is not None:
            expressions.append(("filter", doc.filter))
        if doc.mapping is not None:
            from runtime.sources import compile_mapping

            compile_mapping(doc.mapping, source_name=doc.name)
    for path, source in expressions:
        try:
            compile_expr(source)
        except ExpressionError as exc:
            raise type(exc)(  # the same class keeps the reason, e.g. invalid_regex
                f"{_describe(str(doc.kind), doc.name)} field '{path}': {exc.message}",  # type: ignore[attr-defined]
                expression=exc.expression,
                position=exc.position,
            ) from None


def check_fields_against_type(rule: Rule, event_types: dict[str, dict[str, Any] | None]) -> None:
    """A rule's ``where`` may only read ``data`` attributes its event type declares (when the
    type is in the catalogue and declares any). ``event_types`` maps each type the rule uses to
    its stored document (or None)."""
    from runtime.expr import compile_expr

    for path, leaf in leaves(rule.when):
        event_type = event_types.get(leaf.event)
        if leaf.where is None or not event_type or not event_type.get("attributes"):
            continue
        declared = set(event_type["attributes"])
        for field in sorted(compile_expr(leaf.where).fields):
            head, _, rest = field.partition(".")
            name = rest.split(".")[0]
            if head == "data" and name and name not in declared:
                raise ConfigError(
                    f"rule {rule.name!r} field '{path}.where': field 'data.{name}' is not in event type "
                    f"{leaf.event!r} (fields: {', '.join(sorted(declared))})",
                    errors=[
                        {"path": f"{path}.where", "expected": f"one of data.{sorted(declared)}", "got": f"data.{name}"}
                    ],
                )


def load_yaml_documents(path: Path) -> Iterator[tuple[str, Any]]:
    """(origin, raw document) for every YAML document in a file or a directory tree."""
    files = sorted(p for p in path.rglob("*") if p.suffix in {".yaml", ".yml"}) if path.is_dir() else [path]
    if not files:
        raise ConfigError(f"no .yaml or .yml files under {path}")
    for file in files:
        try:
            docs = list(yaml.safe_load_all(file.read_text()))
        except yaml.YAMLError as exc:
            raise ConfigError(f"{file}: not valid YAML: {exc}") from None
        for index, raw in enumerate(docs):
            if raw is not None:
                yield f"{file}#{index}", raw
