"""When the embedded Redis's keeper rewrites the AOF: only at a lull, only once it has grown."""

from __future__ import annotations

from runtime.dev.redis_keeper import LullRewrite

MB = 2**20


def persistence(size: int, base: int = 0, **busy: int) -> dict[str, str]:
    return {"aof_current_size": str(size), "aof_base_size": str(base), **{k: str(v) for k, v in busy.items()}}


def looks(lull: LullRewrite, *sizes: int, base: int = 0) -> list[bool]:
    return [lull.due(persistence(size, base)) for size in sizes]


def test_a_grown_aof_is_rewritten_after_three_quiet_seconds():
    lull = LullRewrite(grown_bytes=64 * MB, quiet_bytes=1 * MB, quiet_looks=3)
    # the first look has nothing to compare with; then growing fast, then quiet
    assert looks(lull, 100 * MB, 110 * MB, 120 * MB) == [False, False, False]
    assert looks(lull, 120 * MB, 120 * MB + MB // 2, 120 * MB + MB // 2) == [False, False, True]
    assert looks(lull, 120 * MB + MB // 2) == [False]  # once


def test_a_short_pause_between_bursts_is_not_a_lull():
    lull = LullRewrite(grown_bytes=64 * MB, quiet_bytes=1 * MB, quiet_looks=3)
    assert looks(lull, 100 * MB, 100 * MB, 100 * MB, 110 * MB, 110 * MB, 110 * MB) == [False] * 6
    assert looks(lull, 110 * MB) == [True]


def test_an_aof_is_rewritten_once_it_grew_by_as_much_as_it_held_at_the_last_rewrite():
    """A rewrite serializes the whole data set: never more often than the data written since."""
    lull = LullRewrite(grown_bytes=64 * MB, quiet_bytes=1 * MB, quiet_looks=1)
    assert looks(lull, 300 * MB, 300 * MB, base=250 * MB) == [False, False]  # 50 MB grown: under 64 MB
    assert looks(lull, 499 * MB, 499 * MB, base=250 * MB) == [False, False]  # 249 MB grown on a 250 MB base
    assert looks(lull, 500 * MB, 500 * MB, base=250 * MB) == [False, True]


def test_no_rewrite_while_redis_forks_already():
    lull = LullRewrite(grown_bytes=1 * MB, quiet_bytes=1 * MB, quiet_looks=1)
    lull.due(persistence(10 * MB))
    for busy in ("aof_rewrite_in_progress", "aof_rewrite_scheduled", "rdb_bgsave_in_progress"):
        assert not lull.due(persistence(10 * MB, **{busy: 1}))
    assert lull.due(persistence(10 * MB))
