"""Constrained types shared by config documents."""

from __future__ import annotations

import hashlib
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer

from runtime.durations import format_duration_ms, parse_duration_ms

NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,127}$"
TOPIC_PATTERN = r"^[a-z0-9*][a-z0-9._*-]{0,200}$"

DurationMs = Annotated[
    int,
    BeforeValidator(parse_duration_ms),
    PlainSerializer(format_duration_ms, return_type=str),
]


STORE_FIELDS = ("version", "updated_at")  # what the config store adds to a document


def document_body(record: dict[str, Any]) -> dict[str, Any]:
    """A stored config record as its document: without the fields the store added."""
    return {k: v for k, v in record.items() if k not in STORE_FIELDS}


class Doc(BaseModel):
    """Fields every document has."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=NAME_PATTERN, description="Unique name within the kind.")
    description: str = Field("", max_length=2000, description="Free text for operators.")


def hash_key(key: str) -> str:
    """How source and subscriber keys are stored: SHA-256 hex, never the key itself."""
    return hashlib.sha256(key.encode()).hexdigest()
