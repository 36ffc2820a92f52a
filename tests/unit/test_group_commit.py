"""Group commit (runtime/log/group_commit.py) on both logs (in memory and on a real
redis-server): requests that arrive while an append runs go in the next one together, and each
request still gets exactly the answer it would get alone, with every id logged once."""

from __future__ import annotations

import random
import threading
import time
from typing import Any

import pytest

from runtime.events.envelope import Event
from runtime.log.group_commit import GroupCommit
from runtime.log.memory import MemoryPartitionLog
from runtime.log.partition_log import Appended, PartitionLog

NOW = 1_767_225_600_000  # 2026-01-01T00:00:00Z
PARTITIONS = 4


@pytest.fixture(params=["memory", "redis"])
def log(request: pytest.FixtureRequest) -> Any:
    if request.param == "memory":
        return MemoryPartitionLog(horizon_s=3600)
    return PartitionLog(request.getfixturevalue("redis_client"), horizon_s=3600)


class Slow:
    """A log whose appends take ``pause_s`` and are counted, so that concurrent requests queue."""

    def __init__(self, log: Any, pause_s: float = 0.05) -> None:
        self.log, self.pause_s, self.calls = log, pause_s, []
        self._lock = threading.Lock()

    def append(self, by_partition: dict[int, list[Event]], **kwargs: Any) -> list[Appended]:
        time.sleep(self.pause_s)
        with self._lock:  # the in-memory log is not thread-safe; Redis is, but one at a time is the point
            self.calls.append(sum(len(e) for e in by_partition.values()))
            return self.log.append(by_partition, **kwargs)


def ev(event_id: str, source: str = "crm") -> Event:
    n = int(event_id.rsplit("-", 1)[-1]) if event_id[-1].isdigit() else 0
    return Event(event_id, "app.login", NOW, f"c{n}", f"c{n}", source, {"n": n}, NOW)


def request_of(ids: list[str], source: str = "crm") -> dict[int, list[Event]]:
    by_partition: dict[int, list[Event]] = {}
    for event_id in dict.fromkeys(ids):  # unique within a request, as the ingestor makes them
        by_partition.setdefault(hash(event_id) % PARTITIONS, []).append(ev(event_id, source))
    return by_partition


def logged_ids(log: Any) -> list[str]:
    return [e.id for p in range(PARTITIONS) for entry in log.read_range(p, "0", 10_000) for e in entry.events]


def accepted(by_partition: dict[int, list[Event]], answer: list[Appended]) -> set[str]:
    dups = {a.partition: set(a.duplicates) for a in answer}
    return {e.id for p, events in by_partition.items() for i, e in enumerate(events) if i not in dups.get(p, ())}


def run_concurrently(group: GroupCommit, requests: list[dict[int, list[Event]]], **kwargs: Any) -> list[Any]:
    answers: list[Any] = [None] * len(requests)
    start = threading.Barrier(len(requests))

    def send(i: int) -> None:
        start.wait()
        try:
            answers[i] = group.append(requests[i], now_ms=NOW, config_version=1, **kwargs)
        except Exception as exc:  # the test looks at what each request got
            answers[i] = exc

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(requests))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads), "a request never got its answer"
    return answers


def test_a_request_alone_gets_what_the_log_answers(log: Any) -> None:
    alone = MemoryPartitionLog(horizon_s=3600)
    group = GroupCommit(log)
    for ids in (["a-1", "a-2", "a-3"], ["a-2", "a-4", "a-1"], ["a-5"]):
        expected = alone.append(request_of(ids), now_ms=NOW, config_version=1)
        got = group.append(request_of(ids), now_ms=NOW, config_version=1)
        assert [(a.partition, a.duplicates, a.entry_id is None) for a in got] == [
            (a.partition, a.duplicates, a.entry_id is None) for a in expected
        ]
    assert group.append({}, now_ms=NOW) == []
    assert sorted(logged_ids(log)) == ["a-1", "a-2", "a-3", "a-4", "a-5"]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_concurrent_requests_go_together_and_each_id_is_accepted_once(log: Any, seed: int) -> None:
    rnd = random.Random(seed)
    log.append(request_of([f"x-{i}" for i in range(0, 60, 3)]), now_ms=NOW, config_version=1)  # seen before
    slow = Slow(log)
    group = GroupCommit(slow)
    requests = [request_of([f"x-{rnd.randrange(60)}" for _ in range(rnd.randint(1, 25))]) for _ in range(12)]
    answers = run_concurrently(group, requests)
    assert len(slow.calls) < len(requests)  # they went together
    winners: dict[str, int] = {}
    for i, (request, answer) in enumerate(zip(requests, answers, strict=True)):
        assert {a.partition for a in answer} == set(request)
        for event_id in accepted(request, answer):
            assert event_id not in winners, f"{event_id} accepted by requests {winners[event_id]} and {i}"
            winners[event_id] = i
    sent = {e.id for request in requests for events in request.values() for e in events}
    assert set(winners) == sent - {f"x-{i}" for i in range(0, 60, 3)}  # every new id, by one request
    assert sorted(logged_ids(log)) == sorted([f"x-{i}" for i in range(0, 60, 3)] + list(winners))  # once each
    for request, answer in zip(requests, answers, strict=True):  # an entry id only where something went in
        for a in answer:
            assert (a.entry_id is None) == (len(a.duplicates) == len(request[a.partition]))


def test_every_event_is_logged_under_at_least_the_config_version_its_request_read(log: Any) -> None:
    """Invariant 7: a group's entries carry the newest version among its requests (a request is
    answered after the append, so after every request of its group read its version)."""
    slow = Slow(log)
    group = GroupCommit(slow)
    requests = [request_of([f"v{r}-{i}" for i in range(3)]) for r in range(12)]
    answers: list[Any] = [None] * len(requests)
    start = threading.Barrier(len(requests))

    def send(r: int) -> None:
        start.wait()
        answers[r] = group.append(requests[r], now_ms=NOW, config_version=r + 1)

    threads = [threading.Thread(target=send, args=(r,)) for r in range(len(requests))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(slow.calls) < len(requests)  # they went together
    for p in range(PARTITIONS):
        for entry in log.read_range(p, "0", 100):
            for event in entry.events:
                assert entry.config_version >= int(event.id[1:].split("-")[0]) + 1, (event.id, entry.config_version)


def test_a_request_keeps_its_order_within_a_partition(log: Any) -> None:
    slow = Slow(log)
    group = GroupCommit(slow)
    requests = [{0: [ev(f"r{r}-{i}") for i in range(20)]} for r in range(6)]
    run_concurrently(group, requests)
    logged = [e.id for entry in log.read_range(0, "0", 100) for e in entry.events]
    for r in range(6):
        mine = [i for i in logged if i.startswith(f"r{r}-")]
        assert mine == [f"r{r}-{i}" for i in range(20)]


def test_sources_and_horizons_are_appended_apart(log: Any) -> None:
    slow = Slow(log)
    group = GroupCommit(slow)
    requests = [request_of(["s-1", "s-2"], source=source) for source in ("crm", "app", "crm", "app")]
    answers = run_concurrently(group, requests)
    firsts = [bool(accepted(r, a)) for r, a in zip(requests, answers, strict=True)]
    assert sorted(firsts) == [False, False, True, True]  # one request of each source logs s-1 and s-2
    assert sorted(logged_ids(log)) == ["s-1", "s-1", "s-2", "s-2"]


class Failing:
    """Fails every append while ``failing`` is set (as Redis going away would)."""

    def __init__(self, log: Any) -> None:
        self.log, self.failing = Slow(log), True

    def append(self, by_partition: dict[int, list[Event]], **kwargs: Any) -> list[Appended]:
        if self.failing:
            time.sleep(0.05)
            raise ConnectionError("redis went away")
        return self.log.append(by_partition, **kwargs)


def test_a_failed_append_fails_its_requests_and_the_next_ones_go_on(log: Any) -> None:
    failing = Failing(log)
    group = GroupCommit(failing)
    requests = [request_of([f"f-{r}-{i}" for i in range(5)]) for r in range(5)]
    answers = run_concurrently(group, requests)
    assert all(isinstance(a, ConnectionError) for a in answers)
    failing.failing = False
    again = run_concurrently(group, requests)  # the retries
    assert all(len(accepted(r, a)) == 5 for r, a in zip(requests, again, strict=True))
    assert len(logged_ids(log)) == 25


def test_a_large_request_appends_at_once_beside_a_running_group(log: Any) -> None:
    release = threading.Event()
    lock = threading.Lock()

    class Held:  # small appends wait for ``release``
        def append(self, by_partition: dict[int, list[Event]], **kwargs: Any) -> list[Appended]:
            if sum(len(e) for e in by_partition.values()) < 10:
                assert release.wait(10)
            with lock:
                return log.append(by_partition, **kwargs)

    group = GroupCommit(Held(), alone_events=10)
    small: list[Any] = []
    waiting = threading.Thread(
        target=lambda: small.append(group.append(request_of(["l-1", "l-2"]), now_ms=NOW, config_version=1))
    )
    waiting.start()
    large = group.append(request_of([f"l-{i}" for i in range(3, 23)]), now_ms=NOW, config_version=1)
    assert not release.is_set() and not small  # the large one did not wait for the group's append
    assert sum(len(a.duplicates) for a in large) == 0
    release.set()
    waiting.join(timeout=10)
    assert small and sum(len(a.duplicates) for a in small[0]) == 0
    assert sorted(logged_ids(log)) == sorted(f"l-{i}" for i in range(1, 23))


def test_two_small_requests_append_at_once(log: Any) -> None:
    both_inside = threading.Barrier(2, timeout=5)  # broken unless two appends run together
    lock = threading.Lock()

    class Meeting:
        def append(self, by_partition: dict[int, list[Event]], **kwargs: Any) -> list[Appended]:
            both_inside.wait()
            with lock:
                return log.append(by_partition, **kwargs)

    answers = run_concurrently(GroupCommit(Meeting(), leaders=2), [request_of(["m-1"]), request_of(["m-2"])])
    assert not any(isinstance(a, Exception) for a in answers), answers
    assert sorted(logged_ids(log)) == ["m-1", "m-2"]


# --- waiting for requests on their way (GroupCommit.arrive) ------------------------------------


class Counted:
    """A log whose appends are counted (request sizes), at full speed."""

    def __init__(self, log: Any) -> None:
        self.log, self.calls = log, []
        self._lock = threading.Lock()

    def append(self, by_partition: dict[int, list[Event]], **kwargs: Any) -> list[Appended]:
        with self._lock:
            self.calls.append(sum(len(e) for e in by_partition.values()))
            return self.log.append(by_partition, **kwargs)


def append_in_thread(group: GroupCommit, request: dict[int, list[Event]], answers: list[Any], **kwargs: Any) -> Any:
    thread = threading.Thread(
        target=lambda: answers.append(group.append(request, now_ms=NOW, config_version=1, **kwargs))
    )
    thread.start()
    return thread


def test_a_request_on_its_way_goes_in_the_append_that_waited_for_it(log: Any) -> None:
    counted = Counted(log)
    group = GroupCommit(counted, linger_s=30)  # ends by the second request joining, long before
    first, second = group.arrive(), group.arrive()
    answers: list[Any] = []
    leader = append_in_thread(group, request_of(["w-1", "w-2"]), answers, arrival=first)
    time.sleep(0.2)  # the leader is waiting: the second request is still being decoded
    assert not answers and counted.calls == []
    group.append(request_of(["w-3"]), now_ms=NOW, config_version=1, arrival=second)
    leader.join(timeout=10)
    assert not leader.is_alive() and answers
    assert counted.calls == [3] and group.appends == 1  # one append for both (esp_log_appends_total)
    assert sorted(logged_ids(log)) == ["w-1", "w-2", "w-3"]


def test_a_lone_request_does_not_wait(log: Any) -> None:
    counted = Counted(log)
    group = GroupCommit(counted, linger_s=30)
    started = time.monotonic()
    for n in range(3):  # one after the other, as a single sender posts
        arrival = group.arrive()
        group.append(request_of([f"o-{n}"]), now_ms=NOW, config_version=1, arrival=arrival)
    assert time.monotonic() - started < 10  # each went at once, not after a 30 s wait
    assert counted.calls == [1, 1, 1]
    assert group.appends == 3


def test_a_request_that_fails_on_its_way_releases_the_waiting_append(log: Any) -> None:
    counted = Counted(log)
    group = GroupCommit(counted, linger_s=30)
    first, failing = group.arrive(), group.arrive()
    answers: list[Any] = []
    leader = append_in_thread(group, request_of(["x-1"]), answers, arrival=first)
    time.sleep(0.2)
    assert not answers
    group.leave(failing)  # its body was invalid: it never appends
    group.leave(failing)  # leaving twice changes nothing
    leader.join(timeout=10)
    assert not leader.is_alive() and counted.calls == [1]


def test_the_wait_for_a_request_on_its_way_is_bounded(log: Any) -> None:
    counted = Counted(log)
    group = GroupCommit(counted, linger_s=0.3)
    first, _stuck = group.arrive(), group.arrive()  # the second never arrives at the log
    answers: list[Any] = []
    leader = append_in_thread(group, request_of(["b-1"]), answers, arrival=first)
    leader.join(timeout=10)
    assert not leader.is_alive() and counted.calls == [1]


def test_a_large_request_on_its_way_is_not_waited_for(log: Any) -> None:
    counted = Counted(log)
    group = GroupCommit(counted, linger_s=30, alone_events=10)
    small, large = group.arrive(), group.arrive()
    answers: list[Any] = []
    group.append(request_of([f"g-{i}" for i in range(20)]), now_ms=NOW, config_version=1, arrival=large)
    leader = append_in_thread(group, request_of(["g-x"]), answers, arrival=small)
    leader.join(timeout=10)
    assert not leader.is_alive() and counted.calls == [20, 1]


def test_a_request_found_large_on_its_way_releases_the_wait_before_it_appends(log: Any) -> None:
    counted = Counted(log)
    group = GroupCommit(counted, linger_s=30, alone_events=10)
    first, small, large = group.arrive(), group.arrive(), group.arrive()
    answers: list[Any] = []
    leader = append_in_thread(group, request_of(["s-1"]), answers, arrival=first)
    group.sized(small, 5)  # a small one stays on its way: the leader still waits for it
    group.sized(large, 20)  # decoded, 20 events: it will append alone
    time.sleep(0.2)
    assert not answers
    group.leave(small)
    leader.join(timeout=10)
    assert not leader.is_alive() and counted.calls == [1]


@pytest.mark.parametrize("seed", [1, 2])
def test_requests_announced_and_appended_concurrently_each_get_their_answer(log: Any, seed: int) -> None:
    """Many senders, each announcing its request, decoding for a while, then appending (or
    failing): every request is answered, each id accepted once, and they went in fewer appends."""
    rnd = random.Random(seed)
    counted = Counted(log)
    group = GroupCommit(counted, linger_s=0.05)
    requests = [request_of([f"c-{rnd.randrange(80)}" for _ in range(rnd.randint(1, 12))]) for _ in range(24)]
    fails = {i for i in range(len(requests)) if rnd.random() < 0.2}
    pauses = [rnd.uniform(0, 0.03) for _ in requests]
    answers: list[Any] = [None] * len(requests)
    start = threading.Barrier(len(requests))

    def send(i: int) -> None:
        start.wait()
        arrival = group.arrive()
        try:
            time.sleep(pauses[i])  # decoding
            if i in fails:
                return
            answers[i] = group.append(requests[i], now_ms=NOW, config_version=1, arrival=arrival)
        finally:
            group.leave(arrival)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(requests))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    sent = [i for i in range(len(requests)) if i not in fails]
    assert all(answers[i] is not None for i in sent)
    winners: dict[str, int] = {}
    for i in sent:
        for event_id in accepted(requests[i], answers[i]):
            assert event_id not in winners, f"{event_id} accepted by requests {winners[event_id]} and {i}"
            winners[event_id] = i
    assert set(winners) == {e.id for i in sent for events in requests[i].values() for e in events}
    assert sorted(logged_ids(log)) == sorted(winners)
    assert len(counted.calls) < len(sent)  # they went together
