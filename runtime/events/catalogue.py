"""The atomic event catalogue at work: each standardised event's ``data`` checked against its
event type's attribute schema (required, type, enum, range), compiled once per config version."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from runtime.config.types import document_body
from runtime.events.models import Attribute, EventType

Check = Callable[[dict[str, Any]], str | None]

_TYPES: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "bool": lambda v: isinstance(v, bool),
    "object": lambda v: isinstance(v, dict),
    "list": lambda v: isinstance(v, list),
    "any": lambda v: True,
}


def _attribute_check(name: str, spec: Attribute) -> Callable[[dict[str, Any]], str | None]:
    is_type = _TYPES[spec.type]
    allowed = set(spec.enum) if spec.enum is not None else None

    def check(data: dict[str, Any]) -> str | None:
        if name not in data or data[name] is None:
            return f"required attribute 'data.{name}' is missing" if spec.required else None
        value = data[name]
        if not is_type(value):
            return f"attribute 'data.{name}' must be {spec.type}, got {value!r:.60}"
        if allowed is not None and value not in allowed:
            return f"attribute 'data.{name}' must be one of {sorted(map(str, allowed))}, got {value!r:.60}"
        if spec.min is not None and value < spec.min:
            return f"attribute 'data.{name}' must be >= {spec.min}, got {value!r}"
        if spec.max is not None and value > spec.max:
            return f"attribute 'data.{name}' must be <= {spec.max}, got {value!r}"
        return None

    return check


def compile_event_type(doc: EventType) -> Check:
    """One function: the first problem with an event's ``data``, or None."""
    checks = [_attribute_check(name, spec) for name, spec in doc.attributes.items()]

    def check(data: dict[str, Any]) -> str | None:
        for attribute_check in checks:
            problem = attribute_check(data)
            if problem is not None:
                return f"event type '{doc.name}': {problem}"
        return None

    return check


class Catalogue:
    """The event types in force; ``check`` answers (reason, message) or None."""

    def __init__(self, docs: list[dict[str, Any]]) -> None:
        self._checks: dict[str, Check] = {}
        for raw in docs:
            doc = EventType.model_validate(document_body(raw))
            self._checks[doc.name] = compile_event_type(doc)

    def __contains__(self, event_type: str) -> bool:
        return event_type in self._checks

    def check(self, event_type: str, data: dict[str, Any], *, unknown: str) -> tuple[str, str] | None:
        check = self._checks.get(event_type)
        if check is None:
            if unknown == "quarantine":
                return "unknown_type", f"event type {event_type!r} is not in the catalogue"
            return None
        problem = check(data)
        return ("schema_violation", problem) if problem else None
