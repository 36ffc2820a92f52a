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
"""

from __future__ import annotations

import gc

THRESHOLDS = (50_000, 20, 100)  # young allocations, then young and middle collections per next older one


def tune_gc() -> None:
    """Collect what starting left behind, freeze the rest, and set ESP's pace (idempotent)."""
    if gc.get_threshold() == THRESHOLDS:
        return
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
