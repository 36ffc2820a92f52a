"""The ``event-type`` document: an atomic event type of the catalogue and its attributes.
:mod:`runtime.events.catalogue` checks events against it."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from runtime.config.types import Doc


class Attribute(BaseModel):
    """One attribute of an event type's ``data``: its type, whether it must be there, its range."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["string", "int", "float", "bool", "object", "list", "any"] = "any"
    required: bool = False
    enum: list[Any] | None = Field(None, description="Allowed values.")
    min: float | None = Field(None, description="Smallest allowed value (numbers).")
    max: float | None = Field(None, description="Largest allowed value (numbers).")
    description: str = ""

    @model_validator(mode="after")
    def _range_order(self) -> Attribute:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is greater than max {self.max}")
        return self


class EventType(Doc):
    """An atomic event type of the catalogue."""

    kind: Literal["event-type"] = "event-type"
    category: Literal["attribute", "behaviour", "status"] = "behaviour"
    attributes: dict[str, Attribute] = Field(default_factory=dict, description="Fields of 'data'.")
