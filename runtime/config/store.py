"""The versioned config store in Redis.

Each kind is a hash ``name -> JSON document`` (with ``version`` and ``updated_at``); every
change also appends to the document's history (the last ``history`` versions, as the API shows
them: no secret enters it in clear) and bumps one global counter that running actors poll, so
changes reach them without a restart. A per-document counter numbers versions, so a trimmed
history or a deleted and re-created document never repeats one.

Every bump of the global version is recorded, in the same transaction, in a bounded change log
(``CONFIG_CHANGES``: a sorted set scored by the global version, with a rule's record or its
deletion), so the rules as of any recent global version can be rebuilt (:meth:`ConfigStore.rule_changes`):
log entries are stamped with the global version they were accepted under, and a partition actor
may meet stamps of versions it never polled (invariant 7).

Every key of the store carries the hash tag ``{config}`` (``runtime/keys.py``), so its
transactions and scripts touch one slot of a Redis Cluster. A subscription's or channel's
stream lives in its own slot: it is created before the document is stored (an empty stream with
its group, harmless if the put then fails) and removed after the document is deleted.

:class:`ConfigStorage` is what every config store offers; :class:`ConfigStore` keeps documents
in Redis, :class:`runtime.config.memory.MemoryConfigStore` in memory for unit tests. Both
validate through :func:`prepare_document` and number versions the same way.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from runtime import keys
from runtime.config.documents import KINDS, check_fields_against_type, parse_document
from runtime.config.types import Doc
from runtime.errors import NotFound
from runtime.lua import queue_script, read_script
from runtime.rules.models import Rule, leaves
from runtime.security.sealing import Sealer
from runtime.sources.models import Source
from runtime.subscriptions.models import Subscription, public_view

if TYPE_CHECKING:
    import redis

Record = dict[str, Any]  # a stored document: its body, ``version`` and ``updated_at``

CONFIG_CHANGES = keys.CONFIG_CHANGES
"""Global config version -> what that bump changed (sorted set, the last ``CHANGES_KEPT``)."""
CHANGES_KEPT = 1000  # a partition actor needs those since its last poll (every 0.5 s)


class ConfigStorage(Protocol):
    """Versioned config documents: ``put`` validates, then stores the next version of the
    document (versions of one name never repeat, even after a delete) and bumps the global
    version; reads return fresh copies."""

    def put(self, raw: Any, *, kind: str | None = None, name: str | None = None) -> dict[str, Any]: ...

    def find(self, kind: str, name: str) -> Record | None: ...

    def get(self, kind: str, name: str) -> Record: ...

    def history(self, kind: str, name: str) -> list[Record]: ...

    def delete(self, kind: str, name: str) -> dict[str, Any]: ...

    def version(self) -> int: ...

    def snapshot(self) -> tuple[int, dict[str, list[Record]]]: ...

    def list(self, kind: str) -> list[Record]: ...


def prepare_document(
    raw: Any, find: Callable[[str, str], Record | None], *, kind: str | None = None, name: str | None = None
) -> Doc:
    """A document validated for storing, by any store (``find`` reads what it holds): a rule's
    fields checked against its event types, a subscription's token hash kept by a change that
    does not name the token, and tokens replaced by their hashes."""
    doc = parse_document(raw, kind=kind, name=name)
    if isinstance(doc, Rule):
        types = {leaf.event for _, leaf in leaves(doc.when)}
        check_fields_against_type(doc, {t: find("event-type", t) for t in types})
    if isinstance(doc, Subscription) and doc.token is None and doc.token_sha256 is None:
        previous = find("subscription", doc.name)
        if previous and previous.get("token_sha256"):
            doc = doc.model_copy(update={"token_sha256": previous["token_sha256"]})
    if isinstance(doc, (Source, Subscription)):
        doc = doc.stored()
    return doc


def new_record(doc: Doc, version: int) -> Record:
    """What a store keeps for version ``version`` of ``doc``."""
    body = doc.model_dump(mode="json", exclude_none=True, by_alias=True)
    return {**body, "version": version, "updated_at": int(time.time() * 1000)}


class ConfigStore:
    """:class:`ConfigStorage` in Redis: one hash per kind, a list per document for its history."""

    def __init__(self, client: redis.Redis, *, history: int = 50, sealer: Sealer | None = None) -> None:
        self._redis = client
        self._history = history
        self._sealer = sealer  # seals endpoint secrets at rest; without one they are stored as given

    def put(self, raw: Any, *, kind: str | None = None, name: str | None = None) -> dict[str, Any]:
        return self._store(prepare_document(raw, self._get_raw, kind=kind, name=name))

    def _store(self, doc: Doc) -> dict[str, Any]:
        kind = kind_of(doc)
        # one more than anything this name ever had, so a deleted and re-created document never
        # repeats a version (outputs name the version that produced them)
        version = int(
            self._redis.eval(_NEXT_VERSION, 2, keys.config_version(kind, doc.name), keys.config_history(kind, doc.name))
        )
        record = new_record(doc, version)
        history = keys.config_history(kind, doc.name)
        stream = _stream_of(kind, doc.name)
        if stream is not None:  # before the document exists, so no event emitted for it is missed
            _ensure_stream(self._redis, stream)
        pipe = self._redis.pipeline(transaction=True)
        pipe.hset(keys.config_docs(kind), doc.name, self._encode(kind, record))
        pipe.rpush(history, json.dumps(public_view(kind, record), sort_keys=True))
        pipe.ltrim(history, -self._history, -1)
        _bump_version(pipe, kind, doc.name, record)
        pipe.execute()
        return {"kind": kind, "name": doc.name, "version": version}

    def history(self, kind: str, name: str) -> list[dict[str, Any]]:
        """The kept versions of a document, oldest first (secrets redacted)."""
        check_kind(kind)
        return [json.loads(v) for v in self._redis.lrange(keys.config_history(kind, name), 0, -1)]

    def find(self, kind: str, name: str) -> dict[str, Any] | None:
        """The stored document, or None."""
        check_kind(kind)
        return self._get_raw(kind, name)

    def get(self, kind: str, name: str) -> dict[str, Any]:
        check_kind(kind)
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
        check_kind(kind)
        docs = self._redis.hgetall(keys.config_docs(kind))
        return [self._decode(kind, v) for _, v in sorted(docs.items())]

    def delete(self, kind: str, name: str) -> dict[str, Any]:
        record = self.get(kind, name)
        pipe = self._redis.pipeline(transaction=True)
        pipe.hdel(keys.config_docs(kind), name)
        _bump_version(pipe, kind, name, None)
        pipe.execute()
        stream = _stream_of(kind, name)
        if stream is not None:  # after: a crash between leaves only keys no document points to
            self._redis.delete(
                stream, keys.deadletters(stream), keys.delivery_state(stream), keys.delivery_chunks(stream)
            )
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

    def rule_changes(self, after: int, upto: int) -> list[tuple[int, str, Record | None]] | None:
        """The rule changes of the global versions after ``after`` up to ``upto``, oldest first:
        (global version, rule name, its record from then on or None when deleted). Versions that
        changed another kind have none. None when the change log no longer holds every version of
        the range (trimmed, or written before the log existed): the rules between are unknown."""
        if upto <= after:
            return []
        logged = self._redis.zrangebyscore(CONFIG_CHANGES, after + 1, upto, withscores=True)
        if len(logged) != upto - after:
            return None
        changes = []
        for member, score in logged:
            text = member if isinstance(member, str) else member.decode()  # "<version> <change>"
            change = json.loads(text.split(" ", 1)[1])
            if change["kind"] == "rule":
                changes.append((int(score), change["name"], change.get("record")))
        return changes


_NEXT_VERSION = read_script("runtime.config", "store_next_version.lua")
_ENSURE_GROUP = read_script("runtime.config", "store_ensure_group.lua")
_BUMP_VERSION = read_script("runtime.config", "store_bump_version.lua")


def _bump_version(pipe: Any, kind: str, name: str, record: Record | None) -> None:
    """Move the global version on in ``pipe``'s transaction, recording the change under the new
    version: a rule's record (None: deleted); of other kinds only the name (no secret enters the log)."""
    change: dict[str, Any] = {"kind": kind, "name": name}
    if kind == "rule":
        change["record"] = record

    queue_script(
        pipe, _BUMP_VERSION, [keys.CONFIG_VERSION, CONFIG_CHANGES], [json.dumps(change, sort_keys=True), CHANGES_KEPT]
    )


def _stream_of(kind: str, name: str) -> str | None:
    """The stream a subscription or channel document has, None for other kinds."""
    if kind == "subscription":
        return keys.subscription_stream(name)
    if kind == "channel":
        return keys.channel_stream(name)
    return None


def _ensure_stream(client: redis.Redis, stream: str) -> None:
    """Create a subscription's (or channel's) stream and consumer group now, so events emitted
    from this moment on are kept for it (MKSTREAM; an existing group is left as it is)."""
    client.eval(_ENSURE_GROUP, 1, stream, keys.SUBSCRIPTION_GROUP)


def kind_of(doc: Doc) -> str:
    return str(doc.kind)  # type: ignore[attr-defined]


def check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise NotFound(f"unknown config kind {kind!r}; expected one of {sorted(KINDS)}")
