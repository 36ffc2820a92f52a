"""The layer contract in pyproject.toml covers the whole domain: every module and package of
``runtime/`` but the application code (``runtime.cli``, ``runtime.dev``) is a source module of
the contract that forbids Ray, the shells and the frameworks, so a new package cannot slip past
``make layers`` by not being listed."""

from __future__ import annotations

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11 on; the check needs to run on one version only
ROOT = Path(__file__).resolve().parents[2]
APPLICATION = {"runtime.cli", "runtime.dev"}


def domain_contract() -> dict:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contracts = config["tool"]["importlinter"]["contracts"]
    return next(c for c in contracts if "runtime.rules" in c.get("source_modules", []))


def test_every_domain_module_is_under_the_contract():
    present = {
        f"runtime.{p.stem if p.suffix == '.py' else p.name}"
        for p in (ROOT / "runtime").iterdir()
        if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").exists()
    }
    assert present - APPLICATION == set(domain_contract()["source_modules"])


def test_the_domain_contract_forbids_ray_the_shells_and_the_frameworks():
    assert {"ray", "serve", "actors", "fastapi", "click"} <= set(domain_contract()["forbidden_modules"])
