"""Secret files are 0600 from their first byte, whatever the umask, in 0700 directories."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.security.private_files import private_dir, secret_file, write_private


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def loose_umask() -> Iterator[None]:
    previous = os.umask(0)
    yield
    os.umask(previous)


def test_written_files_and_their_directory_are_private(tmp_path: Path, loose_umask: None):
    path = tmp_path / "state" / "platform.json"
    write_private(path, "{}")
    write_private(path, '{"again": 1}')  # replacing keeps the mode
    assert (path.read_text(), mode(path), mode(path.parent)) == ('{"again": 1}', 0o600, 0o700)
    assert [p.name for p in path.parent.iterdir()] == ["platform.json"]  # no temporary file left


def test_a_secret_is_generated_once_and_kept(tmp_path: Path, loose_umask: None):
    path = tmp_path / "redis" / "password"
    first = secret_file(path)
    assert len(first) >= 40 and secret_file(path) == first
    assert (mode(path), mode(path.parent)) == (0o600, 0o700)


def test_a_loose_secret_file_is_tightened(tmp_path: Path):
    path = tmp_path / "secret"
    path.write_text("kept\n")
    path.chmod(0o644)
    assert (secret_file(path), mode(path)) == ("kept", 0o600)


def test_private_dir_closes_an_existing_directory(tmp_path: Path):
    (tmp_path / "open").mkdir(mode=0o755)
    assert mode(private_dir(tmp_path / "open")) == 0o700
