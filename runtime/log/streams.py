"""Small helpers for Redis streams: reading a consumer group's new entries, and the values
read back."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the pure modules that read entry ids import this one without Redis
    import redis


def text(value: Any) -> str:
    """A Redis reply (bytes or str) as str."""
    return value.decode() if isinstance(value, bytes) else str(value)


def entry_id_key(entry_id: str) -> tuple[int, int]:
    """A stream entry id ``<ms>-<seq>`` as a sortable pair."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def read_group(
    client: redis.Redis,
    group: str,
    consumer: str,
    streams: list[str],
    *,
    count: int,
    block_ms: int,
    noack: bool = False,
) -> list[Any]:
    """The group's new entries in ``streams`` (at most ``count`` per stream), waiting up to
    ``block_ms`` when none has any; the reply as redis-py gives it, ``[[stream, entries], ...]``.

    A blocked XREADGROUP over several streams is woken by the first stream that gets an entry
    and answers with that stream alone, even when one script appended to all of them at once
    (ingestion's append does, one entry per partition). Taking that answer for all there was,
    a partition actor ran a whole step (rules, publication round trip) for one entry of a
    request and read the others only in its next step. So an answer with one stream of several
    is followed at once by a read of the others that does not wait."""
    reply = client.xreadgroup(group, consumer, dict.fromkeys(streams, ">"), count=count, block=block_ms, noack=noack)
    if reply and len(reply) == 1 and len(streams) > 1:
        woken = text(reply[0][0])
        others = dict.fromkeys((s for s in streams if s != woken), ">")
        reply += client.xreadgroup(group, consumer, others, count=count, noack=noack) or []
    return reply or []
