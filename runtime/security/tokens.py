"""Operator tokens: who may call the API, with which role.

Three roles, each including the ones before it: ``viewer`` (read configuration, metrics,
stats, traces, decisions, the quarantine and dead letters), ``operator`` (also change config
documents, campaigns, opt-outs, consents, identities, replays) and ``admin`` (also tokens and
``internal`` destinations). Source keys (ingestion) and subscriber tokens (their own
subscriptions) are separate credentials, checked where they apply.

A token reads ``esp_<id>_<secret>``. Only a keyed hash of the secret is stored (HMAC-SHA256
with the server secret, which never enters Redis), so a copy of the store gives no usable
token and no offline guessing without the server secret either. Verification looks the record
up by ``id`` and compares digests in constant time. The plain token is returned once, by
:meth:`TokenStore.create`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from runtime import keys
from runtime.errors import AuthError, Conflict, InputError, NotFound
from runtime.security.private_files import write_private

ROLES = ("viewer", "operator", "admin")
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_TOKEN = re.compile(r"^esp_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a token's name and role (``local`` with role admin when auth is off)."""

    name: str
    role: str

    def can(self, role: str) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role)

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "role": self.role}


LOCAL = Principal("local", "admin")  # every caller when auth is off (--no-auth)


def looks_like_token(value: str) -> bool:
    return _TOKEN.match(value) is not None


class TokenStore:
    """Create, list, revoke and verify operator tokens (one Redis hash, records by token id)."""

    def __init__(self, client: redis.Redis, secret: bytes, *, clock: Callable[[], float] = time.time) -> None:
        if len(secret) < 16:
            raise ValueError("the server secret must have at least 16 bytes")
        self._redis = client
        self._secret = secret
        self._clock = clock

    def _digest(self, token_id: str, token_secret: str) -> str:
        return hmac.new(self._secret, f"{token_id}.{token_secret}".encode(), hashlib.sha256).hexdigest()

    def create(self, name: str, role: str, *, expires_in_s: float | None = None) -> tuple[str, dict[str, Any]]:
        """A new token (shown to the caller once) and its public record."""
        if not re.match(NAME_PATTERN, name):
            raise InputError(f"token name {name!r} does not match {NAME_PATTERN}", reason="invalid_name")
        if role not in ROLES:
            raise InputError(f"role {role!r} is not one of {list(ROLES)}", reason="invalid_role")
        if expires_in_s is not None and not 0 < expires_in_s <= 10 * 365 * 86400:
            raise InputError("expires_in_s must be between 1 second and 10 years", reason="invalid_expiry")
        token_id, token_secret = secrets.token_hex(8), secrets.token_urlsafe(32)
        now_ms = int(self._clock() * 1000)
        record = {
            "id": token_id,
            "name": name,
            "role": role,
            "created_at": now_ms,
            "expires_at": now_ms + int(expires_in_s * 1000) if expires_in_s else None,
            "revoked_at": None,
            "digest": self._digest(token_id, token_secret),
        }
        if not self._redis.hsetnx(keys.TOKEN_NAMES, name, token_id):
            raise Conflict(f"a token named {name!r} exists; revoke it first or choose another name")
        self._redis.hset(keys.TOKENS, token_id, json.dumps(record))
        return f"esp_{token_id}_{token_secret}", public(record)

    def list(self) -> list[dict[str, Any]]:
        records = [json.loads(v) for v in self._redis.hvals(keys.TOKENS)]
        return sorted((public(r) for r in records), key=lambda r: r["created_at"])

    def any_admin(self) -> bool:
        """Whether a usable admin token exists (the bootstrap is needed otherwise)."""
        now_ms = int(self._clock() * 1000)
        return any(r["role"] == "admin" and _usable(r, now_ms) for r in self.list())

    def live(self, name: str) -> bool:
        """Whether a live (not revoked) token has this name."""
        return bool(self._redis.hexists(keys.TOKEN_NAMES, name))

    def revoke(self, name: str) -> dict[str, Any]:
        """Revoke by name; the name becomes free again, the record stays listed as revoked."""
        token_id = self._redis.hget(keys.TOKEN_NAMES, name)
        if token_id is None:
            raise NotFound(f"no token named {name!r}")
        record = json.loads(self._redis.hget(keys.TOKENS, token_id) or "{}")
        record["revoked_at"] = int(self._clock() * 1000)
        pipe = self._redis.pipeline(transaction=True)
        pipe.hset(keys.TOKENS, token_id, json.dumps(record))
        pipe.hdel(keys.TOKEN_NAMES, name)
        pipe.execute()
        return public(record)

    def usable(self, token_id: str) -> bool:
        """Whether the token with this id still exists, unrevoked and unexpired (console sessions)."""
        raw = self._redis.hget(keys.TOKENS, token_id) if token_id else None
        return raw is not None and _usable(json.loads(raw), int(self._clock() * 1000))

    def verify(self, token: str) -> Principal:
        """The principal of a valid token, or :class:`AuthError` (401 ``invalid_token``)."""
        match = _TOKEN.match(token)
        if match is None:
            raise AuthError("the token is not valid", reason="invalid_token")
        token_id, token_secret = match.groups()
        raw = self._redis.hget(keys.TOKENS, token_id)
        record = json.loads(raw) if raw else None
        expected = record["digest"] if record else self._digest("0" * 16, "")  # same work either way
        if not hmac.compare_digest(expected, self._digest(token_id, token_secret)) or record is None:
            raise AuthError("the token is not valid", reason="invalid_token")
        if record["revoked_at"] is not None:
            raise AuthError(f"the token {record['name']!r} was revoked", reason="token_revoked")
        if not _usable(record, int(self._clock() * 1000)):
            raise AuthError(f"the token {record['name']!r} has expired", reason="token_expired")
        return Principal(record["name"], record["role"])


def public(record: dict[str, Any]) -> dict[str, Any]:
    """A token record without its digest, as lists and the audit show it."""
    return {k: v for k, v in record.items() if k != "digest"}


def _usable(record: dict[str, Any], now_ms: int) -> bool:
    return record["revoked_at"] is None and (record["expires_at"] is None or record["expires_at"] > now_ms)


def bearer(authorization: str | None) -> str | None:
    """The credential of an ``Authorization: Bearer <credential>`` header, if that is its form."""
    scheme, _, credential = (authorization or "").partition(" ")
    return (credential.strip() or None) if scheme.lower() == "bearer" else None


BOOTSTRAP_NAME = "bootstrap-admin"


def bootstrap_admin(store: TokenStore, path: Path) -> str | None:
    """On first start, an admin token written to ``path`` (0600): returns it, or None when a
    usable admin token exists already (the one in ``path`` is kept while it verifies)."""
    if path.exists():
        try:
            store.verify(path.read_text().strip())
            return None
        except AuthError:
            pass
    if store.any_admin() and not path.exists():
        return None
    if store.live(BOOTSTRAP_NAME):
        store.revoke(BOOTSTRAP_NAME)  # its file is gone or stale: replace it
    token, _ = store.create(BOOTSTRAP_NAME, "admin")
    write_private(path, token + "\n")
    return token
