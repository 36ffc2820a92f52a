"""Partition checkpoints on any pyarrow filesystem: a local directory by default, or an
``s3://``, ``gs://`` or ``hdfs://`` URI in a cluster.

A checkpoint is one msgpack document per virtual partition: the log offset it covers and the
engine snapshot. It is written to a temporary name and moved into place, so a reader sees the
previous checkpoint or the new one, never half of one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
from pyarrow import fs as pafs

FORMAT_VERSION = 1


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
        if raw.get("format") != FORMAT_VERSION:
            raise ValueError(
                f"checkpoint of partition {partition} has format {raw.get('format')}, expected {FORMAT_VERSION}"
            )
        return Checkpoint(raw["partition"], raw["offset"], raw["state"], raw["written_at_ms"])


def _filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    if "://" in uri:
        filesystem, path = pafs.FileSystem.from_uri(uri)
        return filesystem, path.rstrip("/")
    from pathlib import Path

    return pafs.LocalFileSystem(), str(Path(uri).resolve())
