"""Constrained types shared by config documents."""

from __future__ import annotations

from typing import Annotated

from pydantic import BeforeValidator, PlainSerializer

from runtime.durations import format_duration_ms, parse_duration_ms

NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,127}$"
TOPIC_PATTERN = r"^[a-z0-9*][a-z0-9._*-]{0,200}$"

DurationMs = Annotated[
    int,
    BeforeValidator(parse_duration_ms),
    PlainSerializer(format_duration_ms, return_type=str),
]
