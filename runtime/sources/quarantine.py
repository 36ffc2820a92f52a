"""The quarantine: every event that could not be accepted, kept with its source, reason code,
message and raw payload, so an operator can inspect it and replay it after fixing the config.

One Redis stream (``esp:quarantine``), capped approximately at ``maxlen`` entries. Writes are
pipelined per request and happen before the request is answered, so "rejected" in an answer
means "kept here".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import redis

from runtime import keys
from runtime.errors import InputError, NotFound
from runtime.log.streams import text

PROCESSING_ERROR = "processing_error"  # the reason of events whose processing kept raising
POISON_ATTEMPTS = 3  # tries of a log entry, policy request or delivery before it is set aside
ERROR_TEXT_MAX = 500  # characters of an error kept with a poison entry

_STREAM_ID = re.compile(r"[0-9]{1,20}(-[0-9]{1,20})?")
_MAX_ID_PART = 2**64 - 1
_STORE_BUSY = ("OOM", "READONLY", "LOADING", "BUSY ", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN", "NOREPLICAS")
_CREDENTIALS = re.compile(r"(?i)([a-z][a-z0-9+.-]*://)[^/@\s]*@")


def valid_qid(qid: str) -> bool:
    """Whether ``qid`` is a stream entry id (``<ms>-<seq>``, each a 64-bit unsigned integer),
    so a malformed id is answered as such instead of reaching Redis as an error."""
    if not _STREAM_ID.fullmatch(qid):
        return False
    return all(int(part) <= _MAX_ID_PART for part in qid.split("-"))


def error_text(exc: BaseException) -> str:
    """An exception as kept with a poison entry: its type and message, credentials in URLs
    redacted, truncated (a message can quote the payload that caused it)."""
    message = _CREDENTIALS.sub(r"\1***@", f"{type(exc).__name__}: {exc}")
    return message if len(message) <= ERROR_TEXT_MAX else message[: ERROR_TEXT_MAX - 1] + "…"


def transient(exc: BaseException) -> bool:
    """Whether a failure is the store's and not the input's (Redis unreachable, timed out or
    still loading): such a failure is retried without counting towards ``POISON_ATTEMPTS``."""
    if isinstance(exc, redis.ResponseError):  # the store refusing for now, not the input's fault
        return str(exc).startswith(_STORE_BUSY)
    return isinstance(exc, redis.ConnectionError | redis.TimeoutError | ConnectionError | TimeoutError)


@dataclass(frozen=True, slots=True)
class Quarantined:
    """One rejected record on its way into the quarantine."""

    source: str
    index: int
    id: str | None
    reason: str
    message: str
    raw: bytes
    format: str  # json | csv | kv | arrow: how ``raw`` is to be read on replay
    context: bytes = b""  # what the raw record needs to be read again, e.g. the CSV header line


def _entry(entry_id: Any, fields: dict[bytes, bytes]) -> dict[str, Any]:
    get = fields.get
    return {
        "qid": text(entry_id),
        "source": text(get(b"source", b"")),
        "index": int(get(b"index", b"0")),
        "id": text(get(b"id")) if get(b"id") else None,
        "reason": text(get(b"reason", b"")),
        "message": text(get(b"message", b"")),
        "format": text(get(b"format", b"json")),
        "at": int(get(b"at", b"0")),
        "raw": get(b"raw", b"").decode("utf-8", errors="replace"),
        "context": get(b"context", b"").decode("utf-8", errors="replace"),
    }


class QuarantineStore:
    def __init__(self, client: redis.Redis, *, maxlen: int = 1_000_000) -> None:
        self._redis = client
        self._maxlen = maxlen

    def add(self, items: list[Quarantined], *, at_ms: int) -> None:
        if not items:
            return
        pipe = self._redis.pipeline(transaction=False)
        self.queue(pipe, items, at_ms=at_ms)
        pipe.execute()

    def queue(self, pipe: Any, items: list[Quarantined], *, at_ms: int) -> None:
        """Queue the writes of ``add`` on a caller's pipeline, to go with its own writes (in one
        transaction when the pipeline is one)."""
        for q in items:
            fields = {
                "source": q.source,
                "index": q.index,
                "reason": q.reason,
                "message": q.message[:2000],
                "raw": q.raw,
                "format": q.format,
                "context": q.context,
                "at": at_ms,
            }
            if q.id:
                fields["id"] = q.id
            pipe.xadd(keys.QUARANTINE, fields, maxlen=self._maxlen, approximate=True)

    def list(
        self, *, source: str | None = None, reason: str | None = None, limit: int = 100, before: str | None = None
    ) -> list[dict[str, Any]]:
        """Newest first, filtered by source and reason (a prefix: 'mapping' matches 'mapping_error')."""
        if not 1 <= limit <= 10_000:
            raise InputError(f"limit must be between 1 and 10000, got {limit}", reason="invalid_limit")
        if before is not None and not valid_qid(before):
            raise InputError(
                f"before must be a quarantine id like 1700000000000-0, got {before!r}", reason="invalid_qid"
            )
        found: list[dict[str, Any]] = []
        upper = f"({before}" if before else "+"
        while len(found) < limit:
            chunk = self._redis.xrevrange(keys.QUARANTINE, max=upper, min="-", count=1000)
            if not chunk:
                break
            for entry_id, fields in chunk:
                entry = _entry(entry_id, fields)
                if (source is None or entry["source"] == source) and (
                    reason is None or entry["reason"].startswith(reason)
                ):
                    found.append(entry)
                    if len(found) == limit:
                        break
            upper = f"({text(chunk[-1][0])}"
        return found

    def get(self, qid: str) -> dict[str, Any]:
        if not valid_qid(qid):
            raise NotFound(f"no quarantined event {qid[:100]!r}: not a quarantine id (like 1700000000000-0)")
        items = self._redis.xrange(keys.QUARANTINE, min=qid, max=qid, count=1)
        if not items:
            raise NotFound(f"no quarantined event {qid!r}")
        return _entry(*items[0])

    def remove(self, qids: list[str]) -> int:
        valid = [q for q in qids if valid_qid(q)]
        return int(self._redis.xdel(keys.QUARANTINE, *valid)) if valid else 0

    def raw_entries(self, qids: list[str]) -> list[tuple[str, dict[bytes, bytes]]]:
        pipe = self._redis.pipeline(transaction=False)
        for qid in filter(valid_qid, qids):
            pipe.xrange(keys.QUARANTINE, min=qid, max=qid, count=1)
        return [(text(r[0][0]), r[0][1]) for r in pipe.execute() if r]

    def count(self) -> int:
        return int(self._redis.xlen(keys.QUARANTINE))
