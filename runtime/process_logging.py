"""Logs of every ESP process: one JSON object per line (or plain text), with the context of what
was being done, and never a secret.

A line carries ``ts`` (ISO-8601, UTC), ``level``, ``logger``, ``message``, ``pid``, ``component``
(``esp-cli``, ``esp-api``, ``esp-partition-0`` ...), then whichever of the context fields
(:data:`CONTEXT_FIELDS`: ``event_id``, ``source``, ``customer``, ``rule``, ``output_id``,
``subscription``, ``destination``, ``partition``) the call passed with ``extra=`` or the code
around it set with :func:`log_context`, any other ``extra=`` field, and ``exception`` with the
traceback. Build ``extra`` with :func:`fields`, which leaves out what is None::

    logger.warning("event set aside: %s", reason, extra=fields(event_id=e.id, source=e.source))

Secrets are taken out of everything before it is written (:func:`redact_text`,
:func:`redact_value`): values of fields whose name says secret (``password``, ``token``,
``api_key``, ``authorization``, ``secrets`` ...); in the message and the traceback, ESP's
operator tokens (``esp_<id>_<secret>``), webhook signing secrets (``whsec_...``), bearer and
basic credentials, the credentials of URLs (``redis://:pw@host``) and ``name=value`` pairs with a
secret's name; and the literal secrets this process was given (:func:`register_secret`: the
server secret, the Redis password). Source keys and subscriber tokens have no format of their
own; they are caught by the name of the field or header that carries them, and the HTTP layer
never logs a request's headers.

:func:`configure_process` installs this on the root logger and ESP's own loggers (``esp``,
``runtime``, ``actors``, ``serve``); calling it again replaces the handler it installed, so it
is idempotent. Pure: the standard library's ``logging`` and ``orjson``, no Ray.
"""

from __future__ import annotations

import functools
import logging
import re
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from types import MappingProxyType
from typing import IO, TYPE_CHECKING, Any, Literal

import orjson

from runtime.security.redact import redact_url

if TYPE_CHECKING:
    from runtime.settings import EspSettings

LogFormat = Literal["json", "text"]
CONTEXT_FIELDS = ("event_id", "source", "customer", "rule", "output_id", "subscription", "destination", "partition")
ESP_LOGGERS = ("esp", "runtime", "actors", "serve")  # ESP's own: at the configured level
REDACTED = "***"

# --- secrets -------------------------------------------------------------------------------

# Field names whose values are secrets, wherever they appear (extra=, nested dicts, headers).
_SECRET_NAME = re.compile(
    r"pass(word|wd|phrase)?$|secret|token|api[_-]?key|^key$|private[_-]?key|authori[sz]ation|credential|"
    r"cookie|signature|auth$|dsn$",
    re.IGNORECASE,
)
# Texts worth a closer look: substrings of the lower-cased text decide whether the patterns below
# run at all (a loop of ``in`` is ten times faster than one regex search with these alternatives).
_SUSPECT = (
    "esp_",
    "whsec_",
    "bearer",
    "basic",
    "://",
    "pass",
    "secret",
    "token",
    "key",
    "auth",
    "cookie",
    "credential",
)
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\b(esp_[0-9a-f]{16}_)[A-Za-z0-9_-]{20,}"), r"\1" + REDACTED),  # operator token: id stays
    (re.compile(r"\bwhsec_[A-Za-z0-9+/=_-]+"), "whsec_" + REDACTED),  # webhook signing secret
    (  # the credential of an Authorization header, whatever its form (an operator token keeps its id)
        re.compile(r"\b(bearer|basic)(\s+)(?!esp_[0-9a-f]{16}_\*\*\*)(?!\*\*\*)[^\s'\",;]+", re.IGNORECASE),
        r"\1\2" + REDACTED,
    ),
    (  # name=value, name: value, 'name': 'value', "name": "value" with a secret's name
        re.compile(
            r"""(\b[\w-]*(?:(?:password|passwd|secret|token|api[_-]?key|authorization|credential|cookie|signature)"""
            r"""[\w-]*|auth)['"]?\s*[:=]\s*['"]?)(?!\*\*\*)(?!bearer\b|basic\b)([^\s'",;&})\]\[{]+)""",
            re.IGNORECASE,
        ),
        r"\1" + REDACTED,
    ),
)
_secrets: list[str] = []  # literal secrets of this process, longest first


def register_secret(value: str | None) -> None:
    """Scrub ``value`` from every line this process logs from now on (values under 8
    characters are ignored: too likely to be ordinary text)."""
    if value and len(value) >= 8 and value not in _secrets:
        _secrets.append(value)
        _secrets.sort(key=len, reverse=True)


def redact_text(text: str) -> str:
    """``text`` with every secret it holds replaced by ``***`` (see the module docstring)."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    if not _suspect(text):
        return text
    text = redact_url(text)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _suspect(text: str) -> bool:
    lowered = text.lower()
    for part in _SUSPECT:
        if part in lowered:
            return True
    return False


@functools.lru_cache(maxsize=1024)
def _secret_name(name: str) -> bool:
    return _SECRET_NAME.search(name) is not None


def redact_value(name: str, value: Any) -> Any:
    """A field as it may be logged: hidden when its name says secret, its strings scrubbed,
    dicts and lists walked."""
    if isinstance(value, int | float) and not _secret_name(name):  # bool too: the common case first
        return value
    if _secret_name(name) and value is not None and not isinstance(value, bool | int | float):
        return REDACTED
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {str(k): redact_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [redact_value(name, v) for v in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    return redact_text(str(value))


# --- context -------------------------------------------------------------------------------

_NO_CONTEXT: Mapping[str, Any] = MappingProxyType({})
_context: ContextVar[Mapping[str, Any]] = ContextVar("esp_log_context", default=_NO_CONTEXT)


def fields(**values: Any) -> dict[str, Any]:
    """``extra=`` for a log call: the given fields that are not None."""
    return {k: v for k, v in values.items() if v is not None}


@contextmanager
def log_context(**values: Any) -> Iterator[None]:
    """Every line logged inside the block (in this thread or task) carries these fields."""
    token = _context.set({**_context.get(), **fields(**values)})
    try:
        yield
    finally:
        _context.reset(token)


def bind_log_context(**values: Any) -> None:
    """Every line logged from now on in this asyncio task (or thread, outside of a task)
    carries these fields: for a task that does one thing, such as delivering one chunk."""
    _context.set({**_context.get(), **fields(**values)})


# The attributes every LogRecord has: anything else on a record came in through ``extra=``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    found = dict(_context.get())
    for name, value in vars(record).items():
        if name not in _STANDARD and not name.startswith("_"):
            found[name] = value
    return found


# --- formatters ----------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _second(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


def _timestamp(created: float) -> str:
    """``2026-12-04T10:16:56.962Z`` (the seconds' text is kept: lines come many per second)."""
    seconds = int(created)
    return f"{_second(seconds)}.{int((created - seconds) * 1000):03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, secrets removed."""

    def __init__(self, component: str) -> None:
        super().__init__()
        self.component = component

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": _timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": redact_text(record.getMessage()),
            "pid": record.process,
            "component": self.component,
        }
        for name, value in _extras(record).items():
            if name not in line:
                line[name] = redact_value(name, value)
        if record.exc_info:
            line["exception"] = redact_text(self.formatException(record.exc_info))
        elif record.exc_text:
            line["exception"] = redact_text(record.exc_text)
        if record.stack_info:
            line["stack"] = redact_text(self.formatStack(record.stack_info))
        return orjson.dumps(line, default=str).decode()


class TextFormatter(logging.Formatter):
    """``<ts> <LEVEL> <logger> [<component>] <message> name=value ...``, secrets removed."""

    def __init__(self, component: str) -> None:
        super().__init__()
        self.component = component

    def format(self, record: logging.LogRecord) -> str:
        context = " ".join(f"{k}={redact_value(k, v)}" for k, v in _extras(record).items())
        text = f"{_timestamp(record.created)} {record.levelname} {record.name} [{self.component}] "
        text += record.getMessage() + (f" {context}" if context else "")
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            text += "\n" + self.formatStack(record.stack_info)
        return redact_text(text)


def formatter(component: str, log_format: LogFormat = "json") -> logging.Formatter:
    if log_format not in ("json", "text"):
        raise ValueError(f"log format must be 'json' or 'text', got {log_format!r}")
    return JsonFormatter(component) if log_format == "json" else TextFormatter(component)


# --- installing ----------------------------------------------------------------------------


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to the current ``sys.stderr`` (as :data:`logging.lastResort` does), so a test
    runner's capture works; but to the process's real stderr when Ray Serve redirected
    ``sys.stderr`` into its own logger (``RAY_SERVE_LOG_TO_STDERR=0``), where a JSON line would
    be wrapped in another."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> IO[str]:
        current = sys.stderr
        if type(current).__name__ == "StreamToLogger" and sys.__stderr__ is not None:
            return sys.__stderr__
        return current

    @stream.setter
    def stream(self, _: IO[str]) -> None:
        pass


def configure_process(
    component: str,
    settings: EspSettings | None = None,
    *,
    log_format: LogFormat | None = None,
    log_level: str | None = None,
    stream: IO[str] | None = None,
) -> logging.Handler:
    """Send this process's logs, as ``component``, to stderr (or ``stream``) in the format and at
    the level of ``settings`` (``ESP_LOG_FORMAT``, ``ESP_LOG_LEVEL``; read from the environment
    when no settings are given); ``log_format`` and ``log_level`` win over both. ESP's loggers log
    at that level, everything else at WARNING or above. Calling it again replaces the handler
    installed before. Registers the secrets ``settings`` holds for scrubbing."""
    if settings is None and (log_format is None or log_level is None):
        from runtime.settings import EspSettings

        settings = EspSettings()
    if settings is not None:
        _register_settings_secrets(settings)
    chosen_format = log_format or (settings.log_format if settings else "json")
    level = logging.getLevelName((log_level or (settings.log_level if settings else "INFO")).upper())
    if not isinstance(level, int):
        raise ValueError(f"log level must be DEBUG, INFO, WARNING, ERROR or CRITICAL, got {log_level!r}")
    handler = logging.StreamHandler(stream) if stream is not None else _StderrHandler()
    handler.setFormatter(formatter(component, chosen_format))
    handler._esp = True  # type: ignore[attr-defined]  # what a second call replaces
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_esp", False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(max(level, logging.WARNING))
    for name in ESP_LOGGERS:
        logging.getLogger(name).setLevel(level)
        logging.getLogger(name).propagate = True
    return handler


def configure_from_environment(component: str) -> logging.Handler:
    """:func:`configure_process` with the ``ESP_*`` settings of the environment, for processes
    started without settings (the CLI, the local gateway). Settings that do not validate give
    JSON at INFO: the command reads them again and says what is wrong."""
    from pydantic import ValidationError

    from runtime.settings import EspSettings

    try:
        settings = EspSettings()
    except ValidationError:
        return configure_process(component, log_format="json", log_level="INFO")
    return configure_process(component, settings)


def _register_settings_secrets(settings: EspSettings) -> None:
    if settings.secret is not None:
        register_secret(settings.secret.get_secret_value())
    if settings.redis_url is not None:
        register_secret(_url_password(settings.redis_url.get_secret_value()))


def _url_password(url: str) -> str | None:
    match = re.match(r"[A-Za-z][A-Za-z0-9+.-]*://([^/?#\s]*)@", url)
    return match.group(1).partition(":")[2] or None if match else None
