"""The compiled loop of the "a then b" kernel (runtime/rules/pair_scan.py, compiled by Cython at
install) against the same file run as plain Python: the same matches and the same state after
each batch, on any stream cut into any batches. The engine's own tests (test_engine_kernels.py)
check the kernel against the rules evaluated event by event; this checks that installing ESP did
compile the loop, from the source as it stands."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from runtime.rules import pair_scan

SOURCE = Path(pair_scan.__file__).with_name("pair_scan.py")
_spec = importlib.util.spec_from_file_location("pair_scan_as_python", SOURCE)
as_python = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
_spec.loader.exec_module(as_python)  # type: ignore[union-attr]


def test_installing_esp_compiled_the_loop_from_its_current_source():
    compiled = Path(pair_scan.__file__)
    assert compiled.suffix == ".so", f"{compiled} is not compiled: is there a C compiler? ('make setup' builds it)"
    newest_source = max(SOURCE.stat().st_mtime, SOURCE.with_suffix(".pxd").stat().st_mtime)
    assert compiled.stat().st_mtime >= newest_source, "pair_scan changed since it was compiled: run 'make setup'"


event = st.tuples(
    st.integers(0, 3),  # type code: 0 and 1 of no interest, 2 the first step, 3 the second
    st.sampled_from(["c0", "c1"]),
    st.integers(0, 12),  # time, in and out of order
    st.integers(0, 1),  # source code
)


@given(
    st.lists(st.lists(event, max_size=30), max_size=6),
    st.integers(1, 8),
    st.permutations([0, 0, 1, 2]),
)
def test_the_compiled_loop_and_its_python_source_agree(batches, within, roles):
    roles = bytes(roles)
    state = {module: ({}, {}) for module in (pair_scan, as_python)}
    sources = ["web", "app"]
    for number, batch in enumerate(batches):
        kinds = bytes(k for k, _, _, _ in batch)
        customers = [c for _, c, _, _ in batch]
        times = [1_700_000_000_000 + t for _, _, t, _ in batch]  # beyond 32 bits, as real times are
        source_of = bytes(s for _, _, _, s in batch)
        ids = [f"e{number}-{i}" for i in range(len(batch))]
        results = [
            module.scan(roles, kinds, customers, times, sources, source_of, ids, *state[module], within)
            for module in (pair_scan, as_python)
        ]
        assert results[0] == results[1]
        assert state[pair_scan] == state[as_python]


def test_columns_of_different_lengths_raise_instead_of_reading_past_their_end():
    """A damaged log entry must fail as an error the partition runner can quarantine, not crash
    the process: the compiled loop checks its indices."""
    for module in (pair_scan, as_python):
        try:
            times = [5]  # one time for two events
            module.scan(bytes([0, 1, 2]), bytes([1, 2]), ["c0", "c0"], times, ["s"], bytes(2), ["e0", "e1"], {}, {}, 10)
        except IndexError:
            continue
        raise AssertionError(f"{module.__name__} read past a column's end")
