"""The dispatcher's shared delivery bookkeeping (``_Recorder``): the attempts that end while a
round trip is under way go together in the next one, each attempt learns its own outcome, and
neither a failed round trip nor a cancelled attempt leaves another waiting for good."""

from __future__ import annotations

import asyncio

import pytest

from runtime.subscriptions.dispatch import _Recorder


class FakeRedis:
    """Answers each EVAL once ``release`` is set, with what ``answer`` says."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.release = asyncio.Event()
        self.answer: object = [0, 0]

    async def execute_command(self, *args: object) -> object:
        self.calls.append(args)
        await self.release.wait()
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def acked(call: tuple) -> list[str]:
    n_keys = call[2]
    args = call[3 + n_keys :]
    return list(args[4 : 4 + int(args[3])])


def test_attempts_that_end_during_a_round_trip_share_the_next():
    async def scenario() -> FakeRedis:
        redis = FakeRedis()
        recorder = _Recorder(redis, "s")
        first = asyncio.create_task(recorder.record(["t:1"], b"n1", ["1-0"], 60))
        await asyncio.sleep(0)
        others = [asyncio.create_task(recorder.record([f"t:{i}"], b"n", [f"{i}-0"], 60)) for i in (2, 3)]
        await asyncio.sleep(0)
        redis.release.set()
        await asyncio.wait_for(asyncio.gather(first, *others), 5)
        return redis

    redis = asyncio.run(scenario())
    assert [acked(c) for c in redis.calls] == [["1-0"], ["2-0", "3-0"]]


def test_a_failed_round_trip_fails_every_attempt_in_it_and_the_next_one_goes_on():
    async def scenario() -> list[BaseException | None]:
        redis = FakeRedis()
        recorder = _Recorder(redis, "s")
        redis.answer = ConnectionError("redis gone")
        tasks = [asyncio.create_task(recorder.record([f"t:{i}"], b"n", [f"{i}-0"], 60)) for i in range(3)]
        await asyncio.sleep(0)
        redis.release.set()
        done = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 5)
        redis.answer = [1, 0]
        await asyncio.wait_for(recorder.record(["t:9"], b"n", ["9-0"], 60), 5)
        return done

    outcomes = asyncio.run(scenario())
    assert [type(o) for o in outcomes] == [ConnectionError] * 3


def test_a_cancelled_attempt_does_not_hold_the_others():
    async def scenario() -> None:
        redis = FakeRedis()
        recorder = _Recorder(redis, "s")
        first = asyncio.create_task(recorder.record(["t:1"], b"n", ["1-0"], 60))
        await asyncio.sleep(0)
        waiting = [asyncio.create_task(recorder.record([f"t:{i}"], b"n", [f"{i}-0"], 60)) for i in (2, 3)]
        await asyncio.sleep(0)
        waiting[0].cancel()
        redis.release.set()
        await asyncio.wait_for(asyncio.gather(first, waiting[1]), 5)
        with pytest.raises(asyncio.CancelledError):
            await waiting[0]

    asyncio.run(scenario())
