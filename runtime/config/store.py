"""The versioned config store in Redis.

Each kind is a hash ``name -> JSON document`` (with ``version`` and ``updated_at``); every
change also appends to the document's history and bumps one global counter that running
actors poll, so changes reach them without a restart.
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from runtime import keys
from runtime.config.documents import check_fields_against_type, parse_document
from runtime.config.models import KINDS, Channel, Doc, Rule, Source, Subscription, leaves
from runtime.errors import NotFound


class ConfigStore:
    """Read and write config documents; ``put`` validates before it stores."""

    def __init__(self, client: redis.Redis) -> None:
        self._redis = client

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
        version = int(self._redis.llen(keys.config_history(kind, doc.name))) + 1
        body = doc.model_dump(mode="json", exclude_none=True, by_alias=True)
        record = {**body, "version": version, "updated_at": int(time.time() * 1000)}
        encoded = json.dumps(record, sort_keys=True)
        pipe = self._redis.pipeline(transaction=True)
        pipe.hset(keys.config_docs(kind), doc.name, encoded)
        pipe.rpush(keys.config_history(kind, doc.name), encoded)
        if isinstance(doc, Subscription):
            _ensure_stream(pipe, keys.subscription_stream(doc.name))
        if isinstance(doc, Channel):
            _ensure_stream(pipe, keys.channel_stream(doc.name))
        pipe.incr(keys.CONFIG_VERSION)
        pipe.execute()
        return {"kind": kind, "name": doc.name, "version": version}

    def get(self, kind: str, name: str) -> dict[str, Any]:
        _check_kind(kind)
        record = self._get_raw(kind, name)
        if record is None:
            raise NotFound(f"no {kind} named {name!r}")
        return record

    def _get_raw(self, kind: str, name: str) -> dict[str, Any] | None:
        raw = self._redis.hget(keys.config_docs(kind), name)
        return json.loads(raw) if raw else None

    def list(self, kind: str) -> list[dict[str, Any]]:
        _check_kind(kind)
        docs = self._redis.hgetall(keys.config_docs(kind))
        return [json.loads(v) for _, v in sorted(docs.items())]

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
            kind: [json.loads(v) for _, v in sorted(raw.items())] for kind, raw in zip(KINDS, per_kind, strict=True)
        }
        return int(version or 0), docs


def _ensure_stream(pipe: Any, stream: str) -> None:
    """Create a subscription's (or channel's) stream and consumer group now, so events emitted
    from this moment on are kept for it (MKSTREAM; an existing group is left as it is)."""
    pipe.eval(
        "local ok, err = pcall(redis.call, 'XGROUP', 'CREATE', KEYS[1], ARGV[1], '$', 'MKSTREAM') return 1",
        1,
        stream,
        keys.SUBSCRIPTION_GROUP,
    )


def _kind_of(doc: Doc) -> str:
    return str(doc.kind)  # type: ignore[attr-defined]


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise NotFound(f"unknown config kind {kind!r}; expected one of {sorted(KINDS)}")
