"""The modules under unit test are pure: importing them starts and imports neither Ray nor Redis."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PURE = [
    "runtime.events.envelope",
    "runtime.rules",
    "runtime.rules.engine",
    "runtime.rules.compiled",
    "runtime.windows",
    "runtime.durations",
    "runtime.log.partitioning",
    "runtime.config.documents",
    "runtime.rules.models",
    "runtime.sources.models",
    "runtime.events.models",
    "runtime.subscriptions.topics",
    "runtime.log.checkpoint",
    "runtime.settings",
    "runtime.errors",
    "runtime.expr",
    "runtime.sources",
    "runtime.events.catalogue",
    "runtime.events.identity",
    "runtime.events.consent",
    "runtime.events.profiles",
    # the in-memory stores unit tests use, with the protocols they implement
    "runtime.config.memory",
    "runtime.events.memory",
    "runtime.log.memory",
    "runtime.policy.memory",
    "runtime.subscriptions.memory",
]


def test_pure_modules_import_neither_ray_nor_redis():
    code = (
        "import importlib, json, sys\n"
        f"for name in {PURE!r}: importlib.import_module(name)\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('ray', 'redis'))))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert json.loads(result.stdout) == []
