"""Typed request and response bodies of the API (they are what the OpenAPI at /docs shows)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from runtime.tokens import NAME_PATTERN as TOKEN_NAME_PATTERN


class TokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=TOKEN_NAME_PATTERN, description="Unique among live tokens; recorded in the audit trail.")
    role: Literal["viewer", "operator", "admin"]
    expires_in_s: float | None = Field(None, gt=0, le=10 * 365 * 86400, description="Unset: never expires.")
