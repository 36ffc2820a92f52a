"""``esp identities`` and ``esp consents``: load and query the identity and consent stores.

These commands talk to Redis directly (``--redis-url``, env ``ESP_REDIS_URL``), not to the HTTP
API: bulk loads of millions of rows go straight to the store in batches. The lead registers
the groups on the main ``esp`` group::

    from runtime.cli.data import consents, identities
    main.add_command(identities)
    main.add_command(consents)
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import click

from runtime.errors import EspError, InputError
from runtime.events.envelope import parse_time_ms
from runtime.security.redact import redact_url


def local_redis_url() -> str:
    """The embedded Redis of the local ESP (ESP_STATE_DIR, ESP_REDIS_PORT), with its password."""
    from runtime.settings import EspSettings

    return EspSettings().effective_redis_url()


redis_url_option = click.option(
    "--redis-url",
    envvar="ESP_REDIS_URL",
    default=local_redis_url,
    show_default="the embedded Redis of the local ESP",  # never the URL: it holds the password
    help="Redis holding the stores (env ESP_REDIS_URL).",
)
batch_size_option = click.option(
    "--batch-size", default=50_000, show_default=True, type=click.IntRange(min=1), help="Rows per Redis round trip."
)
input_file = click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))


def _fail(exc: EspError) -> NoReturn:
    click.echo(json.dumps({"error": exc.to_dict()}), err=True)
    sys.exit(2)


@contextmanager
def _errors() -> Iterator[None]:
    """EspErrors, and Redis being unreachable, become one JSON line on stderr and exit 2."""
    import redis

    try:
        yield
    except EspError as exc:
        _fail(exc)
    except redis.ConnectionError as exc:
        _fail(EspError(f"cannot reach Redis: {exc}", reason="redis_unavailable"))
    except redis.RedisError as exc:
        _fail(EspError(f"Redis error: {exc}", reason="redis_error"))


def _client(redis_url: str) -> Any:
    from runtime.redis_client import connect

    try:
        return connect(redis_url, socket_connect_timeout=5)
    except ValueError as exc:
        raise InputError(f"bad --redis-url {redact_url(redis_url)!r}: {exc}", reason="invalid_redis_url") from exc


def _progress(what: str) -> Callable[[int, int], None]:
    started = time.monotonic()

    def report(done: int, total: int) -> None:
        elapsed = max(time.monotonic() - started, 1e-9)
        click.echo(f"{what}: {done:,}/{total:,} rows ({done / elapsed:,.0f} rows/s)", err=True)

    return report


def _import(kind: str, file: Path, redis_url: str, batch_size: int) -> None:
    with _errors():
        client = _client(redis_url)
        started = time.monotonic()
        if kind == "identities":
            from runtime.events.identity import IdentityStore, import_parquet

            rows = import_parquet(IdentityStore(client), file, batch_size=batch_size, progress=_progress(kind))
        else:
            from runtime.events.consent import ConsentStore
            from runtime.events.consent import import_parquet as import_consents

            rows = import_consents(ConsentStore(client), file, batch_size=batch_size, progress=_progress(kind))
        seconds = time.monotonic() - started
    click.echo(f"imported {rows:,} {kind} rows from {file} in {seconds:.1f}s ({rows / max(seconds, 1e-9):,.0f} rows/s)")


@click.group()
def identities() -> None:
    """Phone numbers and IMEIs linked to customer ids (in Redis)."""


@identities.command("import")
@input_file
@redis_url_option
@batch_size_option
def import_identities(file: Path, redis_url: str, batch_size: int) -> None:
    """Load links from a Parquet FILE: columns customer, phone and/or imei, optional
    valid_from / valid_to (epoch ms, timestamps or RFC 3339)."""
    _import("identities", file, redis_url, batch_size)


@identities.command("resolve")
@click.argument("kind", type=click.Choice(["phone", "imei", "customer"]))
@click.argument("identifiers", nargs=-1, required=True)
@click.option("--at", "at", help="Resolve as of this time (RFC 3339 or epoch ms); default now.")
@redis_url_option
def resolve(kind: str, identifiers: tuple[str, ...], at: str | None, redis_url: str) -> None:
    """Print the customer of each identifier, one JSON line each (customer null if unknown)."""
    from runtime.events.identity import IdentityStore

    with _errors():
        at_ms = None
        if at is not None:
            at_ms = parse_time_ms(int(at) if at.lstrip("-").isdigit() else at)
            if at_ms is None:
                raise InputError(f"--at: not an RFC 3339 time or epoch milliseconds: {at!r}", reason="invalid_time")
        customers = IdentityStore(_client(redis_url)).resolve(kind, list(identifiers), at_ms)
    for identifier, customer in zip(identifiers, customers, strict=True):
        click.echo(json.dumps({kind: identifier, "customer": customer}))


@click.group()
def consents() -> None:
    """Customers' opt-in flags, global and per purpose (in Redis)."""


@consents.command("import")
@input_file
@redis_url_option
@batch_size_option
def import_consents(file: Path, redis_url: str, batch_size: int) -> None:
    """Load consent records from a Parquet FILE: columns customer, opted_in, optional purpose
    (null = global) and at (when given; default now)."""
    _import("consents", file, redis_url, batch_size)


@consents.command("check")
@click.argument("customers", nargs=-1, required=True)
@click.option("--purpose", help="Purpose to check (default: the global flag).")
@redis_url_option
def check(customers: tuple[str, ...], purpose: str | None, redis_url: str) -> None:
    """Print whether each customer has opted in, one JSON line each."""
    from runtime.events.consent import ConsentStore

    with _errors():
        flags = ConsentStore(_client(redis_url)).opted_in(list(customers), purpose)
    for customer, flag in zip(customers, flags, strict=True):
        click.echo(json.dumps({"customer": customer, "purpose": purpose, "opted_in": flag}))
