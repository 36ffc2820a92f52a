"""The contact ledger in Redis, shared by the real-time and batch paths, and atomic.

Per customer: a sorted set of the contacts sent (score = time, trimmed to the longest window),
a set of opted-out channels (``*`` = all) and a version counter; per channel a sorted set of
send times (capacity); per request id its final decision (idempotency). A batch of decisions is
one read (a pipeline) and one commit: a Lua script that applies the writes only if no customer
or channel it read has changed since (compare-and-set on the version counters), and otherwise
refuses, so the batch is decided again on fresh data. Two deciders can therefore never both
take the last slot of a cap. Every key of the contact policy carries the hash tag ``{policy}``
(``runtime/keys.py``), so on a Redis Cluster the read and the commit go to one slot's node.

:class:`LedgerStorage` is what the policy stage and the API use; :class:`Ledger` keeps the
ledger in Redis, :class:`runtime.policy.memory.MemoryLedger` in memory for unit tests. Both
decide a batch through :func:`decide_groups`.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from runtime import keys
from runtime.events.profiles import ProfileStore
from runtime.log.streams import text
from runtime.lua import read_script
from runtime.policy.decide import (
    Contact,
    ContactRequest,
    CustomerView,
    Decision,
    PolicyRules,
    decide,
)

if TYPE_CHECKING:
    import redis

DECISIONS_KEPT = 20  # per customer, for esp why
MAX_ATTEMPTS = 20

_COMMIT = read_script("runtime.policy", "ledger_commit.lua")


class ConflictingWrite(Exception):
    """Someone else changed a customer or channel the batch read; decide it again."""


def decision_json(decision: Decision) -> bytes:
    return orjson.dumps(asdict(decision))


def decision_from(raw: bytes | str) -> Decision:
    return Decision(**orjson.loads(raw))


class LedgerStorage(Protocol):
    """Contact decisions against caps, de-dup windows, capacity and opt-outs, recorded once."""

    def decide(
        self, groups: list[list[ContactRequest]], rules: PolicyRules, now_ms: int | None = None
    ) -> list[Decision]:
        """Decide competing groups (one customer each): a request decided finally before keeps
        its decision and counts nothing again; sends are recorded against the customer's caps
        and the channel's capacity; held requests wait in the held set until due."""
        ...

    def opt_out(self, entries: Iterable[tuple[str, str]], *, remove: bool = False) -> int: ...

    def recent(self, customer: str, limit: int = DECISIONS_KEPT) -> list[dict[str, Any]]: ...

    def due_held(self, now_ms: int, limit: int = 1000) -> list[ContactRequest]: ...


Decided = tuple[list[ContactRequest], list[Decision], list[Contact]]  # a group, its decisions, its new contacts


def decide_groups(
    groups: list[list[ContactRequest]], views: dict[str, CustomerView], rules: PolicyRules, now_ms: int
) -> Iterator[Decided]:
    """Each group decided against its customer's view, in order: a later group of the batch
    sees the earlier groups' sends against capacity (the views share ``channel_sends``)."""
    for group in groups:
        view = views[group[0].customer]
        made, contacts = decide(group, view, rules, now_ms)
        for contact in contacts:
            if contact.channel in rules.capacity:
                view.channel_sends[contact.channel] = (*view.channel_sends.get(contact.channel, ()), contact.at)
        yield group, made, contacts


class Ledger:
    """:class:`LedgerStorage` in Redis: one pipelined read and one compare-and-set commit per batch."""

    def __init__(self, client: redis.Redis, *, horizon_s: int) -> None:
        self._redis = client
        self._commit = client.register_script(_COMMIT)
        self._horizon_s = horizon_s
        self._profiles = ProfileStore(client)

    def decide(
        self, groups: list[list[ContactRequest]], rules: PolicyRules, now_ms: int | None = None
    ) -> list[Decision]:
        """Decide competing groups (one customer each) atomically; retried on conflicts."""
        for attempt in range(MAX_ATTEMPTS):
            now = now_ms if now_ms is not None else int(time.time() * 1000)
            views, versions = self._read(groups, rules, now)
            decisions: list[Decision] = []
            commands: list[list[Any]] = []
            for group, made, contacts in decide_groups(groups, views, rules, now):
                customer = group[0].customer
                replayed = set(views[customer].decided)
                decisions += made
                commands += self._writes(customer, made, contacts, group, rules, now, replayed=replayed)
            try:
                self._apply(versions, commands)
            except ConflictingWrite:
                time.sleep(random.uniform(0, 0.002 * (attempt + 1)))  # let the other writer finish
                continue
            return decisions
        raise ConflictingWrite(f"{MAX_ATTEMPTS} attempts met concurrent writes; giving up for now")

    def _read(
        self, groups: list[list[ContactRequest]], rules: PolicyRules, now_ms: int
    ) -> tuple[dict[str, CustomerView], dict[str, str]]:
        customers = sorted({g[0].customer for g in groups})
        channels = sorted({r.channel for g in groups for r in g if r.channel in rules.capacity})
        ids = [r.id for g in groups for r in g]
        since = now_ms - rules.longest_window_ms
        pipe = self._redis.pipeline(transaction=False)
        for customer in customers:
            pipe.get(keys.ledger_version(customer))
            pipe.zrangebyscore(keys.ledger(customer), since, "+inf")
            pipe.smembers(keys.optouts(customer))
        for channel in channels:
            pipe.get(keys.capacity_version(channel))
            pipe.zrangebyscore(keys.capacity(channel), now_ms - 86_400_000, "+inf", withscores=True)
        if ids:  # MGET through execute_command: a cluster pipeline refuses .mget (the keys share a slot)
            pipe.execute_command("MGET", *[keys.decision(i) for i in ids])
        replies = pipe.execute()
        profiles = self._profiles.get_many(customers)
        stored = replies[-1] if ids else []
        decided = {i: decision_from(raw) for i, raw in zip(ids, stored, strict=False) if raw}
        sends: dict[str, tuple[int, ...]] = {}
        versions: dict[str, str] = {}
        offset = 3 * len(customers)
        for k, channel in enumerate(channels):
            version, members = replies[offset + 2 * k], replies[offset + 2 * k + 1]
            versions[keys.capacity_version(channel)] = text(version) if version else "0"
            sends[channel] = tuple(int(score) for _, score in members)
        views = {}
        for k, customer in enumerate(customers):
            version, contacts, optouts = replies[3 * k : 3 * k + 3]
            versions[keys.ledger_version(customer)] = text(version) if version else "0"
            views[customer] = CustomerView(
                contacts=tuple(Contact(**orjson.loads(raw)) for raw in contacts),
                profile=profiles[customer],
                opted_out=frozenset(text(c) for c in optouts),
                decided={i: d for i, d in decided.items() if d.customer == customer and d.final},
                channel_sends=sends,
            )
        return views, versions

    def _writes(
        self,
        customer: str,
        decisions: list[Decision],
        contacts: list[Contact],
        group: list[ContactRequest],
        rules: PolicyRules,
        now_ms: int,
        *,
        replayed: set[str],
    ) -> list[list[Any]]:
        ledger = keys.ledger(customer)
        window_s = rules.longest_window_ms // 1000 + 60
        commands: list[list[Any]] = []
        for contact in contacts:
            commands.append(["ZADD", ledger, contact.at, orjson.dumps(asdict(contact))])
            if contact.channel in rules.capacity:
                commands.append(["ZADD", keys.capacity(contact.channel), contact.at, contact.id])
                commands.append(["ZREMRANGEBYSCORE", keys.capacity(contact.channel), "-inf", now_ms - 86_400_000])
        if contacts:
            commands.append(["ZREMRANGEBYSCORE", ledger, "-inf", now_ms - rules.longest_window_ms])
            commands.append(["EXPIRE", ledger, window_s])
        requests = {r.id: r for r in group}
        log = keys.customer_decisions(customer)
        for decision in decisions:
            if decision.id in replayed:  # its first decision stands and is already recorded
                continue
            encoded = decision_json(decision)
            if decision.final:
                commands.append(["SET", keys.decision(decision.id), encoded, "EX", max(window_s, self._horizon_s)])
                commands.append(["ZREM", keys.HELD, held_member(requests[decision.id])])
            else:
                assert decision.release_at is not None
                commands.append(["ZADD", keys.HELD, decision.release_at, held_member(requests[decision.id])])
            commands.append(["LPUSH", log, encoded])
        if any(d.id not in replayed for d in decisions):
            commands.append(["LTRIM", log, 0, DECISIONS_KEPT - 1])
            commands.append(["EXPIRE", log, self._horizon_s])
        return commands

    def _apply(self, versions: dict[str, str], commands: list[list[Any]]) -> None:
        argv: list[Any] = [len(versions)]
        for key, expected in versions.items():
            argv += [key, expected]
        argv.append(len(commands))
        for command in commands:
            argv += [len(command), *command]
        # every key of the commit carries {policy}: KEYS[1] routes the script to that slot's node
        if not int(self._commit(keys=[keys.HELD], args=argv)):
            raise ConflictingWrite("a customer or channel changed between read and commit")

    # --- opt-outs and reading back ------------------------------------------------------------

    def opt_out(self, entries: Iterable[tuple[str, str]], *, remove: bool = False) -> int:
        """(customer, channel or '*') pairs, in one round trip."""
        pipe = self._redis.pipeline(transaction=False)
        count = 0
        for customer, channel in entries:
            (pipe.srem if remove else pipe.sadd)(keys.optouts(customer), channel)
            pipe.incr(keys.ledger_version(customer))  # a decision in flight for them is taken again
            count += 1
        pipe.execute()
        return count

    def recent(self, customer: str, limit: int = DECISIONS_KEPT) -> list[dict[str, Any]]:
        return [orjson.loads(raw) for raw in self._redis.lrange(keys.customer_decisions(customer), 0, limit - 1)]

    def due_held(self, now_ms: int, limit: int = 1000) -> list[ContactRequest]:
        return [request_from(raw) for raw in self._redis.zrangebyscore(keys.HELD, "-inf", now_ms, start=0, num=limit)]


def held_member(request: ContactRequest) -> bytes:
    return orjson.dumps(asdict(request))


def request_from(raw: bytes | str) -> ContactRequest:
    return ContactRequest(**orjson.loads(raw))
