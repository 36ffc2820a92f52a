"""A rule document compiled once into what evaluation needs: predicate closures and ms units."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from runtime.config.models import Action, Rule
from runtime.expr import Expr, compile_expr


@dataclass(frozen=True, slots=True)
class CompiledRule:
    name: str
    version: int
    priority: int
    event_type: str
    where: Expr | None
    threshold: int
    window_ms: int
    cooldown_ms: int
    actions: tuple[Action, ...]
    action_topics: tuple[str, ...] = ()
    action_details: tuple[dict[str, Any] | None, ...] = ()  # the notify request of each action

    @property
    def shape(self) -> tuple[Any, ...]:
        """What the window state depends on: state survives a reload when this is unchanged."""
        return (self.event_type, self.where.source if self.where else None, self.threshold, self.window_ms)


def compile_rule(doc: Rule | dict[str, Any], version: int = 0) -> CompiledRule:
    """Compile a validated rule (or its stored JSON form, whose ``version`` is used)."""
    if isinstance(doc, dict):
        version = int(doc.get("version", version))
        doc = Rule.model_validate({k: v for k, v in doc.items() if k not in ("version", "updated_at")})
    when = doc.when
    return CompiledRule(
        name=doc.name,
        version=version,
        priority=doc.priority,
        event_type=when.event,
        where=compile_expr(when.where) if when.where else None,
        threshold=when.count.gte,
        window_ms=when.within,
        cooldown_ms=doc.cooldown,
        actions=tuple(doc.then),
        action_topics=tuple(a.topic for a in doc.then),
        action_details=tuple(a.notify.model_dump(exclude_none=True) if a.notify else None for a in doc.then),
    )
