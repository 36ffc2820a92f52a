"""Test helpers for a partition runner stepped by hand against a real redis-server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from runtime.dev.redis_server import EmbeddedRedis
from runtime.partition import PartitionRunner
from runtime.settings import EspSettings
from runtime.subscriptions.pull import SubscriptionReader

PARTITIONS = 4


def runner_settings(server: EmbeddedRedis, tmp_path: Path, **overrides: Any) -> EspSettings:
    """Four partitions, no checkpoint unless asked for, and no reorder wait unless a test asks
    for it: the runner is stepped by hand with a clock that does not move, and the wait is tested
    on its own (tests/unit/test_eventtime.py; the e2e tests run the default)."""
    return EspSettings(
        state_dir=tmp_path,
        redis_url=server.url,
        **{"partitions": PARTITIONS, "checkpoint_interval_s": 3600, "reorder_wait_ms": 0, **overrides},
    )


def drain(runner: PartitionRunner) -> None:
    """Step until a read finds no log entry."""
    while runner.step(block_ms=10).entries:
        pass


def pulled(client: Any, subscription: str, max_events: int = 10_000) -> list[dict[str, Any]]:
    """What ``subscription`` holds now, pulled without waiting (not acknowledged)."""
    reader = SubscriptionReader(client, visibility_timeout_ms=60_000)
    return reader.pull(subscription, max_events=max_events, wait_ms=0)["events"]
