"""The contact-policy stage: notify and task requests in, decisions and sent contacts out.

Partition actors (and batch campaigns) put every notify and task request on a policy stream,
sharded by customer. The stage reads its shards, lets the requests for one customer gather for
the arbitration window, decides them through the ledger (``ledger.py``, atomic), publishes the
winners on their topics (``notifications.<channel>``, ``tasks.<queue>``, where subscriptions and
channels take them) and every decision on ``decisions``, and only then acknowledges the
requests. Held requests (quiet hours, capacity) wait in a sorted set and are decided again when
they are due, so holds survive restarts. A crash anywhere re-reads the unacknowledged requests:
their recorded decisions are returned again and publication is de-duplicated by id.

Poison requests. When deciding or publishing a batch raises for a reason of the input's (not
Redis being unreachable, not a concurrent write), the batch is decided again customer by
customer (a customer's competing requests are decided together, so a customer's group is the
unit): the others go on, and the failing customer's requests wait and are tried again. Tries
are counted per request in Redis (a restarted stage keeps counting); at ``POISON_ATTEMPTS``
the requests go to the quarantine with reason ``processing_error`` and are acknowledged (or
leave the held set) in the same transaction (on a Redis Cluster the quarantine record is written
just before it: ``_set_aside``). The request streams, the tries and the held set carry the
contact policy's hash tag, so one XREADGROUP reads every shard of a stage. A stream entry that
is not a readable request is quarantined at once: reading the same bytes again cannot go
differently.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis

from runtime import keys
from runtime.config.store import ConfigStore
from runtime.config.types import document_body
from runtime.events.envelope import format_time_ms
from runtime.log.partitioning import DEFAULT_PARTITIONS
from runtime.log.streams import read_group, text
from runtime.policy.decide import ContactRequest, Decision, PolicyRules
from runtime.policy.ledger import ConflictingWrite, Ledger, held_member
from runtime.policy.models import Campaign, Policy
from runtime.process_logging import fields as log_fields
from runtime.redis_client import connect, is_cluster
from runtime.sources.quarantine import (
    POISON_ATTEMPTS,
    PROCESSING_ERROR,
    Quarantined,
    QuarantineStore,
    error_text,
    transient,
)
from runtime.subscriptions.outbox import Outbox, Publication
from runtime.subscriptions.topics import DECISIONS_TOPIC, TopicRouter, policy_shard

logger = logging.getLogger(__name__)

CONSUMER = "stage"
STAGE_SOURCE = "esp/contact-policy"  # the quarantine's source for requests that are not readable
RETRY_AFTER_MS = 200  # a failed customer's requests wait this long times their tries


def poison_key(shard: int) -> str:
    """Failed tries of the shard's requests (request id -> tries)."""
    return f"{keys.policy_requests(shard)}:poison"


def _retryable(exc: Exception) -> bool:
    """A failure of the store or of a race, never counted against a request."""
    return transient(exc) or isinstance(exc, ConflictingWrite)


def request_of(event: dict[str, Any], received_ms: int) -> ContactRequest | None:
    """The contact request a notify or task output (as published, with its ``topic``) makes."""
    topic, data = str(event.get("topic", "")), event.get("data") or {}
    common = {"id": str(event.get("id")), "customer": str(event.get("subject", "")), "rule": data.get("rule")}
    if topic.startswith("notifications."):
        notify = data.get("notify") or {}
        channel = str(notify.get("channel") or topic.partition(".")[2])
        return ContactRequest(
            **common,
            kind="notify",
            channel=channel,
            content=str(notify.get("template", "")),
            campaign=notify.get("campaign"),
            priority=int(notify.get("priority", 50)),
            requested_at=received_ms,
            event=event,
        )
    if topic.startswith("tasks."):
        task = data.get("task") or {}
        queue = str(task.get("queue") or topic.partition(".")[2])
        return ContactRequest(
            **common,
            kind="task",
            channel=f"task:{queue}",
            content=f"{queue}/{task.get('title', '')}",
            campaign=task.get("campaign"),
            priority=int(task.get("priority", 50)),
            requested_at=received_ms,
            event=event,
        )
    return None


def decision_event(decision: Decision, request: ContactRequest) -> dict[str, Any]:
    """A decision as the CloudEvent subscribers of ``decisions`` read."""
    outcome, _, reason = decision.outcome.partition(":")
    return {
        "specversion": "1.0",
        "id": f"{decision.id}:{decision.outcome}",
        "source": "esp/contact-policy",
        "type": DECISIONS_TOPIC,
        "time": format_time_ms(decision.at),
        "subject": decision.customer,
        "data": {
            "request": decision.id,
            "outcome": outcome,
            "reason": reason or None,
            "decision": decision.outcome,
            "kind": request.kind,
            "channel": request.channel,
            "campaign": request.campaign,
            "rule": request.rule,
            "release_at": format_time_ms(decision.release_at) if decision.release_at else None,
        },
    }


@dataclass
class _Waiting:
    """Requests of one customer gathering for arbitration."""

    due_ms: int
    requests: list[ContactRequest] = field(default_factory=list)
    entries: list[tuple[str, str]] = field(default_factory=list)  # (stream, entry id) to acknowledge


class PolicyStage:
    def __init__(
        self,
        redis_url: str,
        shards: list[int],
        *,
        total_shards: int,
        horizon_s: int,
        maxlen: int,
        partitions: int = DEFAULT_PARTITIONS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = connect(redis_url)
        self._clock = clock
        self.shards = shards
        self._total_shards = total_shards
        self._streams = [keys.policy_requests(s) for s in shards]
        self.ledger = Ledger(self._redis, horizon_s=horizon_s)
        self._outbox = Outbox(self._redis, horizon_s=horizon_s, maxlen=maxlen, partitions=partitions)
        self._config = ConfigStore(self._redis)
        self._config_version = -1
        self.rules = PolicyRules()
        self._router = TopicRouter({})
        self._waiting: dict[str, _Waiting] = {}
        self._claimed = False
        self._quarantine = QuarantineStore(self._redis)
        self._horizon_s = horizon_s
        self.totals: Counter[str] = Counter()
        self.poison = 0  # requests set aside after POISON_ATTEMPTS failed tries

    def restart(self) -> None:
        """After a failed step: forget what was gathering and read the unacknowledged again."""
        self._waiting.clear()
        self._claimed = False

    def refresh_config(self) -> None:
        version = self._config.version()
        if version == self._config_version:
            return
        _, docs = self._config.snapshot()
        policies = [Policy.model_validate(document_body(d)) for d in docs.get("policy", [])]
        campaigns = [Campaign.model_validate(document_body(d)) for d in docs.get("campaign", [])]
        self.rules = PolicyRules.combine(policies, campaigns)
        self._router = TopicRouter.from_docs(docs, policy_shards=self._total_shards)
        self._config_version = version

    def step(self, *, block_ms: int = 100) -> Counter[str]:
        """Read, gather, decide what is due, publish, acknowledge. Returns decisions by outcome."""
        if self._config_version < 0:
            self.refresh_config()
        now = int(self._clock() * 1000)
        done: list[tuple[str, str]] = []  # (stream, entry id) to acknowledge, in one round trip
        for stream, entry_id, fields in self._read(block_ms):
            try:
                request = request_of(orjson.loads(fields[b"e"]), now)
            except Exception as exc:
                self._unreadable(stream, entry_id, fields, exc, now)
                continue
            if request is None:
                done.append((stream, entry_id))
                continue
            waiting = self._waiting.setdefault(request.customer, _Waiting(now + self.rules.arbitration_window_ms))
            waiting.requests.append(request)
            waiting.entries.append((stream, entry_id))
        self.refresh_config()  # after the read: a subscription made before a request was published gets it
        now = int(self._clock() * 1000)
        due = {c: w for c, w in self._waiting.items() if w.due_ms <= now}
        groups: dict[str, list[ContactRequest]] = {c: list(w.requests) for c, w in due.items()}
        for held in self.ledger.due_held(now):
            if policy_shard(held.customer, self._total_shards) not in self.shards:
                continue  # another stage's
            if held.customer not in self._waiting or held.customer in due:
                groups.setdefault(held.customer, []).append(held)
        if not groups:
            self._ack(done)
            return Counter()
        decisions, retrying = self._decide(groups, now)
        for customer in due:
            if customer not in retrying and customer in self._waiting:
                done += self._waiting.pop(customer).entries
        self._ack(done)
        made = Counter(d.outcome.split(":")[0] if d.outcome.startswith("lost") else d.outcome for d in decisions)
        self.totals.update(made)
        return made

    def _decide(self, groups: dict[str, list[ContactRequest]], now: int) -> tuple[list[Decision], set[str]]:
        """Decide and publish every group in one go; if that fails for the input's sake, group by
        group. Returns the decisions and the customers whose requests are to be tried again."""
        try:
            return self._decide_and_publish(list(groups.values()), now), set()
        except Exception as exc:
            if _retryable(exc):
                raise
        decisions: list[Decision] = []
        retrying: set[str] = set()
        for customer, group in groups.items():
            try:
                decisions += self._decide_and_publish([group], now)
            except Exception as exc:
                if _retryable(exc):
                    raise
                if self._failed(customer, group, exc, now):
                    retrying.add(customer)
        return decisions, retrying

    def _decide_and_publish(self, groups: list[list[ContactRequest]], now: int) -> list[Decision]:
        decisions = self.ledger.decide(groups, self.rules, now)
        self._publish(decisions, {r.id: r for g in groups for r in g})
        return decisions

    def _failed(self, customer: str, group: list[ContactRequest], exc: Exception, now: int) -> bool:
        """Count a failed try of a customer's requests; below ``POISON_ATTEMPTS`` they wait a
        little and are tried again (True), at it they are set aside (False)."""
        key = poison_key(policy_shard(customer, self._total_shards))
        pipe = self._redis.pipeline(transaction=False)
        for request in group:
            pipe.hincrby(key, request.id, 1)
        pipe.expire(key, self._horizon_s)
        tries = max(pipe.execute()[:-1])
        logger.warning(
            "policy stage: requests of %r failed (try %d): %s",
            customer,
            tries,
            error_text(exc),
            extra=log_fields(
                customer=customer, output_id=[r.id for r in group], rule=sorted({r.rule or "" for r in group})
            ),
        )
        if tries < POISON_ATTEMPTS:
            waiting = self._waiting.get(customer)
            if waiting is not None:
                waiting.due_ms = now + RETRY_AFTER_MS * tries
            return True
        message = f"contact-policy decision failed {tries} times: {error_text(exc)}"
        entries = self._waiting.pop(customer).entries if customer in self._waiting else []
        pipe = self._set_aside([_quarantined(r, message) for r in group], now)
        for stream, entry_id in entries:
            pipe.xack(stream, keys.POLICY_GROUP, entry_id)
        held = _held_members(group)
        if held:  # a held request leaves the held set
            pipe.zrem(keys.HELD, *held)
        pipe.hdel(key, *[r.id for r in group])
        pipe.execute()
        self.poison += len(group)
        return False

    def _unreadable(self, stream: str, entry_id: str, fields: dict[bytes, bytes], exc: Exception, now: int) -> None:
        """Quarantine and acknowledge a stream entry that is not a request one can read."""
        if transient(exc):
            raise exc
        logger.warning(
            "policy stage: entry %s of %s is unreadable: %s",
            entry_id,
            stream,
            error_text(exc),
            extra=log_fields(entry=entry_id),
        )
        record = Quarantined(
            STAGE_SOURCE,
            0,
            entry_id,
            PROCESSING_ERROR,
            f"not a readable contact request: {error_text(exc)}",
            fields.get(b"e", b""),
            "json",
        )
        pipe = self._set_aside([record], now)
        pipe.xack(stream, keys.POLICY_GROUP, entry_id)
        pipe.execute()
        self.poison += 1

    def _set_aside(self, records: list[Quarantined], now: int) -> Any:
        """A transaction that quarantines ``records``, for the caller to add the acknowledgements
        to. The quarantine has a slot of its own on a Redis Cluster, where the request streams,
        the held set and the tries ({policy}) cannot share its transaction: there it is written
        first, on its own. A crash before the acknowledgement then leaves the requests pending,
        to be quarantined again: a record twice, never a request lost without one."""
        pipe = self._redis.pipeline(transaction=True)
        if is_cluster(self._redis):
            self._quarantine.add(records, at_ms=now)
        else:
            self._quarantine.queue(pipe, records, at_ms=now)
        return pipe

    def _ack(self, entries: list[tuple[str, str]]) -> None:
        if not entries:
            return
        pipe = self._redis.pipeline(transaction=False)
        for stream, entry_id in entries:
            pipe.xack(stream, keys.POLICY_GROUP, entry_id)
        pipe.execute()

    def _read(self, block_ms: int) -> list[tuple[str, str, dict[bytes, bytes]]]:
        if not self._claimed:  # what an earlier stage read and did not acknowledge
            self._ensure_groups()
            self._claimed = True
            reply = self._redis.xreadgroup(
                keys.POLICY_GROUP, CONSUMER, dict.fromkeys(self._streams, "0"), count=100_000
            )
            pending = [(text(s), text(i), f) for s, entries in reply or [] for i, f in entries if f]
            if pending:
                return pending
        block = block_ms if not self._waiting else min(block_ms, 50)
        reply = read_group(self._redis, keys.POLICY_GROUP, CONSUMER, self._streams, count=1000, block_ms=block)
        return [(text(s), text(i), f) for s, entries in reply for i, f in entries if f]

    def _ensure_groups(self) -> None:
        for stream in self._streams:
            try:
                self._redis.xgroup_create(stream, keys.POLICY_GROUP, id="0", mkstream=True)
            except redis.ResponseError:  # exists
                pass

    def _publish(self, decisions: list[Decision], requests: dict[str, ContactRequest]) -> None:
        publications = []
        debug = logger.isEnabledFor(logging.DEBUG)  # one line per decision: only when asked for
        for decision in decisions:
            request = requests[decision.id]
            if debug:
                logger.debug(
                    "contact decision for %r: %s",
                    request.customer,
                    decision.outcome,
                    extra=log_fields(
                        customer=request.customer, rule=request.rule, output_id=decision.id, outcome=decision.outcome
                    ),
                )
            if decision.outcome == "sent":
                topic = str(request.event.get("topic", ""))
                event = {k: v for k, v in request.event.items() if k != "topic"}
                publications.append(Publication(f"sent/{decision.id}", topic, event))
            decided = decision_event(decision, request)
            publications.append(Publication(f"decision/{decided['id']}", DECISIONS_TOPIC, decided))
        self._outbox.publish(publications, self._router.after_policy)


def _held_members(group: list[ContactRequest]) -> list[bytes]:
    """The held-set members the requests would have (one that cannot be encoded was never held)."""
    members = []
    for request in group:
        try:
            members.append(held_member(request))
        except TypeError:
            continue
    return members


def _quarantined(request: ContactRequest, message: str) -> Quarantined:
    """A poison request as the quarantine keeps it: the output that asked for the contact."""
    source = str(request.event.get("source") or STAGE_SOURCE)
    try:
        raw = orjson.dumps(request.event)
    except TypeError:  # what could not be published cannot always be encoded either
        raw = orjson.dumps({k: v for k, v in request.event.items() if k != "data"})
    return Quarantined(source, 0, request.id, PROCESSING_ERROR, message, raw, "json")
