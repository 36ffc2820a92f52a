"""The contact ledger in Redis, shared by the real-time and batch paths, and atomic.

Per customer: a sorted set of the contacts sent (score = time, trimmed to the longest window),
a set of opted-out channels (``*`` = all) and a version counter; per channel a sorted set of
send times (capacity); per request id its decision (idempotency once final; a hold until the
request is decided again). A batch of decisions is one read (a Lua script, ``ledger_read.lua``)
and one commit: a Lua script that applies the writes only if no customer or channel it read has
changed since (compare-and-set on the version counters), and otherwise refuses, so the batch is
decided again on fresh data. Two deciders can therefore never both take the last slot of a cap.
A large batch goes in pieces of ``PIECE`` customers, each read and committed that way, pipelined
on one connection so that Redis and this process work at once (:meth:`Ledger.decide`). Every
key of the contact policy carries the hash tag ``{policy}`` (``runtime/keys.py``), so on a Redis
Cluster the read and the commit go to one slot's node.

:class:`LedgerStorage` is what the policy stage and the API use; :class:`Ledger` keeps the
ledger in Redis, :class:`runtime.policy.memory.MemoryLedger` in memory for unit tests. Both
decide a batch through :func:`decide_groups`.
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
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


Batch = list[list[ContactRequest]]  # groups of requests, one customer each
Decided = tuple[list[ContactRequest], list[Decision], list[Contact]]  # a group, its decisions, its new contacts
Read = tuple[dict[str, CustomerView], dict[str, str], set[str]]  # views, version keys read, requests held before


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
    """:class:`LedgerStorage` in Redis: one read script and one compare-and-set commit script per
    batch, or per piece of a large batch (:func:`pieces`)."""

    def __init__(self, client: redis.Redis, *, horizon_s: int) -> None:
        from runtime.redis_client import is_cluster  # imported here: this module stays free of redis

        self._redis = client
        self._cluster = is_cluster(client)
        self._horizon_s = horizon_s
        self._profiles = ProfileStore(client)

    def decide(
        self, groups: list[list[ContactRequest]], rules: PolicyRules, now_ms: int | None = None
    ) -> list[Decision]:
        """Decide competing groups (one customer each) atomically; retried on conflicts. A large
        batch goes in pieces that cannot conflict with each other (:func:`pieces`), pipelined:
        Redis reads the next piece and commits the last one while this process decides the
        current one, so both work at once. Each piece's commit is atomic; a refused piece is
        decided again on fresh data."""
        decided: dict[int, list[Decision]] = {}  # id of a group -> its decisions
        todo = pieces(groups, rules)
        for attempt in range(MAX_ATTEMPTS):
            now = now_ms if now_ms is not None else int(time.time() * 1000)
            todo = self._decide_pieces(todo, rules, now, decided)
            if not todo:
                return [decision for group in groups for decision in decided[id(group)]]
            time.sleep(random.uniform(0, 0.002 * (attempt + 1)))  # let the other writer finish
        raise ConflictingWrite(f"{MAX_ATTEMPTS} attempts met concurrent writes; giving up for now")

    def _decide_pieces(
        self, todo: list[Batch], rules: PolicyRules, now_ms: int, decided: dict[int, list[Decision]]
    ) -> list[Batch]:
        """One pass over ``todo``, recording the decisions of each committed piece in ``decided``;
        returns the pieces whose commit was refused. On the wire: read 1, read 2, commit 1,
        read 3, commit 2, ...: each read is in Redis while the piece before it is decided here."""
        refused: list[Batch] = []
        committing: tuple[Batch, list[Decision]] | None = None
        with self._line() as line:
            line.read(*self._read_command(todo[0], rules, now_ms))
            for k, piece in enumerate(todo):
                reply, profiles = line.receive()
                if k + 1 < len(todo):
                    line.read(*self._read_command(todo[k + 1], rules, now_ms))
                made, argv = self._prepare(piece, self._views(piece, rules, reply, profiles), rules, now_ms)
                if committing is not None:
                    self._settle(line.receive(), *committing, decided, refused)
                line.commit(["EVAL", _COMMIT, 1, keys.HELD, *argv])  # KEYS[1] routes it to {policy}'s node
                committing = (piece, made)
            self._settle(line.receive(), *committing, decided, refused)  # type: ignore[misc]
        return refused

    @staticmethod
    def _settle(
        reply: Any, piece: Batch, made: list[Decision], decided: dict[int, list[Decision]], refused: list[Batch]
    ) -> None:
        """A piece's commit came back: its decisions stand, or (refused: a customer or channel
        it read changed before the commit) it is decided again."""
        if int(reply):
            decided.update(zip(map(id, piece), _per_group(piece, made), strict=True))
        else:
            refused.append(piece)

    @contextmanager
    def _line(self) -> Iterator[Line]:
        if self._cluster:  # one call at a time, each routed to its slot's node
            yield _InTurn(self._redis, self._profiles)
            return
        pool = self._redis.connection_pool
        connection = pool.get_connection()
        try:
            yield _Pipelined(connection, self._profiles)
        except BaseException:
            connection.disconnect()  # replies may still be on their way: not reusable
            raise
        finally:
            pool.release(connection)

    def _read_command(self, groups: Batch, rules: PolicyRules, now_ms: int) -> tuple[list[Any], list[str]]:
        """The read script's command for ``groups`` (see ``ledger_read.lua``), and the
        customers whose profiles to read with it."""
        customers, channels = _read_by(groups, rules)
        read_keys = [keys.ledger_version(c) for c in customers] + [keys.ledger(c) for c in customers]
        read_keys += [keys.optouts(c) for c in customers]
        read_keys += [keys.capacity_version(ch) for ch in channels] + [keys.capacity(ch) for ch in channels]
        read_keys += [keys.decision(r.id) for g in groups for r in g]
        args = [len(customers), len(channels), now_ms - rules.longest_window_ms, now_ms - 86_400_000]
        # one script call, not a pipeline of 3 commands per customer: redis-py's per-command cost
        # dominated the read; every key carries {policy}, so a cluster routes it to one slot
        return ["EVAL", _READ, len(read_keys), *read_keys, *args], customers

    def _views(self, groups: Batch, rules: PolicyRules, reply: Any, profiles: dict[str, dict[str, Any]]) -> Read:
        """The read's reply as each customer's view, the version keys it was read at, and the
        requests held before (their decision so far is a hold)."""
        customers, channels = _read_by(groups, rules)
        ids = [r.id for g in groups for r in g]
        (versions_read, ledgers, optouts), (channel_versions, channel_sends), stored = reply
        decided: dict[str, dict[str, Decision]] = {}
        was_held: set[str] = set()
        for request_id, raw in zip(ids, stored, strict=True):
            if raw:
                decision = decision_from(raw)
                if decision.final:
                    decided.setdefault(decision.customer, {})[request_id] = decision
                else:
                    was_held.add(request_id)
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
        return views, versions, was_held

    def _prepare(
        self,
        groups: Batch,
        read: Read,
        rules: PolicyRules,
        now_ms: int,
    ) -> tuple[list[Decision], list[Any]]:
        """The decisions of ``groups`` against what was read, and their commit's ARGV."""
        views, versions, was_held = read
        decisions: list[Decision] = []
        records: list[list[Any]] = []
        commands: list[list[Any]] = []
        held: list[tuple[bytes, int | None]] = []
        for group, made, contacts in decide_groups(groups, views, rules, now_ms):
            decisions += made
            view = views[group[0].customer]
            records.append(
                self._writes(
                    group, made, contacts, rules, now_ms, view=view, was_held=was_held, held=held, commands=commands
                )
            )
        commands += held_commands(held)
        return decisions, self._commit_args(versions, records, commands, rules, now_ms)

    def _writes(
        self,
        group: list[ContactRequest],
        decisions: list[Decision],
        contacts: list[Contact],
        rules: PolicyRules,
        now_ms: int,
        *,
        view: CustomerView,
        was_held: set[str],
        held: list[tuple[bytes, int | None]],
        commands: list[list[Any]],
    ) -> list[Any]:
        """The customer's record of the commit (see ``ledger_commit.lua``): its ledger and
        decision log keys, the contacts to add and the decisions to record and log. Capacity
        writes go to ``commands``; changes to the held set go to ``held`` as (member, release
        time or None to remove), written once for the whole batch."""
        customer = group[0].customer
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
        recorded: list[str] = []
        logged: list[bytes] = []
        for decision in decisions:
            # a replay: its first decision stands and is recorded; it leaves the held set, if in it
            if decision.id in view.decided:
                held.append((held_member(requests[decision.id]), None))
                continue
            if decision.final:
                if decision.id in was_held:  # only a request held before is in the held set
                    held.append((held_member(requests[decision.id]), None))
            else:  # recorded as held (not decided: it is decided again when released)
                assert decision.release_at is not None
                held.append((held_member(requests[decision.id]), decision.release_at))
            recorded.append(keys.decision(decision.id))
            logged.append(decision_json(decision))
        return [*record, len(logged), *recorded, *logged]

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


PIECE = 32  # customers: a larger batch is decided in pieces of this many, pipelined


def pieces(groups: Batch, rules: PolicyRules) -> list[Batch]:
    """``groups`` as pieces of at most ``PIECE`` customers that cannot conflict with each other:
    a customer's groups are all in one piece. A batch with a request on a channel with a
    capacity stays whole: every piece would read and write that channel's send count."""
    if len(groups) <= PIECE or any(r.channel in rules.capacity for g in groups for r in g):
        return [groups]
    place: dict[str, int] = {}
    split: list[Batch] = []
    for group in groups:
        at = place.setdefault(group[0].customer, len(place) // PIECE)
        if at == len(split):
            split.append([])
        split[at].append(group)
    return split


def _read_by(groups: Batch, rules: PolicyRules) -> tuple[list[str], list[str]]:
    """The customers and the capacity channels whose keys a read of ``groups`` reads, in order."""
    customers = sorted({g[0].customer for g in groups})
    return customers, sorted({r.channel for g in groups for r in g if r.channel in rules.capacity})


def _per_group(groups: Batch, decisions: list[Decision]) -> Iterator[list[Decision]]:
    """A piece's decisions (one per request, group after group) cut back into its groups."""
    start = 0
    for group in groups:
        yield decisions[start : start + len(group)]
        start += len(group)


class Line(Protocol):
    """How a batch's reads and commits reach Redis: sent in order, answered in order."""

    def read(self, command: list[Any], customers: list[str]) -> None:
        """Send a read, and a read of ``customers``'s profiles."""

    def commit(self, command: list[Any]) -> None: ...

    def receive(self) -> Any:
        """The reply to the oldest command not yet answered: (read's reply, profiles) for a read."""


class _Pipelined:
    """Commands on one connection, sent at once, their replies read when needed."""

    def __init__(self, connection: Any, profiles: ProfileStore) -> None:
        self._connection, self._profiles = connection, profiles
        self._waiting: deque[list[str] | None] = deque()  # per command sent: a read's customers, or None

    def read(self, command: list[Any], customers: list[str]) -> None:
        profiles = self._profiles.read_command(customers)
        self._connection.send_packed_command(self._connection.pack_commands([command, profiles]))
        self._waiting.append(customers)

    def commit(self, command: list[Any]) -> None:
        self._connection.send_packed_command(self._connection.pack_command(*command))
        self._waiting.append(None)

    def receive(self) -> Any:
        customers = self._waiting.popleft()
        reply = self._connection.read_response()
        if customers is None:
            return reply
        return reply, self._profiles.from_reply(customers, self._connection.read_response())


class _InTurn:
    """Each command run when sent (a Redis Cluster client routes calls one by one)."""

    def __init__(self, client: Any, profiles: ProfileStore) -> None:
        self._redis, self._profiles = client, profiles
        self._replies: deque[Any] = deque()

    def read(self, command: list[Any], customers: list[str]) -> None:
        self._replies.append((self._redis.execute_command(*command), self._profiles.get_many(customers)))

    def commit(self, command: list[Any]) -> None:
        self._replies.append(self._redis.execute_command(*command))

    def receive(self) -> Any:
        return self._replies.popleft()


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
