"""Domain errors to HTTP, in one place: status codes and the JSON body
``{"reason": ..., "message": ...}`` (plus ``errors`` for config problems)."""

from __future__ import annotations

import redis
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from runtime import errors as e

STATUS: list[tuple[type[e.EspError], int]] = [
    (e.BodyTooLarge, 413),
    (e.UnsupportedContentType, 415),
    (e.UnparseableBody, 400),
    (e.ConfigError, 422),
    (e.NotFound, 404),
    (e.Conflict, 409),
    (e.Overloaded, 429),
    (e.InputError, 400),
]


def status_of(exc: Exception) -> int:
    """The HTTP status an exception is answered with (the handlers below use the same)."""
    if isinstance(exc, redis.RedisError):
        return 503
    if not isinstance(exc, e.EspError):
        return 500
    if isinstance(exc, e.AuthError):
        return 403 if exc.reason in ("forbidden", "unknown_source", "insufficient_role") else 401
    return next((code for cls, code in STATUS if isinstance(exc, cls)), 400)


def install(app: FastAPI) -> None:
    @app.exception_handler(e.EspError)
    async def _esp_error(request: Request, exc: e.EspError) -> JSONResponse:
        headers = {"Retry-After": str(exc.retry_after_s)} if isinstance(exc, e.Overloaded) else None
        if isinstance(exc, e.AuthError) and status_of(exc) == 401:
            headers = {"WWW-Authenticate": "Bearer"}
        return JSONResponse(exc.to_dict(), status_code=status_of(exc), headers=headers)

    @app.exception_handler(redis.RedisError)
    async def _store_down(request: Request, exc: redis.RedisError) -> JSONResponse:
        body = {"reason": "store_unavailable", "message": f"the event store is unavailable: {exc}"}
        return JSONResponse(body, status_code=503, headers={"Retry-After": "1"})
