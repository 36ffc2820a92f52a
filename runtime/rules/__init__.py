"""Rules: the rule documents (``models``), compiled once (``compiled``), evaluated per
partition (``engine``, advancing state with ``operators`` over windows of ``runtime.windows``),
explained (``explain``) and replayed offline (``backtest``)."""

from runtime.rules.compiled import CompiledRule, compile_rule
from runtime.rules.engine import Output, PartitionEngine

__all__ = ["CompiledRule", "Output", "PartitionEngine", "compile_rule"]
