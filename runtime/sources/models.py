"""The ``source`` document (:class:`Source`) and its parts that turn a system's own records
into atomic events: input format, field mapping, identity, consent, de-duplication and error
handling.

A mapping reads *source paths* (dotted, into the record as parsed: a CSV row or ``k=v`` line
is flat, a JSON object may be nested) and writes the envelope (``id``, ``type``, ``time``,
``subject``) and ``data.<name>`` attributes.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from runtime.config.types import NAME_PATTERN, Doc, DurationMs, hash_key

ValueType = Literal["string", "int", "float", "bool"]


class _Spec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class CsvFormat(_Spec):
    """CSV lines: a header line, or columns declared here."""

    delimiter: str = Field(",", min_length=1, max_length=1, description="Field delimiter.")
    header: bool = Field(True, description="The first line of each body names the columns.")
    columns: list[str] | None = Field(None, description="Column names when there is no header line.")

    @model_validator(mode="after")
    def _columns_known(self) -> CsvFormat:
        if not self.header and not self.columns:
            raise ValueError("a CSV source without a header line needs 'columns'")
        return self


class KvFormat(_Spec):
    """Delimited key=value lines, e.g. ``msisdn=13800000001|cell=46001A|ts=1700000000``."""

    pair_delimiter: str = Field("|", min_length=1, max_length=4, description="Between pairs.")
    separator: str = Field("=", min_length=1, max_length=4, description="Between key and value.")


class FieldSpec(_Spec):
    """How one output value is made: from a source path, a constant, or an expression over the
    already-mapped event; then value map, type coercion and default, in that order."""

    from_: str | None = Field(None, alias="from", description="Source path, e.g. 'dur' or 'payload.user.id'.")
    const: Any = Field(None, description="A constant value.")
    expr: str | None = Field(None, description="Expression over the mapped event (data.*, subject, time, type).")
    map: dict[str, Any] | None = Field(None, description="Value map (code -> label); unmapped codes fail.")
    type: ValueType | None = Field(None, description="Coerce to this type.")
    default: Any = Field(None, description="Used when the source path is missing or empty.")
    required: bool = Field(False, description="A missing value is a mapping error (otherwise the field is left out).")

    @model_validator(mode="after")
    def _one_origin(self) -> FieldSpec:
        origins = [k for k in ("from_", "const", "expr") if getattr(self, k) is not None]
        if len(origins) != 1:
            names = [o.rstrip("_") for o in origins]
            raise ValueError(f"a field needs exactly one of from, const, expr; got {names or 'none'}")
        return self


class TimeSpec(_Spec):
    """Where the event time comes from and how to read it."""

    from_: str = Field("time", alias="from", description="Source path of the time.")
    format: str = Field(
        "auto",
        description="'auto' (RFC 3339 or epoch ms), 'epoch_s', 'epoch_ms', 'iso', or a strptime pattern "
        "such as '%Y%m%d%H%M%S'.",
    )
    timezone: str = Field("UTC", description="IANA zone for times without an offset, e.g. 'Asia/Shanghai'.")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, zone: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {zone!r}") from None
        return zone


class TypeSpec(_Spec):
    """The atomic event type: a constant, or a source field through a value map."""

    const: str | None = Field(None, pattern=NAME_PATTERN)
    from_: str | None = Field(None, alias="from")
    map: dict[str, str] | None = Field(None, description="Source code -> event type; unmapped codes fail.")

    @model_validator(mode="after")
    def _one_origin(self) -> TypeSpec:
        if (self.const is None) == (self.from_ is None):
            raise ValueError("an event type needs exactly one of const, from")
        return self


class IdSpec(_Spec):
    """The event id: a source path, or a digest of several source paths (for feeds without ids)."""

    from_: str | None = Field(None, alias="from")
    fields: list[str] | None = Field(None, min_length=1, description="Digest of these source paths' values.")

    @model_validator(mode="after")
    def _one_origin(self) -> IdSpec:
        if (self.from_ is None) == (self.fields is None):
            raise ValueError("an id needs exactly one of from, fields")
        return self


class Mapping(_Spec):
    """Source record -> envelope. Strings are shorthands: ``type: call.inbound`` is a constant
    type; ``id: seq``, ``subject: msisdn``, ``time: ts`` and ``data: {line: line_code}`` are paths."""

    type: str | TypeSpec = Field(description="Atomic event type.")
    id: str | IdSpec = Field("id", description="Event id (the idempotency key with the source).")
    subject: str = Field("subject", description="Source path of the customer identifier.")
    time: str | TimeSpec = Field("time", description="Event time.")
    data: dict[str, str | FieldSpec] = Field(default_factory=dict, description="Attributes of 'data'.")
    keep_unmapped: bool = Field(False, description="Also copy source fields not used above into 'data'.")

    def type_spec(self) -> TypeSpec:
        return TypeSpec(const=self.type) if isinstance(self.type, str) else self.type

    def id_spec(self) -> IdSpec:
        return IdSpec(from_=self.id) if isinstance(self.id, str) else self.id

    def time_spec(self) -> TimeSpec:
        return TimeSpec(from_=self.time) if isinstance(self.time, str) else self.time

    def data_specs(self) -> dict[str, FieldSpec]:
        return {k: FieldSpec(from_=v) if isinstance(v, str) else v for k, v in self.data.items()}


class Dedupe(_Spec):
    horizon: DurationMs = Field(86_400_000, description="How long ids are remembered (rounded up to days).")


SourceFormat = Literal["json", "csv", "kv", "arrow"]
UnknownIdentity = Literal["drop", "quarantine", "anonymous"]


class Source(Doc):
    """A system that posts events. Selected by its API key (``Authorization: Bearer``)."""

    kind: Literal["source"] = "source"
    api_key: str | None = Field(
        None, min_length=16, description="Plain key, accepted on PUT only; stored as api_key_sha256."
    )
    api_key_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$", description="Hash of the key.")
    identity: Literal["customer", "phone", "imei"] = Field(
        "customer", description="What the event 'subject' holds for this source."
    )
    enabled: bool = Field(True, description="A disabled source is refused with 403.")
    format: SourceFormat = Field(
        "json",
        description="Body format: json (JSON, NDJSON, CloudEvents), csv, kv (key=value lines) or arrow (IPC stream).",
    )
    csv: CsvFormat = Field(default_factory=CsvFormat, description="CSV settings (format csv).")
    kv: KvFormat = Field(default_factory=KvFormat, description="key=value settings (format kv).")
    mapping: Mapping | None = Field(None, description="Record -> envelope; none means records are envelopes.")
    filter: str | None = Field(None, max_length=2000, description="Keep only events for which this is true.")
    unknown_identity: UnknownIdentity = Field(
        "quarantine", description="What to do with a subject the identity store does not know."
    )
    require_opt_in: bool = Field(False, description="Drop events of customers who have not opted in.")
    opt_in_purpose: str | None = Field(None, pattern=NAME_PATTERN, description="Consent purpose to check.")
    unknown_types: Literal["accept", "quarantine"] = Field(
        "accept", description="Events of a type missing from the catalogue: accept, or quarantine."
    )
    dedupe: Dedupe = Field(default_factory=Dedupe, description="Idempotency settings.")
    rate_limit_per_s: int | None = Field(
        None, ge=1, le=10_000_000, description="Events per second accepted from this source."
    )

    def stored(self) -> Source:
        """The form kept in the store: the key replaced by its hash."""
        if self.api_key is None:
            return self
        return self.model_copy(update={"api_key": None, "api_key_sha256": hash_key(self.api_key)})
