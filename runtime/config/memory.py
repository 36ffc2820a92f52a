"""The config store in a process's memory, for unit tests: :class:`ConfigStorage` with the
Redis store's behaviour (same validation, versions that never repeat, history trimmed to the
last ``history`` versions with secrets redacted). Documents are kept as the JSON the Redis
store writes, so every read is a fresh copy with the same key order. Not thread-safe."""

from __future__ import annotations

import json
from typing import Any

from runtime.config.documents import KINDS
from runtime.config.store import Record, check_kind, kind_of, new_record, prepare_document
from runtime.errors import NotFound
from runtime.subscriptions.models import public_view


class MemoryConfigStore:
    """:class:`ConfigStorage` in dictionaries; endpoint secrets are kept as given (no sealing)."""

    def __init__(self, *, history: int = 50) -> None:
        self._history = history
        self._docs: dict[str, dict[str, str]] = {kind: {} for kind in KINDS}
        self._histories: dict[tuple[str, str], list[str]] = {}
        self._last_versions: dict[tuple[str, str], int] = {}  # outlive a delete, like the Redis counters
        self._version = 0

    def put(self, raw: Any, *, kind: str | None = None, name: str | None = None) -> dict[str, Any]:
        doc = prepare_document(raw, self._find, kind=kind, name=name)
        key = (kind_of(doc), doc.name)
        version = self._last_versions[key] = self._last_versions.get(key, 0) + 1
        record = new_record(doc, version)
        self._docs[key[0]][doc.name] = json.dumps(record, sort_keys=True)
        history = self._histories.setdefault(key, [])
        history.append(json.dumps(public_view(key[0], record), sort_keys=True))
        del history[: -self._history]
        self._version += 1
        return {"kind": key[0], "name": doc.name, "version": version}

    def find(self, kind: str, name: str) -> Record | None:
        check_kind(kind)
        return self._find(kind, name)

    def get(self, kind: str, name: str) -> Record:
        record = self.find(kind, name)
        if record is None:
            raise NotFound(f"no {kind} named {name!r}")
        return record

    def history(self, kind: str, name: str) -> list[Record]:
        check_kind(kind)
        return [json.loads(v) for v in self._histories.get((kind, name), [])]

    def delete(self, kind: str, name: str) -> dict[str, Any]:
        record = self.get(kind, name)
        del self._docs[kind][name]
        self._version += 1
        return {"kind": kind, "name": name, "deleted": True, "version": record["version"]}

    def version(self) -> int:
        return self._version

    def snapshot(self) -> tuple[int, dict[str, list[Record]]]:
        return self._version, {kind: self.list(kind) for kind in KINDS}

    def list(self, kind: str) -> list[Record]:
        check_kind(kind)
        return [json.loads(v) for _, v in sorted(self._docs[kind].items())]

    def _find(self, kind: str, name: str) -> Record | None:
        raw = self._docs.get(kind, {}).get(name)
        return json.loads(raw) if raw else None
