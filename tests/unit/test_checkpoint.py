"""runtime.log.checkpoint: partition checkpoints on a pyarrow filesystem (a local temp dir here)."""

from __future__ import annotations

import msgspec
import pytest
from pyarrow import fs as pafs

from runtime.events.envelope import Event
from runtime.log.checkpoint import FORMAT_VERSION, Checkpoint, CheckpointStore
from runtime.rules import PartitionEngine, compile_rule

STATE = {
    "customers": {"c1": {"r": [[10, 20], [["src", "e1"], ["src", "e2"]], 0]}},
    "rules": {"r": 3},
    "watermark": 20,
}


def test_save_then_load_round_trips(tmp_path):
    store = CheckpointStore(str(tmp_path / "ckpt"))
    store.save(Checkpoint(7, "1700000000000-3", STATE, 1_700_000_000_123))
    assert store.load(7) == Checkpoint(7, "1700000000000-3", STATE, 1_700_000_000_123)


def test_missing_checkpoint_is_none(tmp_path):
    store = CheckpointStore(str(tmp_path))
    assert store.load(0) is None


def test_partitions_are_separate_files(tmp_path):
    store = CheckpointStore(str(tmp_path))
    store.save(Checkpoint(1, "1-0", {"a": 1}, 1))
    store.save(Checkpoint(12, "2-0", {"b": 2}, 2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p0001.ckpt", "p0012.ckpt"]
    assert store.load(1).state == {"a": 1}
    assert store.load(12).state == {"b": 2}
    assert store.load(2) is None


def test_a_new_save_replaces_the_old_and_leaves_no_temporary(tmp_path):
    store = CheckpointStore(str(tmp_path))
    store.save(Checkpoint(3, "1-0", {"v": 1}, 1))
    store.save(Checkpoint(3, "5-0", {"v": 2}, 2))
    assert store.load(3) == Checkpoint(3, "5-0", {"v": 2}, 2)
    assert [p.name for p in tmp_path.iterdir()] == ["p0003.ckpt"]


def test_creates_missing_directories(tmp_path):
    root = tmp_path / "a" / "b" / "c"
    CheckpointStore(str(root)).save(Checkpoint(0, "0", {}, 0))
    assert (root / "p0000.ckpt").is_file()


def test_relative_path_is_resolved_against_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = CheckpointStore("state/checkpoints")
    store.save(Checkpoint(5, "9-9", {"x": [1, 2]}, 9))
    monkeypatch.chdir("/")
    assert store.load(5) == Checkpoint(5, "9-9", {"x": [1, 2]}, 9)
    assert (tmp_path / "state" / "checkpoints" / "p0005.ckpt").is_file()


def test_file_uri(tmp_path):
    store = CheckpointStore(f"file://{tmp_path}/uri/")
    store.save(Checkpoint(2, "3-1", {"k": "v"}, 4))
    assert (tmp_path / "uri" / "p0002.ckpt").is_file()
    assert CheckpointStore(f"file://{tmp_path}/uri").load(2) == Checkpoint(2, "3-1", {"k": "v"}, 4)


def test_file_is_msgpack_with_a_format_version(tmp_path):
    CheckpointStore(str(tmp_path)).save(Checkpoint(4, "8-0", {"s": 1}, 5))
    raw = msgspec.msgpack.decode((tmp_path / "p0004.ckpt").read_bytes())
    assert raw == {"format": 2, "partition": 4, "offset": "8-0", "state": {"s": 1}, "written_at_ms": 5}


def test_a_checkpoint_of_the_format_before_still_loads(tmp_path):
    body = {"format": 1, "partition": 4, "offset": "8-0", "state": {"s": 1}, "written_at_ms": 5}
    (tmp_path / "p0004.ckpt").write_bytes(msgspec.msgpack.encode(body))
    assert CheckpointStore(str(tmp_path)).load(4) == Checkpoint(4, "8-0", {"s": 1}, 5)


def test_unknown_format_is_refused(tmp_path):
    body = {"format": FORMAT_VERSION + 1, "partition": 4, "offset": "0", "state": {}, "written_at_ms": 0}
    (tmp_path / "p0004.ckpt").write_bytes(msgspec.msgpack.encode(body))
    with pytest.raises(ValueError, match=f"format {FORMAT_VERSION + 1}"):
        CheckpointStore(str(tmp_path)).load(4)


class _FailingWrites:
    """A filesystem whose output streams die half-way: a crash during save."""

    def __init__(self, real: pafs.FileSystem) -> None:
        self._real = real

    def __getattr__(self, name):
        return getattr(self._real, name)

    def open_output_stream(self, path):
        real = self._real

        class Stream:
            def __enter__(self):
                self._out = real.open_output_stream(path)
                return self

            def write(self, data):
                self._out.write(data[: len(data) // 2])
                raise OSError("disk went away")

            def __exit__(self, *exc):
                self._out.close()
                return False

        return Stream()


def test_a_crash_during_save_leaves_the_previous_checkpoint(tmp_path):
    store = CheckpointStore(str(tmp_path))
    store.save(Checkpoint(6, "1-0", STATE, 1))
    store._fs = _FailingWrites(store._fs)  # inject the crash (private seam, test only)
    with pytest.raises(OSError, match="disk went away"):
        store.save(Checkpoint(6, "2-0", {"customers": {}}, 2))
    assert CheckpointStore(str(tmp_path)).load(6) == Checkpoint(6, "1-0", STATE, 1)


def test_engine_state_survives_a_checkpoint(tmp_path):
    rule = compile_rule(
        {"kind": "rule", "name": "r", "when": {"event": "a", "count": 3, "within": "1m"}, "then": [{"emit": "x"}]}
    )

    def ev(n: int, time: int) -> Event:
        return Event(f"e{n}", "a", time, "c1", "c1", "src", {}, 0)

    engine = PartitionEngine([rule])
    assert engine.on_events([ev(1, 1000), ev(2, 2000)]) == []
    CheckpointStore(str(tmp_path)).save(Checkpoint(9, "42-0", engine.snapshot(), 0))

    loaded = CheckpointStore(str(tmp_path)).load(9)
    assert loaded is not None and loaded.offset == "42-0"
    resumed = PartitionEngine([rule], resume_state=loaded.state)
    outputs = resumed.on_events([ev(3, 3000)])
    assert [[r["id"] for r in o.event["data"]["events"]] for o in outputs] == [["e1", "e2", "e3"]]
