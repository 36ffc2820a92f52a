"""Platform settings: one frozen model, read from ``ESP_*`` environment variables or given
explicitly. Internal tunables that users should not need live here too, each described."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from runtime.log.partitioning import DEFAULT_PARTITIONS
from runtime.security.private_files import REDIS_PASSWORD_FILE, local_redis_url, read_secret, secret_file

if TYPE_CHECKING:
    from runtime.security.sealing import Sealer


class EspSettings(BaseSettings):
    """Everything a running ESP needs to know. ``ESP_<FIELD>`` overrides each field."""

    model_config = SettingsConfigDict(env_prefix="ESP_", frozen=True, extra="forbid")

    state_dir: Path = Field(
        Path(".esp"), description="Local state: embedded Redis data (AOF), checkpoints, logs, pid files."
    )
    redis_url: SecretStr | None = Field(
        None, description="External Redis URL. Unset means the embedded redis-server under state_dir."
    )
    redis_port: int = Field(6390, description="Port of the embedded redis-server (loopback only).")
    checkpoint_uri: str | None = Field(
        None,
        description="Where partition checkpoints go: a local path or a pyarrow.fs URI "
        "(s3://bucket/prefix, gs://..., hdfs://...). Default: <state_dir>/checkpoints.",
    )
    partitions: int = Field(
        DEFAULT_PARTITIONS, ge=1, le=4096, description="Virtual partitions; fixed once data exists."
    )
    actors: int = Field(0, ge=0, description="Partition actors; 0 means one per available CPU.")
    actor_num_cpus: float = Field(0.5, gt=0, description="CPUs reserved per partition actor.")
    dispatchers: int = Field(1, ge=0, le=64, description="Webhook and channel dispatcher actors (0: no delivery).")
    policy_shards: int = Field(
        4, ge=1, le=256, description="Streams of notify and task requests for the contact policy (per customer)."
    )
    gateway_port: int = Field(
        8790, ge=0, le=65535, description="Port of the built-in local message gateway (esp up, esp demo); 0: none."
    )
    dispatcher_num_cpus: float = Field(0.1, gt=0, description="CPUs reserved per dispatcher actor (mostly waiting).")
    http_host: str = Field("127.0.0.1", description="Address the Serve HTTP proxy binds.")
    http_port: int = Field(8000, description="Port of the Serve HTTP proxy.")
    api_replicas: int = Field(1, ge=1, description="Replicas of the HTTP API deployment.")
    auth: bool = Field(
        True,
        description="Require credentials: source keys on ingestion, operator tokens (admin/operator/viewer) or "
        "subscriber tokens everywhere else. When false (local experiments only) every route is open and the header "
        "'X-ESP-Source: <name>' names the source.",
    )
    secret: SecretStr | None = Field(
        None,
        description="Server secret that keys the hashes of operator tokens (HMAC-SHA256). Unset: generated once "
        "into <state_dir>/secret (mode 0600) by the process that starts ESP; every API replica gets it from there.",
    )
    allowed_hosts: str = Field(
        "",
        description="Comma-separated Host header values the API answers (DNS-rebinding guard); '*' allows any. "
        "Empty: localhost, 127.0.0.1, [::1] and http_host.",
    )
    config_history: int = Field(50, ge=1, le=10_000, description="Versions kept in each config document's history.")
    audit_maxlen: int = Field(
        1_000_000, ge=1000, description="Approximate number of audit records kept (oldest trimmed first)."
    )
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024, description="Largest request body accepted (413 above).")
    max_api_body_bytes: int = Field(
        4 * 1024 * 1024, ge=1024, description="Largest request body of every route but ingestion (413 above)."
    )
    max_events_per_request: int = Field(100_000, ge=1, description="Largest number of events in one request.")
    idempotency_horizon_s: int = Field(
        7 * 24 * 3600, ge=60, description="How long an (source, event id) pair is remembered for de-duplication."
    )
    append_linger_ms: float = Field(
        20,
        ge=0,
        le=1000,
        description="How long a request about to be written to the log waits for requests still being decoded by the "
        "same API replica, so that they are written together (fewer, larger log entries). Only while other requests "
        "are on their way: a lone sender never waits. 0: no wait.",
    )
    max_backlog_entries: int = Field(
        20_000,
        ge=10,
        description="Unprocessed log entries per partition above which ingestion answers 429 (backpressure).",
    )
    max_out_of_order_s: float = Field(
        0.0,
        ge=0,
        le=3600,
        description="Event-time disorder the rules absorb: events wait this long (event time, or wall time once "
        "the partition is idle) and reach the rules in time order. 0: each log entry is put in order, nothing waits.",
    )
    reorder_wait_ms: int = Field(
        2000,
        ge=0,
        le=600_000,
        description="How long an event waits, from its arrival in the log, for older events still on their way "
        "(requests of concurrent senders finish in any order); then the rules see it in event-time order. Delays rule "
        "outputs by up to this much; atomic subscriptions are not delayed. 0: no wait.",
    )
    allowed_lateness_s: int = Field(
        3600,
        ge=0,
        description="Events older than the newest event of their own customer minus this are late (see "
        "late_events); a customer whose events arrive this far behind the partition's watermark is a backfill and runs "
        "on its own clock; idle windows and cooldowns are forgotten only once the watermark is this far past them.",
    )
    late_events: Literal["accept", "drop", "quarantine"] = Field(
        "accept",
        description="What happens to late events after they are counted and recorded for the trace: evaluated "
        "anyway (accept), dropped, or dropped and kept in the quarantine with reason late_event.",
    )
    log_retention_s: int = Field(24 * 3600, ge=0, description="Processed log entries are kept this long for replay.")
    checkpoint_interval_s: float = Field(5.0, gt=0, description="Seconds between partition checkpoints.")
    read_batch_entries: int = Field(
        4,
        ge=1,
        description="Log entries one actor read takes per partition. An actor holds what one read returns (its "
        "partitions times this many entries) decoded at once: with 10,000-event requests over 64 partitions, 4 "
        "(about 20,000 events) processes as fast as 16 did and keeps a partition actor about 20 MB smaller.",
    )
    visibility_timeout_s: float = Field(30.0, gt=0, description="Pulled, unacked events are redelivered after this.")
    sse_keepalive_s: float = Field(
        15.0,
        gt=0,
        le=300,
        description="Seconds an idle server-sent-events stream waits before it sends a ': keep-alive' comment line, "
        "so proxies and clients do not close it for inactivity.",
    )
    subscription_maxlen: int = Field(1_000_000, ge=1000, description="Approximate cap of a subscription's backlog.")
    log_format: Literal["json", "text"] = Field(
        "json",
        description="How every ESP process writes its log lines to stderr: one JSON object per line (json: ts, "
        "level, logger, message, pid, component and the event_id, customer, rule, output_id ... the line is about; "
        "docs/operations/logs.md) or plain text for reading in a terminal. Secrets are removed either way.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        "INFO", description="Lowest level of ESP's own log lines (other libraries log WARNING and above)."
    )
    metrics_export_port: int = Field(8090, description="Ray's Prometheus export port on each node (local mode).")
    ray_num_cpus: int = Field(2, ge=1, description="CPUs given to the local Ray started by 'esp up'.")
    ray_object_store_mb: int = Field(
        256,
        ge=80,
        description="Object store of the local Ray that ESP starts (shared memory, MB). ESP passes events through "
        "Redis, not Ray objects, so Ray's default (30 % of RAM) only reserves memory; larger objects spill to disk.",
    )
    ray_port: int = Field(6380, ge=1, le=65535, description="GCS port of the local Ray head 'esp up' starts.")
    ray_client_server_port: int = Field(
        10001, ge=1024, le=65535, description="Ray client server port of the local Ray head 'esp up' starts."
    )

    @property
    def checkpoint_location(self) -> str:
        return self.checkpoint_uri or str((self.state_dir / "checkpoints").resolve())

    def effective_redis_url(self) -> str:
        """The Redis every component connects to, credentials included (show it only through
        ``runtime.security.redact.redact_url``): the external one, or the embedded one with the password
        its first start generated under ``state_dir``."""
        if self.redis_url is not None:
            return self.redis_url.get_secret_value()
        return local_redis_url(self.redis_port, read_secret(self.state_dir / "redis" / REDIS_PASSWORD_FILE))

    def server_secret(self) -> str:
        """The configured server secret, else the one kept in ``<state_dir>/secret``."""
        return self.secret.get_secret_value() if self.secret else secret_file(self.state_dir / "secret")

    def sealer(self) -> Sealer:
        """Seals and opens the secrets of config documents (see runtime/security/sealing.py)."""
        from runtime.security.sealing import Sealer

        return Sealer(self.server_secret())

    def to_wire(self) -> dict[str, object]:
        """A dict that rebuilds these settings in another process (secrets included, paths
        absolute): what actors and Serve replicas are constructed from."""
        wire = self.model_dump(mode="json")
        wire["redis_url"] = self.effective_redis_url()
        wire["secret"] = self.server_secret()
        wire["state_dir"] = str(self.state_dir.resolve())
        wire["checkpoint_uri"] = self.checkpoint_location
        return wire
