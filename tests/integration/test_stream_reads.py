"""Reading a consumer group's new entries over several streams (``read_group``, how partition
actors read their partitions' logs and the contact-policy stage its request streams) against a
real Redis: a reader woken by an append to many streams gets all of them in one read."""

from __future__ import annotations

import threading
import time

from runtime.log.streams import read_group, text

STREAMS = [f"log:{p}" for p in range(8)]
APPEND_TO_ALL = "for _, s in ipairs(KEYS) do redis.call('XADD', s, '*', 'f', ARGV[1]) end"


def groups(client) -> None:
    for stream in STREAMS:
        client.xgroup_create(stream, "g", id="$", mkstream=True)


def entries(reply) -> dict[str, int]:
    return {text(stream): len(items) for stream, items in reply}


def test_a_blocked_reader_gets_every_stream_one_script_appended_to(redis_client):
    groups(redis_client)
    got: list = []
    reader = threading.Thread(
        target=lambda: got.append(read_group(redis_client, "g", "me", STREAMS, count=10, block_ms=5000))
    )
    reader.start()
    time.sleep(0.3)  # blocked by now
    redis_client.eval(APPEND_TO_ALL, len(STREAMS), *STREAMS, "x")
    reader.join(timeout=10)
    assert entries(got[0]) == dict.fromkeys(STREAMS, 1)  # Redis alone answers with the first stream


def test_what_is_there_comes_at_once_and_nothing_is_read_twice(redis_client):
    groups(redis_client)
    redis_client.eval(APPEND_TO_ALL, 3, *STREAMS[:3], "a")
    redis_client.xadd(STREAMS[0], {"f": "b"})
    assert entries(read_group(redis_client, "g", "me", STREAMS, count=10, block_ms=5000)) == {
        STREAMS[0]: 2,
        STREAMS[1]: 1,
        STREAMS[2]: 1,
    }
    redis_client.xadd(STREAMS[5], {"f": "c"})  # alone, without waiting
    assert entries(read_group(redis_client, "g", "me", STREAMS, count=10, block_ms=5000)) == {STREAMS[5]: 1}
    started = time.monotonic()
    assert read_group(redis_client, "g", "me", STREAMS, count=10, block_ms=200) == []
    assert time.monotonic() - started >= 0.15  # it waited for new entries


def test_count_bounds_each_stream(redis_client):
    groups(redis_client)
    for n in range(5):
        redis_client.eval(APPEND_TO_ALL, 2, *STREAMS[:2], str(n))
    assert entries(read_group(redis_client, "g", "me", STREAMS, count=3, block_ms=100)) == {
        STREAMS[0]: 3,
        STREAMS[1]: 3,
    }
    assert entries(read_group(redis_client, "g", "me", STREAMS, count=3, block_ms=100)) == {
        STREAMS[0]: 2,
        STREAMS[1]: 2,
    }
