"""When the embedded Redis's keeper rewrites the AOF: only at a lull, only once it has grown."""

from __future__ import annotations

from runtime.dev.redis_keeper import LullRewrite

MB = 2**20


def persistence(size: int, base: int = 0, **busy: int) -> dict[str, str]:
    return {"aof_current_size": str(size), "aof_base_size": str(base), **{k: str(v) for k, v in busy.items()}}


def test_a_grown_aof_is_rewritten_once_ingestion_goes_quiet():
    lull = LullRewrite(grown_bytes=64 * MB, quiet_bytes=1 * MB)
    assert not lull.due(persistence(100 * MB))  # the first look has nothing to compare with
    assert not lull.due(persistence(110 * MB))  # still growing fast
    assert lull.due(persistence(110 * MB + MB // 2))


def test_an_aof_is_rewritten_once_it_grew_by_as_much_as_it_held_at_the_last_rewrite():
    """A rewrite serializes the whole data set: never more often than the data written since."""
    lull = LullRewrite(grown_bytes=64 * MB, quiet_bytes=2 * MB)
    lull.due(persistence(300 * MB, base=250 * MB))
    assert not lull.due(persistence(300 * MB, base=250 * MB))  # 50 MB grown: under 64 MB
    assert not lull.due(persistence(499 * MB, base=250 * MB))  # busy
    assert not lull.due(persistence(499 * MB, base=250 * MB))  # quiet, but 249 MB grown on a 250 MB base
    assert lull.due(persistence(500 * MB, base=250 * MB))


def test_no_rewrite_while_redis_forks_already():
    lull = LullRewrite(grown_bytes=1 * MB, quiet_bytes=1 * MB)
    lull.due(persistence(10 * MB))
    for busy in ("aof_rewrite_in_progress", "aof_rewrite_scheduled", "rdb_bgsave_in_progress"):
        assert not lull.due(persistence(10 * MB, **{busy: 1}))
    assert lull.due(persistence(10 * MB))
