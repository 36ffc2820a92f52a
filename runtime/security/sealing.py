"""Secrets in config documents, sealed at rest.

Webhook signing secrets and the extra headers of a delivery endpoint (often the receiver's
credentials) must be usable by the dispatchers, so they cannot be hashed like source keys and
subscriber tokens. They are stored sealed instead: AES-256-GCM under a key derived from the
server secret (which never enters Redis), so a copy of Redis, its AOF files or a backup holds
no secret in clear. The config store seals on write and unseals on read; everything above it
sees plain documents, and the API shows them redacted.
"""

from __future__ import annotations

import base64
import hashlib
import os
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

PREFIX = "sealed:v1:"
ENDPOINT_FIELD = {"subscription": "webhook", "channel": "endpoint"}  # where a kind keeps its endpoint


class SealError(ValueError):
    """A sealed value that this server secret cannot open (another secret, or tampered)."""


class Sealer:
    def __init__(self, server_secret: str) -> None:
        key = hashlib.sha256(b"esp-config-seal-v1\x00" + server_secret.encode()).digest()
        self._aead = AESGCM(key)

    def seal(self, value: str) -> str:
        if value.startswith(PREFIX):
            return value
        nonce = os.urandom(12)
        return PREFIX + base64.urlsafe_b64encode(nonce + self._aead.encrypt(nonce, value.encode(), None)).decode()

    def unseal(self, value: str) -> str:
        if not value.startswith(PREFIX):
            return value  # stored before sealing existed, or by a store without a sealer
        raw = base64.urlsafe_b64decode(value[len(PREFIX) :])
        try:
            return self._aead.decrypt(raw[:12], raw[12:], None).decode()
        except InvalidTag:
            raise SealError("a sealed config secret does not open with this server secret") from None

    def seal_record(self, kind: str, record: dict[str, Any]) -> dict[str, Any]:
        return _map_endpoint(kind, record, self.seal)

    def unseal_record(self, kind: str, record: dict[str, Any]) -> dict[str, Any]:
        return _map_endpoint(kind, record, self.unseal)


def _map_endpoint(kind: str, record: dict[str, Any], change: Any) -> dict[str, Any]:
    field = ENDPOINT_FIELD.get(kind)
    endpoint = record.get(field) if field else None
    if not isinstance(endpoint, dict) or not (endpoint.get("secrets") or endpoint.get("headers")):
        return record
    mapped = {**endpoint}
    if endpoint.get("secrets"):
        mapped["secrets"] = [change(s) for s in endpoint["secrets"]]
    if endpoint.get("headers"):
        mapped["headers"] = {name: change(v) for name, v in endpoint["headers"].items()}
    return {**record, field: mapped}
