"""Partition checkpoints on any pyarrow filesystem: a local directory by default, or an
``s3://``, ``gs://`` or ``hdfs://`` URI in a cluster. A local directory is written with the
standard library: pyarrow (~70 MB resident in every partition actor) is imported only for a URI.

A checkpoint is one msgpack document per virtual partition: the log offset it covers and the
engine snapshot. It is written to a temporary name and moved into place, so a reader sees the
previous checkpoint or the new one, never half of one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import msgspec

# 2: the reorder buffer's held events as log entries (runtime/log/eventtime.py), not rows. A
# version that reads only 1 refuses a 2 rather than resuming without the held events.
FORMAT_VERSION = 2
READS = (1, 2)  # the formats this version resumes from


@dataclass(frozen=True, slots=True)
class Checkpoint:
    partition: int
    offset: str  # last log entry id whose effects the state includes ('0' = none)
    state: dict[str, Any]
    written_at_ms: int


class CheckpointStore:
    def __init__(self, uri: str) -> None:
        self._fs, self._root = _filesystem(uri)
        self._fs.create_dir(self._root, recursive=True)

    def _path(self, partition: int) -> str:
        return f"{self._root}/p{partition:04d}.ckpt"

    def save(self, checkpoint: Checkpoint) -> None:
        body = msgspec.msgpack.encode(
            {
                "format": FORMAT_VERSION,
                "partition": checkpoint.partition,
                "offset": checkpoint.offset,
                "state": checkpoint.state,
                "written_at_ms": checkpoint.written_at_ms,
            }
        )
        final = self._path(checkpoint.partition)
        temporary = f"{final}.tmp"
        with self._fs.open_output_stream(temporary) as out:
            out.write(body)
        self._fs.move(temporary, final)

    def load(self, partition: int) -> Checkpoint | None:
        try:
            with self._fs.open_input_stream(self._path(partition)) as stream:
                raw = msgspec.msgpack.decode(stream.readall())
        except FileNotFoundError:
            return None
        if raw.get("format") not in READS:
            raise ValueError(
                f"checkpoint of partition {partition} has format {raw.get('format')}, expected one of {READS}"
            )
        return Checkpoint(raw["partition"], raw["offset"], raw["state"], raw["written_at_ms"])


class LocalFiles:
    """The part of pyarrow's filesystem interface checkpoints use, on a local directory."""

    def create_dir(self, path: str, *, recursive: bool = True) -> None:
        Path(path).mkdir(parents=recursive, exist_ok=True)

    def open_output_stream(self, path: str) -> IO[bytes]:
        return open(path, "wb")  # the caller closes it (with)

    def open_input_stream(self, path: str) -> _Input:
        return _Input(path)

    def move(self, src: str, dest: str) -> None:
        os.replace(src, dest)  # atomic on one filesystem: a reader sees the old file or the new one


class _Input:
    def __init__(self, path: str) -> None:
        self._file = open(path, "rb")  # closed on exit

    def __enter__(self) -> _Input:
        return self

    def __exit__(self, *exc: object) -> None:
        self._file.close()

    def readall(self) -> bytes:
        return self._file.read()


def _filesystem(uri: str) -> tuple[Any, str]:
    if "://" in uri:
        from pyarrow import fs as pafs

        filesystem, path = pafs.FileSystem.from_uri(uri)
        return filesystem, path.rstrip("/")
    return LocalFiles(), str(Path(uri).resolve())
