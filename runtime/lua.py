"""Lua scripts ship as ``.lua`` files next to the module that runs them (package data, see
``pyproject.toml``), so they are read, diffed and linted as Lua rather than as Python strings."""

from __future__ import annotations

from importlib import resources


def read_script(package: str, name: str) -> str:
    """The source of ``name`` in ``package``; read once, at import of the module that runs it."""
    return resources.files(package).joinpath(name).read_text(encoding="utf-8")
