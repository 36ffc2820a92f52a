"""Lua scripts ship as ``.lua`` files next to the module that runs them (package data, see
``pyproject.toml``), so they are read, diffed and linted as Lua rather than as Python strings."""

from __future__ import annotations

from importlib import resources
from typing import Any


def read_script(package: str, name: str) -> str:
    """The source of ``name`` in ``package``; read once, at import of the module that runs it."""
    return resources.files(package).joinpath(name).read_text(encoding="utf-8")


def queue_script(pipe: Any, source: str, keys: list[Any], args: list[Any]) -> None:
    """Add a run of the Lua script ``source`` to ``pipe``. A Redis Cluster client routes it by
    its first key and refuses EVALSHA in pipelines, so scripts go as EVAL (Redis caches the
    compiled script by its digest; the cost is sending the source)."""
    pipe.execute_command("EVAL", source, len(keys), *keys, *args)
