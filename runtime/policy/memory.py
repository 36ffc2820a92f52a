"""The contact ledger in a process's memory, for unit tests: :class:`LedgerStorage` with the
Redis ledger's behaviour (replayed requests keep their first decision, caps and de-dup read
the longest window, capacity the last day, held requests wait until due, the decision log per
customer is capped). One process, one thread: no compare-and-set is needed, and nothing
expires but what the windows trim."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import asdict
from typing import Any

import orjson

from runtime.events.memory import MemoryProfileStore
from runtime.events.profiles import ProfileStorage
from runtime.policy.decide import DAY_MS, Contact, ContactRequest, CustomerView, Decision, PolicyRules
from runtime.policy.ledger import DECISIONS_KEPT, decide_groups, decision_json, held_member, request_from


class MemoryLedger:
    """:class:`LedgerStorage` in dictionaries, reading profiles (scores, quiet-hour zones) from
    ``profiles``. Sorted sets are dictionaries member -> score, read in (score, member) order
    as Redis reads them."""

    def __init__(self, *, profiles: ProfileStorage | None = None) -> None:
        self._profiles = profiles if profiles is not None else MemoryProfileStore()
        self._contacts: dict[str, dict[bytes, int]] = {}  # customer -> contact -> sent at
        self._optouts: dict[str, set[str]] = {}
        self._sends: dict[str, dict[str, int]] = {}  # capacity channel -> contact id -> sent at
        self._final: dict[str, Decision] = {}  # request id -> its final decision
        self._held: dict[bytes, int] = {}  # request -> release at
        self._logs: dict[str, list[bytes]] = {}  # customer -> decisions, newest first

    def decide(
        self, groups: list[list[ContactRequest]], rules: PolicyRules, now_ms: int | None = None
    ) -> list[Decision]:
        now = now_ms if now_ms is not None else int(time.time() * 1000)
        views = self._views(groups, rules, now)
        decisions: list[Decision] = []
        for group, made, contacts in decide_groups(groups, views, rules, now):
            replayed = set(views[group[0].customer].decided)
            self._record_contacts(group[0].customer, contacts, rules, now)
            self._record_decisions(group, [d for d in made if d.id not in replayed])
            decisions += made
        return decisions

    def _views(self, groups: list[list[ContactRequest]], rules: PolicyRules, now_ms: int) -> dict[str, CustomerView]:
        customers = sorted({g[0].customer for g in groups})
        channels = {r.channel for g in groups for r in g if r.channel in rules.capacity}
        sends = {c: tuple(at for _, at in _ordered(self._sends.get(c, {}), now_ms - DAY_MS)) for c in channels}
        since = now_ms - rules.longest_window_ms
        profiles = self._profiles.get_many(customers)
        decided = [self._final[r.id] for g in groups for r in g if r.id in self._final]
        return {
            customer: CustomerView(
                contacts=self._contacts_since(customer, since),
                profile=profiles[customer],
                opted_out=frozenset(self._optouts.get(customer, ())),
                decided={d.id: d for d in decided if d.customer == customer},
                channel_sends=sends,
            )
            for customer in customers
        }

    def _contacts_since(self, customer: str, since: int) -> tuple[Contact, ...]:
        return tuple(Contact(**orjson.loads(m)) for m, _ in _ordered(self._contacts.get(customer, {}), since))

    def _record_contacts(self, customer: str, contacts: list[Contact], rules: PolicyRules, now_ms: int) -> None:
        ledger = self._contacts.setdefault(customer, {})
        for contact in contacts:
            ledger[orjson.dumps(asdict(contact))] = contact.at
            if contact.channel in rules.capacity:
                sends = self._sends.setdefault(contact.channel, {})
                sends[contact.id] = contact.at
                _trim(sends, now_ms - DAY_MS)
        if contacts:
            _trim(ledger, now_ms - rules.longest_window_ms)

    def _record_decisions(self, group: list[ContactRequest], decisions: list[Decision]) -> None:
        requests = {r.id: r for r in group}
        for decision in decisions:
            member = held_member(requests[decision.id])
            if decision.final:
                self._final[decision.id] = decision
                self._held.pop(member, None)
            elif decision.release_at is None:
                raise ValueError(f"held decision {decision.id!r} has no release time")
            else:
                self._held[member] = decision.release_at
            log = self._logs.setdefault(decision.customer, [])
            log.insert(0, decision_json(decision))
            del log[DECISIONS_KEPT:]

    def opt_out(self, entries: Iterable[tuple[str, str]], *, remove: bool = False) -> int:
        count = 0
        for customer, channel in entries:
            channels = self._optouts.setdefault(customer, set())
            (channels.discard if remove else channels.add)(channel)
            count += 1
        return count

    def recent(self, customer: str, limit: int = DECISIONS_KEPT) -> list[dict[str, Any]]:
        return [orjson.loads(raw) for raw in self._logs.get(customer, [])[:limit]]

    def due_held(self, now_ms: int, limit: int = 1000) -> list[ContactRequest]:
        due = [member for member, at in sorted(self._held.items(), key=lambda kv: (kv[1], kv[0])) if at <= now_ms]
        return [request_from(member) for member in due[:limit]]


def _ordered(members: dict[Any, int], since: int) -> list[tuple[Any, int]]:
    """Members scored ``since`` or later, in Redis's order: by score, then by member."""
    return sorted(((m, at) for m, at in members.items() if at >= since), key=lambda kv: (kv[1], kv[0]))


def _trim(members: dict[Any, int], until: int) -> None:
    """Drop members scored ``until`` or earlier, as ZREMRANGEBYSCORE -inf ``until``."""
    for member in [m for m, at in members.items() if at <= until]:
        del members[member]
