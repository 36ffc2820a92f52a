"""Who may call which route: one table, checked on every request before the route runs.

Each route of the app declares its access here by method and path template; a route missing
from the table is refused to everyone (and fails the route-matrix test), so a new route cannot
ship open by accident.

Access levels:
- ``public``: anyone (health checks);
- ``source``: a source key, checked by the ingestion route itself;
- ``viewer`` / ``operator`` / ``admin``: an operator token of at least that role;
- ``console``: the operator console's pages, which check their own session cookie
  (``serve/console``) and send a browser without one to the sign-in page;
- ``subscriber:<role>``: the subscription's own subscriber token, or an operator token of at
  least ``<role>`` (a subscription without a token is therefore readable only by operators).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import Request

from runtime.errors import AuthError
from runtime.security.tokens import LOCAL, Principal, TokenStore, bearer

ACCESS: dict[tuple[str, str], str] = {
    ("GET", "/healthz"): "public",
    ("GET", "/readyz"): "public",
    ("POST", "/v1/events"): "source",
    ("GET", "/metrics"): "viewer",
    ("GET", "/v1/status"): "viewer",
    ("GET", "/v1/events/{source}/{event_id}/trace"): "viewer",
    ("GET", "/v1/decisions/{customer}"): "viewer",
    ("PUT", "/v1/optouts"): "operator",
    ("DELETE", "/v1/optouts"): "operator",
    ("POST", "/v1/campaigns/{name}/contacts"): "operator",
    ("GET", "/v1/config/{kind}"): "viewer",
    ("GET", "/v1/config/{kind}/{name}"): "viewer",
    ("GET", "/v1/config/{kind}/{name}/history"): "viewer",
    ("PUT", "/v1/config/{kind}/{name}"): "operator",
    ("DELETE", "/v1/config/{kind}/{name}"): "operator",
    ("PUT", "/v1/identities"): "operator",
    ("GET", "/v1/identities/{kind}/{identifier}"): "viewer",
    ("PUT", "/v1/consents"): "operator",
    ("PUT", "/v1/profiles/{customer}"): "operator",
    ("GET", "/v1/profiles/{customer}"): "viewer",
    ("GET", "/v1/quarantine"): "viewer",
    ("GET", "/v1/quarantine/{qid}"): "viewer",
    ("POST", "/v1/quarantine/replay"): "operator",
    ("GET", "/v1/subscriptions"): "subscriber:viewer",
    ("GET", "/v1/subscriptions/{name}"): "subscriber:viewer",
    ("GET", "/v1/subscriptions/{name}/events"): "subscriber:viewer",
    ("POST", "/v1/subscriptions/{name}/ack"): "subscriber:viewer",
    ("GET", "/v1/subscriptions/{name}/stream"): "subscriber:viewer",
    ("GET", "/v1/subscriptions/{name}/deadletters"): "subscriber:viewer",
    ("POST", "/v1/subscriptions/{name}/deadletters/replay"): "subscriber:operator",
    ("GET", "/v1/channels/{name}"): "viewer",
    ("GET", "/v1/channels/{name}/deadletters"): "viewer",
    ("POST", "/v1/channels/{name}/deadletters/replay"): "operator",
    ("GET", "/v1/tokens"): "admin",
    ("POST", "/v1/tokens"): "admin",
    ("DELETE", "/v1/tokens/{name}"): "admin",
    ("GET", "/v1/audit"): "viewer",
    **{
        (method, path): "console"
        for method, path in [
            ("GET", "/console"),
            ("GET", "/console/static/{name}"),
            ("GET", "/console/login"),
            ("POST", "/console/login"),
            ("POST", "/console/logout"),
            ("GET", "/console/lang"),
            ("GET", "/console/overview"),
            ("GET", "/console/overview/live"),
            ("GET", "/console/config"),
            ("GET", "/console/config/{kind}/{name}"),
            ("POST", "/console/config/{kind}/{name}"),
            ("POST", "/console/config/{kind}/{name}/rollback"),
            ("GET", "/console/customer"),
            ("GET", "/console/event"),
            ("GET", "/console/quarantine"),
            ("GET", "/console/quarantine/{qid}"),
            ("POST", "/console/quarantine/replay"),
            ("GET", "/console/deadletters"),
            ("POST", "/console/deadletters/replay"),
            ("GET", "/console/golive"),
            ("GET", "/console/campaigns"),
            ("GET", "/console/campaigns/{name}/report.html"),
        ]
    },
}

UNDOCUMENTED = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})  # FastAPI's own pages


@dataclass(frozen=True, slots=True)
class Caller:
    """The outcome of the access check: an operator principal, or a presented credential that
    only the route can judge (a subscriber token), or nothing (public and source routes)."""

    principal: Principal | None
    credential: str | None
    remote: str | None


class Guard:
    """Checks the caller of each request against :data:`ACCESS` (installed on the app's state
    by the API replica; every route depends on :func:`check`)."""

    def __init__(self, tokens: TokenStore | None) -> None:
        self.tokens = tokens  # None: auth is off, everyone is LOCAL (admin)

    def caller(self, method: str, template: str, authorization: str | None, remote: str | None) -> Caller:
        access = ACCESS.get((method, template))
        if access is None:
            raise AuthError(f"{method} {template} declares no access; refused", reason="forbidden")
        if access in ("public", "source", "console"):
            return Caller(None, None, remote)
        if self.tokens is None:
            return Caller(LOCAL, None, remote)
        role = access.removeprefix("subscriber:")
        credential = bearer(authorization)
        if credential is None:
            raise AuthError("missing credentials: send 'Authorization: Bearer <token>'", reason="missing_token")
        try:
            principal = self.tokens.verify(credential)
        except AuthError:
            if access.startswith("subscriber:"):
                return Caller(None, credential, remote)  # the route compares it with the subscription's
            raise
        if not principal.can(role):
            raise AuthError(
                f"{method} {template} needs role {role} or above; token {principal.name!r} has role {principal.role}",
                reason="insufficient_role",
            )
        return Caller(principal, credential, remote)


def replica() -> Any:
    """The API replica serving this request (Serve runs a pickled copy of the app, so per-replica
    state lives on the replica object, not on ``app.state``)."""
    from ray import serve

    return serve.get_replica_context().servable_object


def check(request: Request) -> None:
    """The app-wide dependency: refuse the request, or leave its :class:`Caller` on
    ``request.state.caller`` (runs in the threadpool: the token lookup is one Redis read)."""
    guard: Guard = replica().guard
    route = request.scope.get("route")
    template = getattr(route, "path", request.url.path)
    remote = request.client.host if request.client else None
    request.state.caller = guard.caller(request.method, template, request.headers.get("authorization"), remote)
