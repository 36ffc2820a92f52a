"""``esp why``: a customer's rule state put into words an operator can read."""

from __future__ import annotations

from typing import Any

from runtime.events.envelope import format_time_ms
from runtime.rules.compiled import AbsenceSpec, CompiledRule, GeofenceSpec, LeafSpec
from runtime.rules.operators import nodes_of
from runtime.rules.state import GroupState, Window, split_ref


def _refs(refs: list[str]) -> list[dict[str, str]]:
    return [{"source": s, "id": i} for s, i in map(split_ref, refs)]


def explain_rule(rule: CompiledRule, state: Window | GroupState | None, cooldown_until: int | None) -> dict[str, Any]:
    """What a customer's state for ``rule`` says: what holds, by which events, what is missing,
    and when it runs out (times are event times, ms). ``cooldown_until`` is the plain-condition
    rule's cooldown (a GroupState holds its own)."""
    if isinstance(state, GroupState):
        cooldown_until = state.cooldown_until
    out: dict[str, Any] = {
        "rule": rule.name,
        "version": rule.version,
        "state": bool(state) or cooldown_until is not None,
    }
    if not out["state"]:
        out["missing"] = "nothing has matched yet"
        return out
    out["cooldown_until"] = format_time_ms(cooldown_until) if cooldown_until is not None else None
    if not isinstance(state, GroupState):
        leaf = rule.leaf
        out["window"] = _explain_window(leaf, state or []) if leaf else {}
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
        path: {
            f"{k} steps": {"since": format_time_ms(t), "last_step_at": format_time_ms(last), "events": _refs(refs)}
            for k, (t, refs, last) in m.items()
        }
        for path, m in state.partials.items()
    }
    out["timers"] = {
        path: {"due": format_time_ms(t), "events": _refs(refs)} for path, (t, refs) in state.timers.items()
    }
    out["open_since"] = {path: format_time_ms(t) for path, (t, _) in state.inside.items()}
    out["remembered"] = {path: _explain_marks(rule, path, marks) for path, marks in state.marks.items()}
    return out


def _explain_marks(rule: CompiledRule, path: str, marks: list[int]) -> dict[str, Any]:
    """What a timed condition remembers to place late events, in words."""
    node = nodes_of(rule.group).get(path)  # type: ignore[arg-type]

    def at(t: int) -> str | None:
        return format_time_ms(t) if t >= 0 else None

    if isinstance(node, GeofenceSpec):
        return {"last_location_at": at(marks[0]), "last_outside_at": at(marks[1]), "in_zone": bool(marks[2])}
    newest = "newest_missing_at" if isinstance(node, AbsenceSpec) else "newest_stop_at"
    return {newest: at(marks[0]), "last_fired_from": at(marks[1]), "last_fired_until": at(marks[2])}


def _explain_window(leaf: LeafSpec, window: Window) -> dict[str, Any]:
    stride = leaf.stride
    info: dict[str, Any] = {"events": _refs(window[1::stride]), "count": len(window) // stride}
    if leaf.aggregate is not None:
        info["aggregate"] = {"fn": leaf.aggregate.fn, "of": ".".join(leaf.aggregate.path), "values": window[2::3]}
        info["needs"] = f"{leaf.aggregate.fn} {leaf.aggregate.op} {leaf.aggregate.bound:g}"
    else:
        info["needs"] = f"{leaf.threshold} events"
    if leaf.window_ms and window:
        info["oldest_expires_at"] = format_time_ms(window[0] + leaf.window_ms)
    return info
