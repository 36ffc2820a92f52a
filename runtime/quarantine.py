"""The quarantine: every event that could not be accepted, kept with its source, reason code,
message and raw payload, so an operator can inspect it and replay it after fixing the config.

One Redis stream (``esp:quarantine``), capped approximately at ``maxlen`` entries. Writes are
pipelined per request and happen before the request is answered, so "rejected" in an answer
means "kept here".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis

from runtime import keys
from runtime.errors import InputError, NotFound
from runtime.streams import text


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
        pipe.execute()

    def list(
        self, *, source: str | None = None, reason: str | None = None, limit: int = 100, before: str | None = None
    ) -> list[dict[str, Any]]:
        """Newest first, filtered by source and reason (a prefix: 'mapping' matches 'mapping_error')."""
        if not 1 <= limit <= 10_000:
            raise InputError(f"limit must be between 1 and 10000, got {limit}", reason="invalid_limit")
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
        items = self._redis.xrange(keys.QUARANTINE, min=qid, max=qid, count=1)
        if not items:
            raise NotFound(f"no quarantined event {qid!r}")
        return _entry(*items[0])

    def remove(self, qids: list[str]) -> int:
        return int(self._redis.xdel(keys.QUARANTINE, *qids)) if qids else 0

    def raw_entries(self, qids: list[str]) -> list[tuple[str, dict[bytes, bytes]]]:
        pipe = self._redis.pipeline(transaction=False)
        for qid in qids:
            pipe.xrange(keys.QUARANTINE, min=qid, max=qid, count=1)
        return [(text(r[0][0]), r[0][1]) for r in pipe.execute() if r]

    def count(self) -> int:
        return int(self._redis.xlen(keys.QUARANTINE))
