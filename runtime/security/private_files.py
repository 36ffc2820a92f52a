"""Files under the state directory that hold secrets (the embedded Redis password and config,
Ray's token, ``platform.json``): created mode 0600 from the first byte, whatever the umask, in
directories only their owner can enter (0700). Pure: no Ray, no Redis."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

REDIS_PASSWORD_FILE = "password"  # in the embedded Redis's data directory


def private_dir(path: Path) -> Path:
    """``path`` created if missing and closed to everyone but its owner (mode 0700)."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def write_private(path: Path, text: str) -> None:
    """Replace ``path`` atomically with a file only its owner can read: the text goes to a
    temporary file opened 0600, then renamed over ``path``, so no reader ever sees a looser
    mode or half a file."""
    private_dir(path.parent)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        os.fchmod(out.fileno(), 0o600)  # the umask may have taken bits off, never added any
        out.write(text)
    os.replace(temporary, path)


def read_secret(path: Path) -> str | None:
    """The secret kept in ``path``, or None when there is none yet."""
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None


def secret_file(path: Path) -> str:
    """The secret in ``path``, generated (URL-safe, 256 bits) on first use. Two processes that
    race get the same secret: the file appears by an atomic link, which fails if it exists."""
    existing = read_secret(path)
    if existing is not None:
        path.chmod(0o600)  # a file from an older ESP may have the umask's mode
        return existing
    candidate = path.with_name(f".{path.name}.{os.getpid()}.new")
    write_private(candidate, secrets.token_urlsafe(32))
    try:
        os.link(candidate, path)
    except FileExistsError:
        pass
    finally:
        candidate.unlink()
    secret = read_secret(path)
    if secret is None:
        raise OSError(f"{path} is empty: remove it and a new secret is generated")
    return secret


def local_redis_url(port: int, password: str | None) -> str:
    """The URL of the embedded Redis on loopback, with its password when it has one."""
    credentials = f":{password}@" if password else ""
    return f"redis://{credentials}127.0.0.1:{port}/0"
