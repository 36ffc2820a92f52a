"""The garbage collector's pace in ESP's long-running processes (actors, API replicas).

CPython runs a young-generation collection every 700 container allocations by default, and an
older one every ten of those. A partition actor allocates a few containers per event (partial
matches, refs, outputs) and holds every active customer's state, so at tens of thousands of
events per second the default pace spends a third of the rule engine's time walking objects
that are not garbage: ESP's state has no reference cycles to collect, only the occasional
exception traceback. ``tune_gc`` collects young objects every 50,000 allocations and older
ones rarely, and freezes what the process built while starting (modules, settings) out of
every collection. Memory stays bounded: what is garbage without a cycle is freed at once by
reference counting, whatever the pace.

Freed memory is not given back to the system by itself: glibc's allocator keeps the heap it
grew for a burst (a partition actor decoding a large read) for the next one.
``release_free_memory`` hands it back; the partition actors call it once a second.
"""

from __future__ import annotations

import ctypes
import gc

THRESHOLDS = (50_000, 20, 100)  # young allocations, then young and middle collections per next older one


def tune_gc() -> None:
    """Collect what starting left behind, freeze the rest, and set ESP's pace (idempotent)."""
    if gc.get_threshold() == THRESHOLDS:
        return
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)


# the process's own symbols, libc's among them: no library search (find_library runs ldconfig)
_TRIM = getattr(ctypes.CDLL(None), "malloc_trim", None)  # None: not glibc, nothing to trim


def release_free_memory() -> None:
    """Give the heap's free pages back to the system (glibc's ``malloc_trim``; a no-op elsewhere)."""
    if _TRIM is not None:
        _TRIM(0)
