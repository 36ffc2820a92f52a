"""The contact ledger in Redis, shared by the real-time and batch paths, and atomic.

Per customer: a sorted set of the contacts sent (score = time, trimmed to the longest window),
a set of opted-out channels (``*`` = all) and a version counter; per channel a sorted set of
send times (capacity); per request id its final decision (idempotency). A batch of decisions is
one read (a Lua script, ``ledger_read.lua``) and one commit: a Lua script that applies the writes only if no customer
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
_READ = read_script("runtime.policy", "ledger_read.lua")


class ConflictingWrite(Exception):
    """Someone else changed a customer or channel the batch read; decide it again."""


def decision_json(decision: Decision) -> bytes:
    return orjson.dumps(decision)  # orjson encodes a dataclass as asdict would, ~20x faster


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
    """:class:`LedgerStorage` in Redis: one read script and one compare-and-set commit script per batch."""

    def __init__(self, client: redis.Redis, *, horizon_s: int) -> None:
        self._redis = client
        self._commit = client.register_script(_COMMIT)
        self._read_script = client.register_script(_READ)
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
            records: list[list[Any]] = []
            commands: list[list[Any]] = []
            held: list[tuple[bytes, int | None]] = []
            for group, made, contacts in decide_groups(groups, views, rules, now):
                customer = group[0].customer
                replayed = set(views[customer].decided)
                decisions += made
                records.append(
                    self._writes(
                        customer, made, contacts, group, rules, now, replayed=replayed, held=held, commands=commands
                    )
                )
            commands += held_commands(held)
            try:
                self._apply(versions, self._commit_args(versions, records, commands, rules, now))
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
        read_keys = [keys.ledger_version(c) for c in customers] + [keys.ledger(c) for c in customers]
        read_keys += [keys.optouts(c) for c in customers]
        read_keys += [keys.capacity_version(ch) for ch in channels] + [keys.capacity(ch) for ch in channels]
        read_keys += [keys.decision(i) for i in ids]
        args = [len(customers), len(channels), now_ms - rules.longest_window_ms, now_ms - 86_400_000]
        # one script call, not a pipeline of 3 commands per customer: redis-py's per-command cost
        # dominated the read; every key carries {policy}, so a cluster routes it to one slot
        (versions_read, ledgers, optouts), (channel_versions, channel_sends), stored = self._read_script(
            keys=read_keys, args=args
        )
        profiles = self._profiles.get_many(customers)
        decided: dict[str, dict[str, Decision]] = {}
        for request_id, raw in zip(ids, stored, strict=True):
            if raw:
                decision = decision_from(raw)
                if decision.final:
                    decided.setdefault(decision.customer, {})[request_id] = decision
        sends: dict[str, tuple[int, ...]] = {}
        versions: dict[str, str] = {}
        for channel, version, flat in zip(channels, channel_versions, channel_sends, strict=True):
            versions[keys.capacity_version(channel)] = text(version) if version else "0"
            sends[channel] = tuple(int(float(score)) for score in flat[1::2])
        views = {}
        for customer, version, contacts, opted in zip(customers, versions_read, ledgers, optouts, strict=True):
            versions[keys.ledger_version(customer)] = text(version) if version else "0"
            views[customer] = CustomerView(
                contacts=tuple(Contact(**orjson.loads(raw)) for raw in contacts),
                profile=profiles[customer],
                opted_out=frozenset(text(c) for c in opted),
                decided=decided.get(customer, {}),
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
        held: list[tuple[bytes, int | None]],
        commands: list[list[Any]],
    ) -> list[Any]:
        """The customer's record of the commit (see ``ledger_commit.lua``): its ledger and
        decision log keys, the contacts to add and the decisions to record and log. Capacity
        writes go to ``commands``; changes to the held set go to ``held`` as (member, release
        time or None to remove), written once for the whole batch."""
        record: list[Any] = [keys.ledger(customer), keys.customer_decisions(customer), len(contacts)]
        by_channel: dict[str, list[Any]] = {}
        for contact in contacts:
            record += (contact.at, orjson.dumps(contact))
            if contact.channel in rules.capacity:
                by_channel.setdefault(contact.channel, []).extend((contact.at, contact.id))
        for channel, sends in by_channel.items():
            commands.append(["ZADD", keys.capacity(channel), *sends])
            commands.append(["ZREMRANGEBYSCORE", keys.capacity(channel), "-inf", now_ms - 86_400_000])
        requests = {r.id: r for r in group}
        finals: list[str] = []
        logged: list[bytes] = []
        for decision in decisions:
            if decision.id in replayed:  # its first decision stands and is already recorded
                continue
            if decision.final:
                finals.append(keys.decision(decision.id))
                held.append((held_member(requests[decision.id]), None))
            else:
                assert decision.release_at is not None
                finals.append("")  # logged, not recorded: it is decided again when released
                held.append((held_member(requests[decision.id]), decision.release_at))
            logged.append(decision_json(decision))
        return [*record, len(logged), *finals, *logged]

    def _commit_args(
        self,
        versions: dict[str, str],
        records: list[list[Any]],
        commands: list[list[Any]],
        rules: PolicyRules,
        now_ms: int,
    ) -> list[Any]:
        """The commit script's ARGV (its layout is described in ``ledger_commit.lua``)."""
        window_s = rules.longest_window_ms // 1000 + 60
        argv: list[Any] = [len(versions), *versions, *versions.values()]
        argv += [now_ms - rules.longest_window_ms, window_s, max(window_s, self._horizon_s), self._horizon_s]
        argv += [DECISIONS_KEPT, len(records)]
        for record in records:
            argv += record
        argv.append(len(commands))
        for command in commands:
            argv += [len(command), *command]
        return argv

    def _apply(self, versions: dict[str, str], argv: list[Any]) -> None:
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


HELD_CHUNK = 1000  # members per ZADD / ZREM of the held set: the commit script unpacks each command


def held_commands(changes: list[tuple[bytes, int | None]]) -> list[list[Any]]:
    """The batch's changes to the held set ((member, release time, or None to remove)) as few
    commands: removals, then additions, a thousand members each. Should a member change twice
    in the batch, the changes are written one by one, in order, so the last one stands."""
    if len({member for member, _ in changes}) < len(changes):
        return [["ZREM", keys.HELD, m] if at is None else ["ZADD", keys.HELD, at, m] for m, at in changes]
    removed = [m for m, at in changes if at is None]
    added = [x for m, at in changes if at is not None for x in (at, m)]
    commands = [["ZREM", keys.HELD, *removed[i : i + HELD_CHUNK]] for i in range(0, len(removed), HELD_CHUNK)]
    step = 2 * HELD_CHUNK
    return commands + [["ZADD", keys.HELD, *added[i : i + step]] for i in range(0, len(added), step)]


def held_member(request: ContactRequest) -> bytes:
    """The held set's member for ``request``: byte for byte what ``orjson.dumps(asdict(...))``
    gave (members written before must still be found by ZREM), without asdict's deep copy."""
    return orjson.dumps(request)


def request_from(raw: bytes | str) -> ContactRequest:
    return ContactRequest(**orjson.loads(raw))
