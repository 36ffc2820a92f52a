"""Hot reload of rules under load, through the public HTTP contract only.

While a background thread keeps POSTing a steady stream of events for many customers, rules are
added, changed (actions only, or their condition), disabled, re-enabled and deleted through
``PUT``/``DELETE /v1/config/rule/{name}``. What every output should be is computed from what was
sent and *when it was acknowledged* relative to each config change:

- an event whose POST returned before a change's request was sent was accepted under the config
  before it;
- an event whose POST was sent after a change's answer came back was accepted under the config
  after it;
- a batch whose POST overlapped a change may have been accepted under either.

The tests check that a change governs every event accepted after it returned (none missed, none
under an older version, disabled and deleted rules silent), that state survives or resets as the
README says, and that nothing fires twice. The last test checks that events accepted *before* a
change are still evaluated under the config they were accepted with, also when the actors are
far behind (a burst backlog): partition actors apply config changes in log order.

One scenario runs once for the module (fixture ``run``); each test checks one requirement of the
hot-reload issue on its results. Partition-actor step failures fail the module (``platform``
fixture in conftest).
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

from runtime.dev.client import EspClient
from runtime.log.partitioning import assign, partition_of
from tests.e2e.conftest import SOURCE_KEY
from tests.e2e.helpers import every_event_rule

pytestmark = pytest.mark.slow

RATE_EVENTS_PER_S = 3000  # target load; the thread never sends faster than this
BATCH = 200
LOAD_CUSTOMERS = 2000
SOURCE = "e2e"

# which load events qualify for which load rule: flags in data, from the event's sequence number
FLAGS = {"pick": 4, "hot": 5, "dis": 6, "del": 7}
LOAD_RULES = {"hr-every": "pick", "hr-added": "hot", "hr-disable": "dis", "hr-delete": "del"}


def load_rule(name: str, flag: str, **extra: Any) -> dict[str, Any]:
    return {
        "kind": "rule",
        "name": name,
        "when": {"event": "hr.tick", "where": f"data.{flag} == true"},
        "then": [{"emit": name}],
        **extra,
    }


def count_rule(name: str, event: str, *, gte: int = 3, where: str | None = None, emit: str | None = None) -> dict:
    when: dict[str, Any] = {"event": event, "count": {"gte": gte}, "within": "1h"}
    if where is not None:
        when["where"] = where
    return {"kind": "rule", "name": name, "when": when, "then": [{"emit": emit or name}]}


# --- the load ---------------------------------------------------------------------------------


@dataclass(slots=True)
class Batch:
    start: float  # monotonic, before the POST was sent
    end: float  # monotonic, after its 202 came back
    events: list[dict[str, Any]]


class Load(threading.Thread):
    """POSTs batches of ``BATCH`` events at up to ``RATE_EVENTS_PER_S`` until stopped."""

    def __init__(self, base_url: str) -> None:
        super().__init__(name="hot-reload-load", daemon=True)
        self.base_url = base_url
        self.batches: list[Batch] = []
        self.error: BaseException | None = None
        self.retries = 0
        self._stop_event = threading.Event()
        self._progress = threading.Condition()

    def run(self) -> None:
        try:
            with EspClient(self.base_url, key=SOURCE_KEY) as client:
                seq = 0
                next_at = time.monotonic()
                while not self._stop_event.is_set():
                    now_ms = int(time.time() * 1000)
                    events = []
                    for _ in range(BATCH):
                        data = {flag: seq % every == 0 for flag, every in FLAGS.items()}
                        events.append(
                            {
                                "id": f"ld{seq}",
                                "type": "hr.tick",
                                "time": now_ms,
                                "subject": f"lc{seq % LOAD_CUSTOMERS:04d}",
                                "data": {"n": seq, **data},
                            }
                        )
                        seq += 1
                    body = b"\n".join(orjson.dumps(e) for e in events)
                    start = time.monotonic()
                    answer, retries = client.post_body(body, "application/x-ndjson")
                    end = time.monotonic()
                    self.retries += retries
                    assert answer["accepted"] + answer["duplicates"] == BATCH, answer
                    with self._progress:
                        self.batches.append(Batch(start, end, events))
                        self._progress.notify_all()
                    next_at += BATCH / RATE_EVENTS_PER_S
                    self._stop_event.wait(max(0.0, next_at - time.monotonic()))
        except BaseException as exc:  # reported by the main thread
            self.error = exc
            with self._progress:
                self._progress.notify_all()

    def wait_batches(self, n: int, timeout_s: float = 30.0) -> None:
        """Block until ``n`` more batches have been acknowledged: the change before ran under load."""
        with self._progress:
            target = len(self.batches) + n
            ok = self._progress.wait_for(lambda: len(self.batches) >= target or self.error, timeout_s)
        assert self.error is None, f"load thread failed: {self.error!r}"
        assert ok, f"the load made no progress for {timeout_s} s"

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=60)
        assert not self.is_alive(), "load thread did not stop"
        assert self.error is None, f"load thread failed: {self.error!r}"


# --- config changes with their time intervals -------------------------------------------------


@dataclass(slots=True)
class Change:
    start: float
    end: float
    version: int | None  # the rule's version from then on; None: not loaded (absent or disabled)


@dataclass(slots=True)
class Run:
    load: Load
    timelines: dict[str, list[Change]]
    outputs: list[dict[str, Any]]  # de-duplicated by output id
    deliveries: int
    scenario: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def timed_put(admin: EspClient, timelines: dict[str, list[Change]], doc: dict[str, Any]) -> int:
    start = time.monotonic()
    answer = admin.put_config(doc)
    end = time.monotonic()
    enabled = doc.get("enabled", True)
    timelines[doc["name"]].append(Change(start, end, answer["version"] if enabled else None))
    return int(answer["version"])


def timed_delete(admin: EspClient, timelines: dict[str, list[Change]], name: str) -> None:
    start = time.monotonic()
    answer = admin.request("DELETE", f"/v1/config/rule/{name}")
    end = time.monotonic()
    assert answer["deleted"] is True
    timelines[name].append(Change(start, end, None))


def versions_at(timeline: list[Change], batch: Batch, *, exact: bool = True) -> set[int | None]:
    """The rule versions (None: not loaded) the batch's events may be evaluated under.

    ``exact``: the version current when the batch was accepted; one, unless the POST overlapped a
    change. Otherwise: that version or any later one, i.e. never a version older than the one
    current at acceptance."""
    states: list[int | None] = [None] + [c.version for c in timeline]
    certain = sum(1 for c in timeline if c.end < batch.start)  # answered before the POST was sent
    possible = sum(1 for c in timeline if c.start <= batch.end)  # sent before the POST was answered
    return set(states[certain : possible + 1] if exact else states[certain:])


# --- scenario customers -----------------------------------------------------------------------


def customers_on_every_actor(prefix: str, partitions: int, actors: int, per_actor: int = 2) -> list[str]:
    """Customers in distinct partitions, ``per_actor`` on each partition actor."""
    chosen: list[str] = []
    for owned in assign(partitions, actors):
        used: set[int] = set()
        n = 0
        while len(used) < per_actor:
            name = f"{prefix}{n}"
            p = partition_of(name, partitions)
            if p in owned and p not in used:
                used.add(p)
                chosen.append(name)
            n += 1
    return chosen


def one_customer_per_partition(prefix: str, partitions: int) -> list[str]:
    found: dict[int, str] = {}
    n = 0
    while len(found) < partitions:
        found.setdefault(partition_of(f"{prefix}{n}", partitions), f"{prefix}{n}")
        n += 1
    return list(found.values())


def wait_window_counts(admin: EspClient, rule: str, customers: list[str], count: int, timeout_s: float = 30.0) -> None:
    """Until each customer's window for ``rule`` holds ``count`` events (``GET /v1/decisions``)."""
    deadline = time.monotonic() + timeout_s
    pending = list(customers)
    while pending and time.monotonic() < deadline:
        answer = admin.request("GET", f"/v1/decisions/{pending[0]}", params={"rule": rule})
        if answer["rules"] and answer["rules"][0].get("window", {}).get("count") == count:
            pending.pop(0)
        else:
            time.sleep(0.05)
    assert not pending, f"{rule}: windows of {pending} did not reach {count} events within {timeout_s} s"


def scenario_event(customer: str, kind: str, i: int, base_ms: int, **data: Any) -> dict[str, Any]:
    return {"id": f"{customer}-{kind}-{i}", "type": kind, "time": base_ms + i * 1000, "subject": customer, "data": data}


def collect_after_barrier(
    admin: EspClient, subscription: str, barrier_type: str, partitions: int, timeout_s: float = 120.0
) -> tuple[list[dict[str, Any]], int]:
    """Send one ``barrier_type`` event to every partition, then pull and ack until each of them
    has fired (its rule emits on the same subscription) and nothing more comes. A partition
    publishes in log order, so by then it has published everything accepted before the barrier.
    Returns the outputs de-duplicated by id (delivery is at least once) and the delivery count."""
    now_ms = int(time.time() * 1000)
    barrier = [
        scenario_event(c, barrier_type, 0, now_ms) for c in one_customer_per_partition(f"{barrier_type}-", partitions)
    ]
    assert admin.send(barrier).accepted == partitions
    barrier_ids = {e["id"] for e in barrier}
    by_id: dict[str, dict[str, Any]] = {}
    deliveries = 0
    seen: set[str] = set()
    drained = False
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = admin.pull(subscription, max_events=5000, wait_s=0.5)["events"]
        if got:
            admin.ack(subscription, [e["ack_id"] for e in got])
        deliveries += len(got)
        for e in got:
            by_id.setdefault(e["id"], e)
            if e["data"]["events"][0]["id"] in barrier_ids:
                seen.add(e["data"]["events"][0]["id"])
        if seen >= barrier_ids:
            if drained and not got:
                break
            drained = True
    assert seen >= barrier_ids, f"only {len(seen)}/{partitions} partitions passed the barrier within {timeout_s} s"
    return list(by_id.values()), deliveries


# --- the run ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run(platform: Any) -> Run:
    began = time.monotonic()
    partitions = platform.settings.partitions
    actors = len(platform.actors)
    timelines: dict[str, list[Change]] = defaultdict(list)
    admin = EspClient(platform.base_url, key=SOURCE_KEY)
    admin.put_config({"kind": "subscription", "name": "hr", "topics": ["business.hr-*"]})

    # rules in place before the load starts
    for name in ("hr-every", "hr-disable", "hr-delete"):
        timed_put(admin, timelines, load_rule(name, LOAD_RULES[name]))
    scenario_customers = {
        rule: customers_on_every_actor(f"{rule}-c", partitions, actors)
        for rule in ("hr-keep", "hr-act", "hr-shape", "hr-where")
    }
    timed_put(admin, timelines, count_rule("hr-keep", "hr.keep"))
    timed_put(admin, timelines, count_rule("hr-act", "hr.act"))
    timed_put(admin, timelines, count_rule("hr-shape", "hr.shape"))
    timed_put(admin, timelines, count_rule("hr-where", "hr.where", where="data.x >= 0"))
    timed_put(admin, timelines, every_event_rule("hr-end", "hr.end"))

    load = Load(platform.base_url)
    load.start()
    try:
        load.wait_batches(5)

        # 2, 3: two events per stateful customer, processed (their windows hold 2) before any reload
        base_ms = int(time.time() * 1000)
        kinds = {"hr-keep": "hr.keep", "hr-act": "hr.act", "hr-shape": "hr.shape", "hr-where": "hr.where"}
        first = [
            scenario_event(c, kinds[rule], i, base_ms, x=5)
            for rule, customers in scenario_customers.items()
            for c in customers
            for i in (1, 2)
        ]
        assert admin.send(first).accepted == len(first)
        for rule, customers in scenario_customers.items():
            wait_window_counts(admin, rule, customers, 2)

        # 1: a rule added mid-stream (also "another rule's reload" for the unchanged hr-keep)
        timed_put(admin, timelines, load_rule("hr-added", "hot"))
        load.wait_batches(4)

        # 5: a version bump of a rule that fires for every picked event (priority is not its shape)
        timed_put(admin, timelines, load_rule("hr-every", "pick", priority=60))
        # 3: actions only / the count threshold / the where filter change
        assert timed_put(admin, timelines, count_rule("hr-act", "hr.act", emit="hr-act-v2")) == 2
        assert timed_put(admin, timelines, count_rule("hr-shape", "hr.shape", gte=4)) == 2
        assert timed_put(admin, timelines, count_rule("hr-where", "hr.where", where="data.x >= 1")) == 2

        # the third event for each stateful customer, accepted after the changes returned
        third = [
            scenario_event(c, kinds[rule], 3, base_ms, x=5)
            for rule, customers in scenario_customers.items()
            for c in customers
        ]
        assert admin.send(third).accepted == len(third)
        # the reset windows need their counts afresh: hr-shape 4 (3..6), hr-where 3 (3..5)
        more = [
            scenario_event(c, "hr.shape", i, base_ms, x=5) for c in scenario_customers["hr-shape"] for i in (4, 5, 6)
        ] + [scenario_event(c, "hr.where", i, base_ms, x=5) for c in scenario_customers["hr-where"] for i in (4, 5)]
        assert admin.send(more).accepted == len(more)
        load.wait_batches(4)

        # 4: disable one rule, delete another
        timed_put(admin, timelines, load_rule("hr-disable", "dis", enabled=False))
        timed_delete(admin, timelines, "hr-delete")
        load.wait_batches(4)

        # 5 again, and re-enabling the disabled rule
        timed_put(admin, timelines, load_rule("hr-every", "pick", priority=70))
        timed_put(admin, timelines, load_rule("hr-disable", "dis"))
        load.wait_batches(5)
    finally:
        load.stop()

    outputs, deliveries = collect_after_barrier(admin, "hr", "hr.end", partitions)
    admin.close()
    return Run(
        load=load,
        timelines=dict(timelines),
        outputs=outputs,
        deliveries=deliveries,
        scenario={"customers": scenario_customers},
        seconds=time.monotonic() - began,
    )


# --- checks -----------------------------------------------------------------------------------


def load_outputs(run: Run) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """(rule, triggering event id) -> outputs, for the load rules (count 1: one event each)."""
    found: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for out in run.outputs:
        if out["data"]["rule"] in LOAD_RULES:
            assert [m["source"] for m in out["data"]["events"]] == [SOURCE]
            found[(out["data"]["rule"], out["data"]["events"][0]["id"])].append(out)
    return found


def check_load_rule(run: Run, rule: str, *, exact: bool) -> dict[str, Any]:
    """Every qualifying load event against the versions the rule's timeline allows for it: at
    most one output; an output only with an allowed version; none only if "not loaded" is allowed."""
    flag = LOAD_RULES[rule]
    outputs = load_outputs(run)
    timeline = run.timelines.get(rule, [])
    problems: dict[str, list[Any]] = defaultdict(list)
    counted: dict[str, int] = defaultdict(int)
    for batch in run.load.batches:
        allowed = versions_at(timeline, batch, exact=exact)
        label = "|".join(sorted("off" if v is None else f"v{v}" for v in allowed))
        for event in batch.events:
            if not event["data"][flag]:
                continue
            counted[label] += 1
            got = [o["data"]["rule_version"] for o in outputs.pop((rule, event["id"]), [])]
            if len(got) > 1:
                problems["several outputs"].append((event["id"], got))
            elif got and got[0] not in allowed:
                problems["output with a version not allowed"].append((event["id"], label, got[0]))
            elif not got and None not in allowed:
                problems["missed"].append((event["id"], label))
    strays = [k for k in outputs if k[0] == rule]
    if strays:
        problems["outputs for events not sent or not qualifying"] = strays
    return {"problems": {k: (len(v), v[:5]) for k, v in problems.items()}, "counted": dict(counted)}


def outputs_of(run: Run, rule: str) -> list[dict[str, Any]]:
    return [o for o in run.outputs if o["data"]["rule"] == rule]


def test_the_scenario_ran_under_load(run: Run) -> None:
    events = sum(len(b.events) for b in run.load.batches)
    span = run.load.batches[-1].end - run.load.batches[0].start
    print(
        f"\nload: {events} events in {len(run.load.batches)} batches over {span:.1f} s "
        f"({events / span:.0f} events/s, {run.load.retries} retries); "
        f"{len(run.outputs)} outputs ({run.deliveries} deliveries); scenario {run.seconds:.1f} s"
    )
    assert events >= 20 * BATCH
    assert events / span >= 1000, "the load was too thin to show anything"
    # every config change happened while batches were in flight on both sides of it
    for rule, timeline in run.timelines.items():
        for change in timeline[1:] if rule != "hr-added" else timeline:
            assert any(b.end < change.start for b in run.load.batches), rule
            assert any(b.start > change.end for b in run.load.batches), rule


def test_a_rule_added_mid_stream_fires_for_every_event_accepted_after_its_put(run: Run) -> None:
    result = check_load_rule(run, "hr-added", exact=False)
    assert result["counted"].get("v1", 0) > 100, result["counted"]  # after the PUT: must fire, with v1
    assert not result["problems"], result


def test_disabling_and_deleting_a_rule_stop_its_outputs_for_events_accepted_after(run: Run) -> None:
    deleted = check_load_rule(run, "hr-delete", exact=False)
    assert deleted["counted"].get("off", 0) > 50, deleted["counted"]  # after the DELETE: never fires
    assert not deleted["problems"], deleted
    disabled = check_load_rule(run, "hr-disable", exact=False)
    # accepted while disabled: fires not with v1 (only, under the known bug, with the re-enabled v3)
    assert disabled["counted"].get("off|v3", 0) > 50, disabled["counted"]
    assert disabled["counted"].get("v3", 0) > 50, disabled["counted"]  # re-enabled: fires again, with v3
    assert not disabled["problems"], disabled


def test_no_output_carries_a_version_older_than_the_one_current_when_its_event_was_accepted(run: Run) -> None:
    result = check_load_rule(run, "hr-every", exact=False)
    assert result["counted"].get("v3", 0) > 100, result["counted"]
    assert not result["problems"], result
    assert {o["data"]["rule_version"] for o in outputs_of(run, "hr-every")} == {1, 2, 3}


def fires_by_customer(run: Run, rule: str) -> dict[str, list[tuple[str, int, list[str]]]]:
    found: dict[str, list[tuple[str, int, list[str]]]] = defaultdict(list)
    for o in outputs_of(run, rule):
        found[o["subject"]].append((o["type"], o["data"]["rule_version"], [m["id"] for m in o["data"]["events"]]))
    return dict(found)


def test_an_unchanged_rule_keeps_its_state_across_another_rules_reload(run: Run) -> None:
    customers = run.scenario["customers"]["hr-keep"]
    expected = {c: [("business.hr-keep", 1, [f"{c}-hr.keep-{i}" for i in (1, 2, 3)])] for c in customers}
    assert fires_by_customer(run, "hr-keep") == expected


def test_changing_only_the_actions_keeps_state_and_fires_with_the_new_version(run: Run) -> None:
    customers = run.scenario["customers"]["hr-act"]
    expected = {c: [("business.hr-act-v2", 2, [f"{c}-hr.act-{i}" for i in (1, 2, 3)])] for c in customers}
    assert fires_by_customer(run, "hr-act") == expected


def test_changing_the_condition_resets_state(run: Run) -> None:
    """Count 3 -> 4: the two earlier events are forgotten, so the rule fires once four new ones
    have come (not at the third event with the old ones). Changing ``where`` resets the same way."""
    shape = run.scenario["customers"]["hr-shape"]
    assert fires_by_customer(run, "hr-shape") == {
        c: [("business.hr-shape", 2, [f"{c}-hr.shape-{i}" for i in (3, 4, 5, 6)])] for c in shape
    }
    where = run.scenario["customers"]["hr-where"]
    assert fires_by_customer(run, "hr-where") == {
        c: [("business.hr-where", 2, [f"{c}-hr.where-{i}" for i in (3, 4, 5)])] for c in where
    }


BURST_EVENTS = 40_000  # per round, posted as requests of BURST_REQUEST
BURST_REQUEST = 10_000
BURST_ROUNDS = 3  # the race needs a config poll to fall inside the backlog; stop at the first round that shows it
FAN_OUT = 5  # actions of a rule on every burst event (to a topic nobody subscribes to): the actors fall behind


def burst_rule(name: str, event: str) -> dict[str, Any]:
    return {"kind": "rule", "name": name, "when": {"event": event, "where": "data.k == 0"}, "then": [{"emit": name}]}


def test_events_accepted_before_a_change_are_evaluated_under_the_config_they_were_accepted_with(
    platform: Any, run: Run
) -> None:
    """The requirement in full: each event is evaluated under the config current when it was
    accepted, so a rule never fires for events accepted before it was added, still fires for
    events accepted before it was disabled or deleted, and each output carries the version
    current at acceptance. First on the steady load of the module's run; if that happened not to
    show a difference, on bursts that leave the partition actors a backlog when the config changes:
    a rule added and a rule bumped after the whole burst was acknowledged must not apply to it."""
    steady = {rule: check_load_rule(run, rule, exact=True)["problems"] for rule in LOAD_RULES}
    steady = {rule: problems for rule, problems in steady.items() if problems}
    print(f"\nsteady load, events evaluated under a config other than the one at acceptance: {steady}")
    assert not steady, steady
    partitions = platform.settings.partitions
    rounds = []
    with EspClient(platform.base_url, key=SOURCE_KEY) as admin:
        admin.put_config({"kind": "subscription", "name": "hrb", "topics": ["business.hrb-*"]})
        for r in range(BURST_ROUNDS):
            tick, old, new = f"hrb{r}.tick", f"hrb-old-{r}", f"hrb-new-{r}"
            assert admin.put_config(burst_rule(old, tick))["version"] == 1
            admin.put_config(every_event_rule(f"hrb-end-{r}", f"hrb{r}.end"))
            fan = [{"emit": f"fan-hrb-{k}"} for k in range(FAN_OUT)]
            admin.put_config({"kind": "rule", "name": f"fan-hrb-{r}", "when": {"event": tick}, "then": fan})
            now_ms = int(time.time() * 1000)
            burst = (
                {"id": f"hrb{r}-{i}", "type": tick, "time": now_ms, "subject": f"bc{i % 3000}", "data": {"k": i % 4}}
                for i in range(BURST_EVENTS)
            )
            started = time.monotonic()
            assert admin.send(burst, batch_size=BURST_REQUEST).accepted == BURST_EVENTS
            acked = time.monotonic()
            # every burst event is acknowledged (durable in the log under version 1) before these
            admin.put_config(burst_rule(new, tick))
            assert admin.put_config({**burst_rule(old, tick), "priority": 60})["version"] == 2
            outputs, _ = collect_after_barrier(admin, "hrb", f"hrb{r}.end", partitions)
            admin.request("DELETE", f"/v1/config/rule/fan-hrb-{r}")
            olds = [o for o in outputs if o["data"]["rule"] == old]
            news = [o for o in outputs if o["data"]["rule"] == new]
            assert len(olds) == BURST_EVENTS // 4
            later = sum(1 for o in olds if o["data"]["rule_version"] != 1)
            rounds.append((r, f"{BURST_EVENTS / (acked - started):.0f} events/s", len(news), later))
            if news or later:
                break
    print(f"\nbursts (round, ingest rate, new-rule fires for earlier events, outputs with the later version): {rounds}")
    assert all((news, later) == (0, 0) for _, _, news, later in rounds), rounds
