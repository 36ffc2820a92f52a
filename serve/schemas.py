"""Typed request and response bodies of the API (they are what the OpenAPI at /docs shows).

Batch and open bodies (opt-outs, identities, consents, campaign contacts, acks, replays) are
*described* here but validated by ``runtime``: their Python type stays a plain list or object
and :class:`WithJsonSchema` gives the OpenAPI the precise shape, so a bad item still gets the
runtime's answer naming its index (``invalid_item``, ``invalid_optouts``, ...) rather than a
generic 422. Response models allow extra fields where the payload is open, and routes answer
with ``response_model_exclude_unset`` so optional fields absent from an answer stay absent.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Body
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, WithJsonSchema

from runtime.config.types import NAME_PATTERN
from runtime.security.tokens import NAME_PATTERN as TOKEN_NAME_PATTERN


class Open(BaseModel):
    """A response whose listed fields are always there; more may be added."""

    model_config = ConfigDict(extra="allow")


# --- errors -----------------------------------------------------------------------------------


class ErrorAnswer(Open):
    """Every refusal: a machine-readable ``reason`` and a human ``message``; config problems add
    ``errors`` (one per problem, with its path), FastAPI's own request checks add ``detail``."""

    reason: str = Field(examples=["not_found"])
    message: str


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorAnswer, "description": description}


ERRORS: dict[int | str, dict[str, Any]] = {
    400: _error("Malformed input (reason names the problem, e.g. invalid_item with its index)"),
    401: _error("No or an invalid token (missing_token, invalid_token, token_revoked, ...)"),
    403: _error("The token's role is too low (insufficient_role)"),
    404: _error("No such document, subscription, customer link or entry (not_found)"),
    409: _error("Conflicts with the current state (conflict, wrong_mode, auth_disabled)"),
    413: _error("Body over the route's limit (body_too_large)"),
    422: _error("Body or parameters fail validation (invalid_config, invalid_expression, invalid_request)"),
    429: _error("Too many waiting subscribers or a backlog over its bound; retry after Retry-After"),
    503: _error("The event store is unavailable (store_unavailable); retry after Retry-After"),
}


# --- request bodies ---------------------------------------------------------------------------


class OptOut(BaseModel):
    customer: str = Field(min_length=1)
    channel: str = Field("*", description="A channel name, or '*' for every channel.")


class IdentityLinkBody(BaseModel):
    """Mirrors ``runtime.events.identity.IdentityLink``: valid in ``[valid_from_ms, valid_to_ms)``."""

    model_config = ConfigDict(extra="forbid")

    customer: str
    phone: str | None = None
    imei: str | None = None
    valid_from_ms: int | None = None
    valid_to_ms: int | None = None


class ConsentBody(BaseModel):
    """Mirrors ``runtime.events.consent.ConsentRecord``: ``purpose`` unset is the global flag."""

    model_config = ConfigDict(extra="forbid")

    customer: str
    opted_in: bool
    purpose: str | None = None
    at_ms: int | None = None


class Contact(BaseModel):
    customer: str = Field(min_length=1)
    channel: str = Field(pattern=NAME_PATTERN)
    template: str = Field(pattern=NAME_PATTERN)
    priority: int = Field(50, ge=0, le=100)


class CampaignContacts(BaseModel):
    run: str = Field(min_length=1, max_length=128, description="Names this run: ids are deterministic per run.")
    contacts: list[Contact]


class AckRequest(BaseModel):
    ack_ids: list[str] | None = Field(None, description="Entry ids ('<ms>-<seq>') of pulled events.")
    ids: list[str] | None = Field(None, description="Alias of ack_ids.")
    cursor: str | None = Field(None, description="Acknowledge everything delivered up to and including it.")


class ReplayRequest(BaseModel):
    ids: list[str] | None = Field(None, description="Dead letter ids; unset: the oldest ones.")


def inline(model: Any) -> dict[str, Any]:
    """The JSON schema of ``model`` with its ``$defs`` substituted in place (none is recursive),
    so it can sit anywhere in the OpenAPI document."""
    schema = TypeAdapter(model).json_schema()
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {k: resolve(v) for k, v in node.items()}
        return [resolve(v) for v in node] if isinstance(node, list) else node

    return resolve(schema)


def described(python_type: Any, model: Any) -> Any:
    """A body parameter validated by FastAPI as ``python_type`` only, shown as ``model``."""
    return Annotated[python_type, WithJsonSchema(inline(model)), Body()]


OptOutBatch = described(list[dict[str, Any]], list[OptOut])
IdentityBatch = described(list[dict[str, Any]], list[IdentityLinkBody])
ConsentBatch = described(list[dict[str, Any]], list[ConsentBody])
CampaignBody = described(dict[str, Any], CampaignContacts)
AckBody = described(dict[str, Any], AckRequest)
ReplayBody = described(dict[str, Any] | None, ReplayRequest | None)


class EventIn(BaseModel):
    """One event as a source sends it (CloudEvents attribute names); the source's mapping may
    accept other shapes, so the ingest path, not this schema, decides."""

    model_config = ConfigDict(extra="allow")

    id: str = Field(description="Unique per source: the idempotency key.")
    type: str
    time: str | int = Field(description="RFC 3339, or epoch milliseconds.")
    subject: str = Field(description="The customer as the source knows them.")
    data: dict[str, Any] = {}
    source: str | None = None


def _ingest_body() -> dict[str, Any]:
    """``POST /v1/events`` reads its raw body (the content type picks the parser): its request
    body is described here rather than declared as a parameter."""
    one = inline(EventIn)
    json_body = {"anyOf": [one, {"type": "array", "items": one}]}
    text = {"schema": {"type": "string"}}
    content = {
        "application/json": {"schema": json_body},
        "application/cloudevents+json": {"schema": one},
        "application/cloudevents-batch+json": {"schema": {"type": "array", "items": one}},
        "application/x-ndjson": text,
        "text/csv": text,
        "application/vnd.apache.arrow.stream": {"schema": {"type": "string", "format": "binary"}},
    }
    return {"requestBody": {"required": True, "content": content}}


INGEST_BODY = _ingest_body()


class TokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=TOKEN_NAME_PATTERN, description="Unique among live tokens; recorded in the audit trail.")
    role: Literal["viewer", "operator", "admin"]
    expires_in_s: float | None = Field(None, gt=0, le=10 * 365 * 86400, description="Unset: never expires.")


CONFIG_DOCUMENT = (
    "A source, event-type, rule, subscription, channel, policy, segment or campaign document, as in configs/. "
    "Validated by the config store, which names every problem with its path (422 invalid_config)."
)
CONFIG_EXAMPLES = {
    "source": {
        "summary": "A source with its ingest key",
        "value": {"kind": "source", "name": "crm", "api_key": "crm-key-0123456789abcdef"},
    },
    "event-type": {
        "summary": "An event type",
        "value": {"kind": "event-type", "name": "app.login", "attributes": {"device": {"type": "string"}}},
    },
}
PROFILE_EXAMPLES = {"attributes": {"summary": "Attributes and tags", "value": {"tier": "gold", "tags": ["app-user"]}}}


# --- response bodies --------------------------------------------------------------------------


class Rejection(BaseModel):
    index: int = Field(description="The record's position in the body.")
    id: str | None
    reason: str
    message: str


class IngestAnswer(Open):
    accepted: int
    duplicates: int
    rejected: list[Rejection]
    filtered: int = Field(description="Dropped by the source's filter, on purpose.")
    dropped: dict[str, int] = Field(description="Other drops per reason (e.g. late).")


class Trace(Open):
    source: str
    id: str
    status: str = Field(examples=["accepted", "dropped", "quarantined", "unknown"])
    steps: list[dict[str, Any]]


class Decisions(Open):
    customer: str
    partition: int
    rules: list[dict[str, Any]] = Field(description="Each rule's live state for the customer and its last fires.")
    contact_decisions: list[dict[str, Any]]


class Stored(BaseModel):
    stored: int


class Removed(BaseModel):
    removed: int


class CampaignSubmitted(BaseModel):
    submitted: int
    accepted: int
    duplicates: int


class ConfigChange(Open):
    kind: str
    name: str
    version: int
    deleted: bool = False


class ConfigDocument(Open):
    """A stored document as sent, secrets redacted, with its version."""

    name: str
    version: int
    updated_at: int = Field(description="Epoch milliseconds.")


class ConfigHistory(BaseModel):
    kind: str
    name: str
    items: list[dict[str, Any]] = Field(description="Kept versions, oldest first, secrets redacted.")


class ConfigList(BaseModel):
    kind: str
    items: list[ConfigDocument]


class Identity(BaseModel):
    kind: str
    identifier: str
    customer: str


class ProfileWritten(BaseModel):
    customer: str
    attributes: int = Field(description="How many attributes were set.")


class Profile(BaseModel):
    customer: str
    attributes: dict[str, Any]


class QuarantineEntry(BaseModel):
    qid: str
    source: str
    index: int
    id: str | None
    reason: str
    message: str
    format: str
    at: int
    raw: str
    context: str


class QuarantinePage(BaseModel):
    items: list[QuarantineEntry]
    total: int


class ReplayTotals(Open):
    """Counts of what a replay did; a count that stayed 0 is left out."""

    replayed: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    filtered: int = 0
    dropped: int = 0
    skipped_unknown_source: int = 0


class SubscriptionList(BaseModel):
    items: list[ConfigDocument]


class Pulled(BaseModel):
    events: list[dict[str, Any]] = Field(description="CloudEvents, each with its ack_id.")
    cursor: str | None = Field(description="The newest ack_id; acknowledging it acknowledges all.")


class DeadLetter(BaseModel):
    id: str
    event: dict[str, Any]
    status: int | None = Field(description="The receiver's last HTTP status, if it answered.")
    error: str
    attempts: int
    at: int


class DeadLetters(BaseModel):
    items: list[DeadLetter]
    total: int


class Replayed(BaseModel):
    replayed: int


class Acked(BaseModel):
    acked: int


class DeliveryStatus(Open):
    name: str
    dead_letters: int
    disabled: bool
    disabled_reason: str | None


class SubscriptionStatus(DeliveryStatus):
    mode: str
    pending: int
    lag: int


class TokenRecord(BaseModel):
    id: str
    name: str
    role: str
    created_at: int
    expires_at: int | None
    revoked_at: int | None


class TokenCreated(TokenRecord):
    token: str = Field(description="The only copy of the token: keep it.")


class TokenList(BaseModel):
    items: list[TokenRecord]


class AuditRecord(BaseModel):
    id: str
    at: int
    who: str
    role: str
    action: str
    target: str
    remote: str | None
    detail: Any


class AuditPage(BaseModel):
    items: list[AuditRecord]
    next: str | None = Field(description="Pass as 'before' for the next page.")


class Health(BaseModel):
    status: str


class Ready(BaseModel):
    ready: bool
    checks: dict[str, str]
