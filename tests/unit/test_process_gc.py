"""ESP's long-running processes collect young objects far less often than CPython's default."""

import gc

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
