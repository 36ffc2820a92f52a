"""ESP's long-running processes collect young objects far less often than CPython's default."""

import gc
import os

import pytest

from runtime.process_gc import THRESHOLDS, tune_gc


def test_tune_gc_sets_the_pace_freezes_what_exists_and_can_be_called_again() -> None:
    before = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_threshold() == THRESHOLDS
        frozen = gc.get_freeze_count()
        assert frozen > 0  # the modules this process imported are out of every collection
        built_since = [[] for _ in range(1000)]  # what a second freeze would take in
        tune_gc()  # a second call (an actor restarting in the same worker) changes nothing
        # not ==: frozen objects that other threads drop (a test worker's own) leave the count
        assert gc.get_freeze_count() < frozen + len(built_since)
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_free_memory_goes_back_to_the_system() -> None:
    """What a partition actor does once a second: without it, glibc keeps what a large read grew."""
    from runtime import process_gc

    if process_gc._TRIM is None:
        pytest.skip("not glibc: malloc_trim does not exist")

    def rss_mb() -> float:
        return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    blocks = [bytearray(100_000) for _ in range(1000)]  # ~100 MB from glibc's heap, below mmap's threshold
    for block in blocks:
        block[::4096] = b"x" * len(block[::4096])  # touched: resident
    grown = rss_mb()
    del blocks
    process_gc.release_free_memory()
    assert rss_mb() < grown - 50
