"""The contact-policy stage: notify and task requests in, decisions and sent contacts out.

Partition actors (and batch campaigns) put every notify and task request on a policy stream,
sharded by customer. The stage reads its shards, lets the requests for one customer gather for
the arbitration window, decides them through the ledger (``ledger.py``, atomic), publishes the
winners on their topics (``notifications.<channel>``, ``tasks.<queue>``, where subscriptions and
channels take them) and every decision on ``decisions``, and only then acknowledges the
requests. Held requests (quiet hours, capacity) wait in a sorted set and are decided again when
they are due, so holds survive restarts. A crash anywhere re-reads the unacknowledged requests:
their recorded decisions are returned again and publication is de-duplicated by id.
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
from runtime.config.contact import Campaign, Policy
from runtime.config.store import ConfigStore
from runtime.config.types import document_body
from runtime.contact.decide import ContactRequest, Decision, PolicyRules
from runtime.contact.ledger import Ledger
from runtime.envelope import format_time_ms
from runtime.outbox import Outbox, Publication
from runtime.streams import text
from runtime.topics import DECISIONS_TOPIC, TopicRouter, policy_shard

logger = logging.getLogger(__name__)

CONSUMER = "stage"


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
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = redis.Redis.from_url(redis_url)
        self._clock = clock
        self.shards = shards
        self._total_shards = total_shards
        self._streams = [keys.policy_requests(s) for s in shards]
        self.ledger = Ledger(self._redis, horizon_s=horizon_s)
        self._outbox = Outbox(self._redis, horizon_s=horizon_s, maxlen=maxlen)
        self._config = ConfigStore(self._redis)
        self._config_version = -1
        self.rules = PolicyRules()
        self._router = TopicRouter({})
        self._waiting: dict[str, _Waiting] = {}
        self._claimed = False
        self.totals: Counter[str] = Counter()

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
        self._router = TopicRouter.from_docs(docs)  # deliver: no policy in front of itself
        self._config_version = version

    def step(self, *, block_ms: int = 100) -> Counter[str]:
        """Read, gather, decide what is due, publish, acknowledge. Returns decisions by outcome."""
        if self._config_version < 0:
            self.refresh_config()
        now = int(self._clock() * 1000)
        done: list[tuple[str, str]] = []  # (stream, entry id) to acknowledge, in one round trip
        for stream, entry_id, fields in self._read(block_ms):
            event = orjson.loads(fields[b"e"])
            request = request_of(event, now)
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
        decisions = self.ledger.decide(list(groups.values()), self.rules, now)
        self._publish(decisions, {r.id: r for g in groups.values() for r in g})
        for customer in due:
            done += self._waiting.pop(customer).entries
        self._ack(done)
        made = Counter(d.outcome.split(":")[0] if d.outcome.startswith("lost") else d.outcome for d in decisions)
        self.totals.update(made)
        return made

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
        reply = self._redis.xreadgroup(
            keys.POLICY_GROUP, CONSUMER, dict.fromkeys(self._streams, ">"), count=1000, block=block
        )
        return [(text(s), text(i), f) for s, entries in reply or [] for i, f in entries if f]

    def _ensure_groups(self) -> None:
        for stream in self._streams:
            try:
                self._redis.xgroup_create(stream, keys.POLICY_GROUP, id="0", mkstream=True)
            except redis.ResponseError:  # exists
                pass

    def _publish(self, decisions: list[Decision], requests: dict[str, ContactRequest]) -> None:
        publications = []
        for decision in decisions:
            request = requests[decision.id]
            if decision.outcome == "sent":
                topic = str(request.event.get("topic", ""))
                event = {k: v for k, v in request.event.items() if k != "topic"}
                publications.append(Publication(f"sent/{decision.id}", topic, event))
            decided = decision_event(decision, request)
            publications.append(Publication(f"decision/{decided['id']}", DECISIONS_TOPIC, decided))
        self._outbox.publish(publications, self._router)
