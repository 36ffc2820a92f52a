"""Config documents of delivery: subscriptions (pull, SSE, webhook) and channels (connectors to
the operator's message gateways). Both deliver over HTTP with the same endpoint settings."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from runtime.config.types import NAME_PATTERN, TOPIC_PATTERN, Doc, DurationMs, hash_key

REDACTED = "(redacted)"
FIELD_PATH = r"^[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*$"


class Endpoint(BaseModel):
    """Where and how to call a receiver: URL, signing secrets, timeout, retries, rate, isolation."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str = Field(max_length=2000, description="http(s) URL the events are POSTed to.")
    secrets: list[str] = Field(
        default_factory=list,
        max_length=3,
        description="Standard Webhooks signing secrets (whsec_...). Two during a rotation: both sign.",
    )
    headers: dict[str, str] = Field(default_factory=dict, description="Extra headers, e.g. the receiver's auth.")
    timeout: DurationMs = Field(10_000, description="One attempt's time limit.")
    retry: list[DurationMs] | None = Field(
        None, min_length=1, max_length=20, description="Waits between attempts; the default is 5s 30s 2m 10m 1h 5h 10h."
    )
    rate_limit_per_s: float | None = Field(None, gt=0, le=100_000, description="Requests per second to this endpoint.")
    max_in_flight: int = Field(4, ge=1, le=64, description="Concurrent requests to this endpoint.")
    batch: int = Field(1, ge=1, le=1000, description="Events per request; above 1, a CloudEvents batch.")
    internal: bool = Field(
        False, description="Allow loopback and private addresses (a receiver inside the operator's network)."
    )

    @field_validator("secrets")
    @classmethod
    def _secrets(cls, secrets: list[str]) -> list[str]:
        from runtime.subscriptions.webhooks import valid_secret

        bad = [i for i, s in enumerate(secrets) if not valid_secret(s)]
        if bad:
            raise ValueError(f"secrets {bad} are not of the form whsec_<base64 of 24 to 64 bytes>")
        return secrets

    @field_validator("headers")
    @classmethod
    def _headers(cls, headers: dict[str, str]) -> dict[str, str]:
        for name, value in headers.items():
            if not re.match(r"^[A-Za-z0-9-]{1,64}$", name) or name.lower().startswith("webhook-"):
                raise ValueError(f"header {name!r} is not allowed (letters, digits, '-'; webhook-* are ESP's)")
            if any((ord(c) < 32 and c != "\t") or ord(c) == 127 for c in value):
                raise ValueError(f"header {name!r} holds a control character (a line break would end the header)")
        return headers

    @model_validator(mode="after")
    def _safe_url(self, info: ValidationInfo) -> Endpoint:
        from runtime.subscriptions.webhooks import check_url

        if info.context and info.context.get("stored"):  # checked when saved; the dispatcher checks before calls
            return self
        reason = check_url(self.url, internal=self.internal)
        if reason is not None:
            private = reason.endswith("_address")
            hint = " (set internal: true for a receiver inside your network)" if private and not self.internal else ""
            raise ValueError(f"url {self.url!r} is refused: {reason}{hint}")
        return self


class Subscription(Doc):
    """A consumer of topics (``atomic.<type>``, ``business.<name>``, ``notifications.<channel>``;
    ``*`` matches any run of characters), read by pull, server-sent events or webhook."""

    kind: Literal["subscription"] = "subscription"
    owner: str | None = Field(None, pattern=NAME_PATTERN, description="The subscriber (a team or system).")
    token: str | None = Field(
        None, min_length=16, description="The subscriber's token, accepted on PUT only; stored as token_sha256."
    )
    token_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$", description="Hash of the token.")
    topics: list[str] = Field(min_length=1, max_length=100)
    filter: str | None = Field(None, max_length=2000, description="Only events for which this is true (CEL).")
    fields: list[str] | None = Field(
        None, min_length=1, max_length=100, description="Projection: only these fields, e.g. [id, type, data.amount]."
    )
    mode: Literal["pull", "sse", "webhook"] = "pull"
    webhook: Endpoint | None = Field(None, description="The receiver (mode webhook).")
    enabled: bool = Field(True, description="A disabled webhook keeps its events until it is enabled again.")

    @field_validator("topics")
    @classmethod
    def _topic_shape(cls, topics: list[str]) -> list[str]:
        for topic in topics:
            if not re.match(TOPIC_PATTERN, topic):
                raise ValueError(f"topic {topic!r} is not of the form 'atomic.<type>', 'business.<name>' or a pattern")
        return topics

    @field_validator("fields")
    @classmethod
    def _field_paths(cls, fields: list[str] | None) -> list[str] | None:
        for path in fields or []:
            if not re.match(FIELD_PATH, path):
                raise ValueError(f"field {path!r} is not a dotted path like data.amount")
        return fields

    @field_validator("filter")
    @classmethod
    def _filter_compiles(cls, source: str | None) -> str | None:
        if source is not None:
            from runtime.expr import compile_expr

            compile_expr(source)
        return source

    @model_validator(mode="after")
    def _endpoint(self) -> Subscription:
        if (self.mode == "webhook") != (self.webhook is not None):
            raise ValueError("a webhook subscription needs 'webhook' (url, ...), and only it takes one")
        return self

    def stored(self) -> Subscription:
        """The form kept in the store: the token replaced by its hash."""
        if self.token is None:
            return self
        return self.model_copy(update={"token": None, "token_sha256": hash_key(self.token)})


CHANNEL_TYPES = ("sms", "mms", "app_push", "wechat", "email", "task", "webhook")


class Channel(Doc):
    """A connector to an operator gateway: notification requests on ``notifications.<name>``
    become HTTP calls, their body rendered from ``payload`` with the message ``templates``."""

    kind: Literal["channel"] = "channel"
    type: Literal["sms", "mms", "app_push", "wechat", "email", "task", "webhook"] = Field(
        description="What the gateway delivers."
    )
    endpoint: Endpoint = Field(description="The gateway.")
    templates: dict[str, str] = Field(
        default_factory=dict, description="Message templates by name (a notify action's 'template')."
    )
    payload: str | None = Field(
        None, max_length=20_000, description="JSON body template; the default sends to, message, campaign, ids."
    )
    enabled: bool = True

    @field_validator("templates")
    @classmethod
    def _templates_compile(cls, templates: dict[str, str]) -> dict[str, str]:
        from runtime.subscriptions.templates import compile_template

        for name, source in templates.items():
            if not re.match(NAME_PATTERN, name):
                raise ValueError(f"template name {name!r} does not match {NAME_PATTERN}")
            compile_template(source, name=name)
        return templates

    @field_validator("payload")
    @classmethod
    def _payload_compiles(cls, source: str | None) -> str | None:
        if source is not None:
            from runtime.subscriptions.templates import compile_template

            compile_template(source, name="payload")
        return source

    @property
    def topic(self) -> str:
        return f"notifications.{self.name}"


def public_view(kind: str, record: dict[str, Any]) -> dict[str, Any]:
    """A stored document as the config API shows it: signing secrets redacted."""
    key = {"subscription": "webhook", "channel": "endpoint"}.get(kind)
    endpoint = record.get(key) if key else None
    if not isinstance(endpoint, dict) or not (endpoint.get("secrets") or endpoint.get("headers")):
        return record
    shown = {**endpoint, "secrets": [REDACTED for _ in endpoint.get("secrets", [])]}
    shown["headers"] = dict.fromkeys(endpoint.get("headers", {}), REDACTED)  # may hold the receiver's credentials
    return {**record, key: shown}
