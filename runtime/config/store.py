"""The versioned config store in Redis.

Each kind is a hash ``name -> JSON document`` (with ``version`` and ``updated_at``); every
change also appends to the document's history (the last ``history`` versions, as the API shows
them: no secret enters it in clear) and bumps one global counter that running actors poll, so
changes reach them without a restart. A per-document counter numbers versions, so a trimmed
history or a deleted and re-created document never repeats one.
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from runtime import keys
from runtime.config.documents import KINDS, check_fields_against_type, parse_document
from runtime.config.types import Doc
from runtime.errors import NotFound
from runtime.lua import read_script
from runtime.rules.models import Rule, leaves
from runtime.security.sealing import Sealer
from runtime.sources.models import Source
from runtime.subscriptions.models import Channel, Subscription, public_view


class ConfigStore:
    """Read and write config documents; ``put`` validates before it stores."""

    def __init__(self, client: redis.Redis, *, history: int = 50, sealer: Sealer | None = None) -> None:
        self._redis = client
        self._history = history
        self._sealer = sealer  # seals endpoint secrets at rest; without one they are stored as given

    def put(self, raw: Any, *, kind: str | None = None, name: str | None = None) -> dict[str, Any]:
        doc = parse_document(raw, kind=kind, name=name)
        if isinstance(doc, Rule):
            types = {leaf.event for _, leaf in leaves(doc.when)}
            check_fields_against_type(doc, {t: self._get_raw("event-type", t) for t in types})
        if isinstance(doc, Subscription) and doc.token is None and doc.token_sha256 is None:
            previous = self._get_raw("subscription", doc.name)  # a change that does not name the token keeps it
            if previous and previous.get("token_sha256"):
                doc = doc.model_copy(update={"token_sha256": previous["token_sha256"]})
        if isinstance(doc, (Source, Subscription)):
            doc = doc.stored()
        return self._store(doc)

    def _store(self, doc: Doc) -> dict[str, Any]:
        kind = _kind_of(doc)
        # one more than anything this name ever had, so a deleted and re-created document never
        # repeats a version (outputs name the version that produced them)
        version = int(
            self._redis.eval(_NEXT_VERSION, 2, keys.config_version(kind, doc.name), keys.config_history(kind, doc.name))
        )
        body = doc.model_dump(mode="json", exclude_none=True, by_alias=True)
        record = {**body, "version": version, "updated_at": int(time.time() * 1000)}
        history = keys.config_history(kind, doc.name)
        pipe = self._redis.pipeline(transaction=True)
        pipe.hset(keys.config_docs(kind), doc.name, self._encode(kind, record))
        pipe.rpush(history, json.dumps(public_view(kind, record), sort_keys=True))
        pipe.ltrim(history, -self._history, -1)
        if isinstance(doc, Subscription):
            _ensure_stream(pipe, keys.subscription_stream(doc.name))
        if isinstance(doc, Channel):
            _ensure_stream(pipe, keys.channel_stream(doc.name))
        pipe.incr(keys.CONFIG_VERSION)
        pipe.execute()
        return {"kind": kind, "name": doc.name, "version": version}

    def history(self, kind: str, name: str) -> list[dict[str, Any]]:
        """The kept versions of a document, oldest first (secrets redacted)."""
        _check_kind(kind)
        return [json.loads(v) for v in self._redis.lrange(keys.config_history(kind, name), 0, -1)]

    def find(self, kind: str, name: str) -> dict[str, Any] | None:
        """The stored document, or None."""
        _check_kind(kind)
        return self._get_raw(kind, name)

    def get(self, kind: str, name: str) -> dict[str, Any]:
        _check_kind(kind)
        record = self._get_raw(kind, name)
        if record is None:
            raise NotFound(f"no {kind} named {name!r}")
        return record

    def _get_raw(self, kind: str, name: str) -> dict[str, Any] | None:
        raw = self._redis.hget(keys.config_docs(kind), name)
        return self._decode(kind, raw) if raw else None

    def _encode(self, kind: str, record: dict[str, Any]) -> str:
        sealed = self._sealer.seal_record(kind, record) if self._sealer else record
        return json.dumps(sealed, sort_keys=True)

    def _decode(self, kind: str, raw: bytes | str) -> dict[str, Any]:
        record = json.loads(raw)
        return self._sealer.unseal_record(kind, record) if self._sealer else record

    def list(self, kind: str) -> list[dict[str, Any]]:
        _check_kind(kind)
        docs = self._redis.hgetall(keys.config_docs(kind))
        return [self._decode(kind, v) for _, v in sorted(docs.items())]

    def delete(self, kind: str, name: str) -> dict[str, Any]:
        record = self.get(kind, name)
        pipe = self._redis.pipeline(transaction=True)
        pipe.hdel(keys.config_docs(kind), name)
        if kind in ("subscription", "channel"):
            stream = keys.subscription_stream(name) if kind == "subscription" else keys.channel_stream(name)
            pipe.delete(stream, keys.deadletters(stream), keys.delivery_state(stream), keys.delivery_chunks(stream))
        pipe.incr(keys.CONFIG_VERSION)
        pipe.execute()
        return {"kind": kind, "name": name, "deleted": True, "version": record["version"]}

    def version(self) -> int:
        return int(self._redis.get(keys.CONFIG_VERSION) or 0)

    def snapshot(self) -> tuple[int, dict[str, list[dict[str, Any]]]]:
        """The global version and every document of every kind, read atomically."""
        pipe = self._redis.pipeline(transaction=True)
        pipe.get(keys.CONFIG_VERSION)
        for kind in KINDS:
            pipe.hgetall(keys.config_docs(kind))
        version, *per_kind = pipe.execute()
        docs = {
            kind: [self._decode(kind, v) for _, v in sorted(raw.items())]
            for kind, raw in zip(KINDS, per_kind, strict=True)
        }
        return int(version or 0), docs


_NEXT_VERSION = read_script("runtime.config", "store_next_version.lua")
_ENSURE_GROUP = read_script("runtime.config", "store_ensure_group.lua")


def _ensure_stream(pipe: Any, stream: str) -> None:
    """Create a subscription's (or channel's) stream and consumer group now, so events emitted
    from this moment on are kept for it (MKSTREAM; an existing group is left as it is)."""
    pipe.eval(_ENSURE_GROUP, 1, stream, keys.SUBSCRIPTION_GROUP)


def _kind_of(doc: Doc) -> str:
    return str(doc.kind)  # type: ignore[attr-defined]


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise NotFound(f"unknown config kind {kind!r}; expected one of {sorted(KINDS)}")
