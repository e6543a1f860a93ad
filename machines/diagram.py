"""Mermaid state diagrams drawn from the machine definitions themselves (no graphviz needed).

Only state changes are drawn; the answers that leave the state unchanged (a wrong code, the
contract's section 7 replies) are tables, not edges.
"""

from __future__ import annotations

from typing import Any

from machines.core import NEW, ChannelMachine


def _names(value: Any) -> list[str]:
    items = value if isinstance(value, list | tuple) else [value] if value else []
    return [getattr(item, "__name__", str(item)) for item in items]


def mermaid(machine: ChannelMachine) -> str:
    lines = ["stateDiagram-v2", f"    [*] --> {NEW}"]
    for transition in machine.transitions:
        dest = transition.get("dest")
        if dest is None:
            continue
        guards = _names(transition.get("conditions")) + [f"not {n}" for n in _names(transition.get("unless"))]
        actions = _names(transition.get("after"))
        label = transition["trigger"] + (f" [{', '.join(guards)}]" if guards else "")
        label += f" / {', '.join(actions)}" if actions else ""
        for source in _names(transition["source"]):
            edge = f"    {source} --> {dest}: {label}"
            if edge not in lines:
                lines.append(edge)
    finished = [state for state, status in machine.statuses.items() if status.is_terminal]
    lines += [f"    {state} --> [*]" for state in finished]
    return "\n".join(lines)
