"""Source adapters: a system's own records (CSV, key=value lines, JSON, Arrow) -> envelopes.

::

    records = parse_records(body, source.format, source)          # one Record per record
    mapping = compile_mapping(source.mapping, source_name=source.name)   # once per config
    envelopes, failures = mapping.apply(records)                   # [(index, dict)], [Failure]

The envelopes are then checked by :func:`runtime.events.envelope.validate_batch`. Pure Python: no
Ray, no Redis.
"""

from __future__ import annotations

from runtime.sources.mapping import CompiledMapping, Failure, compile_mapping
from runtime.sources.records import FORMATS, Record, parse_records

__all__ = ["FORMATS", "CompiledMapping", "Failure", "Record", "compile_mapping", "parse_records"]
