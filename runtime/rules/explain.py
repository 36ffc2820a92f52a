"""``esp why``: a customer's rule state put into words an operator can read."""

from __future__ import annotations

from typing import Any

from runtime.envelope import format_time_ms
from runtime.rules.compiled import CompiledRule, LeafSpec
from runtime.rules.state import GroupState, WindowState


def _refs(refs: list[tuple[str, str]]) -> list[dict[str, str]]:
    return [{"source": s, "id": i} for s, i in refs]


def explain_rule(rule: CompiledRule, state: WindowState | GroupState | None) -> dict[str, Any]:
    """What a customer's state for ``rule`` says: what holds, by which events, what is missing,
    and when it runs out (times are event times, ms)."""
    out: dict[str, Any] = {"rule": rule.name, "version": rule.version, "state": state is not None}
    if state is None:
        out["missing"] = "nothing has matched yet"
        return out
    out["cooldown_until"] = format_time_ms(state.cooldown_until) if state.cooldown_until is not None else None
    if isinstance(state, WindowState):
        leaf = rule.leaf
        out["window"] = _explain_window(leaf, state) if leaf else {}
        return out
    leaves = {leaf.path: leaf for leaf in rule.group.leaves()}  # type: ignore[union-attr]
    out["conditions"] = {
        key: _explain_window(leaves[key.partition("#")[0]], window)
        for key, window in state.windows.items()
        if key.partition("#")[0] in leaves
    }
    out["satisfied"] = {
        path: {str(i): {"at": format_time_ms(t), "events": _refs(refs)} for i, (t, refs) in occ.items()}
        for path, occ in state.latest.items()
    }
    out["sequence_progress"] = {
        path: {f"{k} steps": {"since": format_time_ms(t), "events": _refs(refs)} for k, (t, refs) in m.items()}
        for path, m in state.partials.items()
    }
    out["timers"] = {
        path: {"due": format_time_ms(t), "events": _refs(refs)} for path, (t, refs) in state.timers.items()
    }
    out["open_since"] = {path: format_time_ms(t) for path, (t, _) in state.inside.items()}
    return out


def _explain_window(leaf: LeafSpec, window: WindowState) -> dict[str, Any]:
    info: dict[str, Any] = {"events": _refs(window.refs), "count": len(window.times)}
    if leaf.aggregate is not None:
        info["aggregate"] = {"fn": leaf.aggregate.fn, "of": ".".join(leaf.aggregate.path), "values": window.values}
        info["needs"] = f"{leaf.aggregate.fn} {leaf.aggregate.op} {leaf.aggregate.bound:g}"
    else:
        info["needs"] = f"{leaf.threshold} events"
    if leaf.window_ms and window.times:
        info["oldest_expires_at"] = format_time_ms(window.times[0] + leaf.window_ms)
    return info
