"""The exception tree of ESP's domain.

Every error a user can cause names the thing, what was expected and what arrived, and has a
stable machine-readable ``reason`` that HTTP answers and the CLI print unchanged::

    EspError                         reason
    ├── ConfigError                  invalid_config      a config document does not validate
    │   └── ExpressionError          invalid_expression  an expression does not parse or type-check
    ├── NotFound                     not_found           a named thing does not exist
    ├── Conflict                     conflict / wrong_mode  not possible in the thing's current state
    ├── InputError                   (per case)          a request body or event is unusable
    │   ├── UnparseableBody          unparseable_body
    │   ├── UnsupportedContentType   unsupported_content_type
    │   └── BodyTooLarge             body_too_large
    ├── AuthError                    unauthorized / forbidden
    └── Overloaded                   overloaded          back off and retry (Retry-After)

HTTP mapping lives in one place: ``serve/errors.py``.
"""

from __future__ import annotations


class EspError(Exception):
    """Root of every error ESP raises on purpose."""

    reason = "error"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""

    def to_dict(self) -> dict[str, object]:
        return {"reason": self.reason, "message": self.message}


class ConfigError(EspError):
    """A configuration document is invalid; ``errors`` lists each problem with its path."""

    reason = "invalid_config"

    def __init__(self, message: str, *, errors: list[dict[str, object]] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or []

    def to_dict(self) -> dict[str, object]:
        return {**super().to_dict(), "errors": self.errors}


class ExpressionError(ConfigError):
    """An expression failed to parse, compile or type-check; ``position`` is 0-based."""

    reason = "invalid_expression"

    def __init__(self, message: str, *, expression: str = "", position: int | None = None) -> None:
        super().__init__(message)
        self.expression = expression
        self.position = position

    def to_dict(self) -> dict[str, object]:
        return {**super().to_dict(), "expression": self.expression, "position": self.position}


class NotFound(EspError):
    reason = "not_found"


class InputError(EspError):
    reason = "invalid_input"


class Conflict(EspError):
    """The request does not fit the thing's current state, e.g. pulling a webhook subscription."""

    reason = "conflict"


class UnparseableBody(InputError):
    reason = "unparseable_body"


class UnsupportedContentType(InputError):
    reason = "unsupported_content_type"


class BodyTooLarge(InputError):
    reason = "body_too_large"


class AuthError(EspError):
    reason = "unauthorized"


class Overloaded(EspError):
    """The platform is behind; the caller should retry after ``retry_after_s`` seconds."""

    reason = "overloaded"

    def __init__(self, message: str, *, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
