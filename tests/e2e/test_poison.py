"""Invariant 10 on the real platform: a poison entry in a partition log (event data nested deeper
than orjson writes, put straight into the log as a corrupt or legacy entry would be) is tried a
bounded number of times, quarantined with reason ``processing_error``, counted in
``esp_poison_entries_total``, and every event before, beside and after it fires exactly once."""

from __future__ import annotations

import time

import pytest
import ray

from runtime.dev.client import EspClient
from runtime.events.envelope import Event
from runtime.log.partition_log import PartitionLog
from runtime.log.partitioning import partition_of
from runtime.redis_client import connect
from runtime.sources.quarantine import POISON_ATTEMPTS, PROCESSING_ERROR
from tests.e2e.conftest import SOURCE_KEY, make_platform, stop_platform
from tests.e2e.helpers import T0, as_admin, event, every_event_rule, read_exactly


@pytest.fixture
def poison_platform(ray_session, tmp_path):
    """Its own platform: the module fixture fails a module whose actors hit step failures, and
    this test causes some on purpose."""
    platform = make_platform(tmp_path)
    with EspClient(platform.base_url) as admin:
        admin.put_config({"kind": "source", "name": "e2e", "api_key": SOURCE_KEY})
        admin.put_config(every_event_rule("poison-every", "poison.tick"))
        admin.put_config({"kind": "subscription", "name": "out", "topics": ["business.*"]})
        admin.put_config({"kind": "subscription", "name": "raw", "topics": ["atomic.*"]})  # publishes data
    yield platform
    stop_platform(platform)


def nested(depth: int) -> dict:
    value: dict = {"leaf": 1}
    for _ in range(depth):
        value = {"a": value}
    return value


def test_a_poison_log_entry_is_quarantined_and_later_events_still_fire(poison_platform):
    platform = poison_platform
    with EspClient(platform.base_url, key=SOURCE_KEY) as source:
        source.send([event(i, "poison.tick", prefix="before", customer=f"c{i % 5}") for i in range(20)])
        client = connect(platform.settings.effective_redis_url())
        poison = [
            Event(f"beside{i}", "poison.tick", T0 + 100 + i, "c1", "c1", "e2e", data, T0)
            for i, data in enumerate([{}, {"deep": nested(300)}, {}])
        ]
        PartitionLog(client, horizon_s=3600).append(
            {partition_of("c1", platform.settings.partitions): poison}, now_ms=int(time.time() * 1000)
        )
        source.send([event(i, "poison.tick", prefix="after", customer=f"c{i % 5}") for i in range(20)])

    expected = {f"before{i}" for i in range(20)} | {f"after{i}" for i in range(20)} | {"beside0", "beside2"}
    with EspClient(platform.base_url) as admin:
        received = read_exactly(platform, admin, "out", len(expected), timeout_s=120)
        quarantined = admin.request("GET", "/v1/quarantine", params={"reason": PROCESSING_ERROR})["items"]
    triggering = [e["data"]["events"][0]["id"] for e in received]
    assert sorted(triggering) == sorted(expected)  # each once: nothing lost, nothing doubled
    assert [(q["source"], q["id"]) for q in quarantined] == [("e2e", "beside1")]
    assert f"failed {POISON_ATTEMPTS} times" in quarantined[0]["message"]
    assert as_admin.get(f"{platform.base_url}/v1/quarantine/not-a-qid").status_code == 404

    statuses = [ray.get(actor.status.remote()) for actor in platform.actors]
    assert sum(s["poison"] for s in statuses) == 1
    assert sum(s["errors"] for s in statuses) == POISON_ATTEMPTS - 1  # bounded: then it moved on
    deadline, text = time.monotonic() + 60, ""
    while time.monotonic() < deadline and "\nesp_poison_entries_total{" not in text:  # under ESP's own name
        text = as_admin.get(f"{platform.base_url}/metrics", timeout=10).text
        time.sleep(0.25)
    line = next(ln for ln in text.splitlines() if ln.startswith("esp_poison_entries_total{"))
    assert 'stage="partition"' in line and line.rstrip().endswith(" 1.0")
