"""Source adapters: a system's own records (CSV, key=value lines, JSON, Arrow) -> envelopes.

::

    records = parse_records(body, source.format, source)          # one Record per record
    mapping = compile_mapping(source.mapping, source_name=source.name)   # once per config
    envelopes, failures = mapping.apply(records)                   # [(index, dict)], [Failure]

The envelopes are then checked by :func:`runtime.events.envelope.validate_batch`. Pure Python: no
Ray, no Redis.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runtime.sources.mapping import CompiledMapping, Failure, compile_mapping
    from runtime.sources.records import FORMATS, Record, parse_records

# Re-exported lazily: runtime.events.envelope imports runtime.sources.decode, and mapping
# imports the envelope, so loading mapping with the package would be an import cycle.
_EXPORTS = {
    "CompiledMapping": "mapping",
    "Failure": "mapping",
    "compile_mapping": "mapping",
    "FORMATS": "records",
    "Record": "records",
    "parse_records": "records",
}

__all__ = ["FORMATS", "CompiledMapping", "Failure", "Record", "compile_mapping", "parse_records"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'runtime.sources' has no attribute {name!r}")
    return getattr(importlib.import_module(f"runtime.sources.{module}"), name)
