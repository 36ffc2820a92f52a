"""The Host allowlist, a guard against DNS rebinding: a web page whose name an attacker points
at 127.0.0.1 can make a browser call the API, but the browser still sends the attacker's name
in ``Host``, which is not on the list. Requests naming another host get 400
``host_not_allowed`` before any route (or body limit) sees them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import orjson

from runtime.settings import EspSettings

LOCAL_NAMES = ("localhost", "127.0.0.1", "[::1]")
PROBES = frozenset({"/healthz", "/readyz"})  # orchestrators probe by pod address; they answer nothing private
UNSPECIFIED = frozenset({"0.0.0.0", "[::]"})  # bind-all addresses: no client names the API so


def normalised_host(host: str) -> str:
    """A Host header value or allowlist entry as compared: lower case, no port, no trailing dot,
    IPv6 literals in brackets (``::1`` and ``[::1]:8000`` both become ``[::1]``)."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[: host.find("]") + 1] if "]" in host else host
    if host.count(":") > 1:  # a bare IPv6 literal (only an allowlist entry can be one)
        return f"[{host}]"
    return host.partition(":")[0].rstrip(".")


def allowed_hosts(settings: EspSettings) -> list[str]:
    """``ESP_ALLOWED_HOSTS`` as a list; empty means the local names and ``http_host``, unless
    that is a bind-all address (0.0.0.0, ::), which is no name a legitimate client uses: an API
    bound to every interface needs its names listed."""
    configured = [host.strip() for host in settings.allowed_hosts.split(",") if host.strip()]
    if configured:
        return configured
    own = normalised_host(settings.http_host)
    return [*LOCAL_NAMES, *([own] if own not in UNSPECIFIED and own not in LOCAL_NAMES else [])]


class HostAllowlist:
    """Pure ASGI middleware: HTTP and WebSocket requests whose Host (port ignored) is not in
    ``allowed`` are refused; ``'*'`` in the list allows any. ``allowed`` may be a callable, read
    per request, for apps built before their settings are known (a Serve replica's)."""

    def __init__(self, app: Any, allowed: Sequence[str] | Callable[[], Sequence[str]]) -> None:
        self.app = app
        self.allowed = allowed

    def permits(self, host: str) -> bool:
        allowed = self.allowed() if callable(self.allowed) else self.allowed
        return "*" in allowed or normalised_host(host) in {normalised_host(entry) for entry in allowed}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"] in PROBES:
            await self.app(scope, receive, send)
            return
        host = next((value.decode("latin-1") for name, value in scope["headers"] if name == b"host"), "")
        if self.permits(host):
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
        else:
            await _refuse(send, host)


async def _refuse(send: Any, host: str) -> None:
    body = orjson.dumps(
        {
            "reason": "host_not_allowed",
            "message": f"Host {host[:200]!r} is not allowed; add it to ESP_ALLOWED_HOSTS to serve it",
        }
    )
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 400, "headers": headers})
    await send({"type": "http.response.body", "body": body})
