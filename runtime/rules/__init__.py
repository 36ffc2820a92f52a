"""The rule engine: compiled rules (``compiled``) and per-partition evaluation (``engine``)."""

from runtime.rules.compiled import CompiledRule, compile_rule
from runtime.rules.engine import Output, PartitionEngine

__all__ = ["CompiledRule", "Output", "PartitionEngine", "compile_rule"]
