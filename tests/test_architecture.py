"""The layout's rules, read from the source with `ast`: the machines are pure, no channel
definition imports another, and no module imports itself back through others."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("machines", "service")
SHELL_LIBRARIES = {"service", "redis", "aiohttp", "fakeredis", "structlog", "yaml", "orjson", "prometheus_client"}
CHANNEL_DEFINITIONS = {"machines.sms", "machines.ars", "machines.pass_push", "machines.motp"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


def imported(name: str) -> set[str]:
    """The modules `name` imports at run time, resolved to modules of the project where they are one."""
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if candidate in MODULES else node.module)
    return found


def internal_imports(name: str) -> set[str]:
    return {target for target in imported(name) if target in MODULES and target != name}


class TestPureMachines:
    @pytest.mark.parametrize("name", sorted(n for n in MODULES if n.split(".")[0] == "machines"))
    def test_a_machine_module_does_no_io(self, name: str):
        """`machines/` imports nothing of the shell: no service, no Redis, no HTTP, no logging."""
        roots = {target.split(".")[0] for target in imported(name)}
        assert not roots & SHELL_LIBRARIES, f"{name} imports {sorted(roots & SHELL_LIBRARIES)}"

    @pytest.mark.parametrize("name", sorted(CHANNEL_DEFINITIONS))
    def test_no_channel_definition_imports_another(self, name: str):
        assert not internal_imports(name) & (CHANNEL_DEFINITIONS - {name})


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    visiting: list[str] = []
    done: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        if node in done:
            return
        if node in visiting:
            cycles.append([*visiting[visiting.index(node):], node])
            return
        visiting.append(node)
        for target in sorted(graph.get(node, ())):
            visit(target)
        visiting.pop()
        done.add(node)

    for name in sorted(graph):
        visit(name)
    return cycles


class TestNoCycles:
    def test_the_import_graph_has_no_cycle(self):
        """Every module-level import, followed through the project: no path leads back to its start."""
        assert find_cycles({name: internal_imports(name) for name in MODULES}) == []

    def test_the_walk_sees_the_imports(self):
        """The graph is not vacuous: known edges are found, and a planted cycle would be."""
        assert "service.runtime" in internal_imports("service.api.context")
        assert "service.channels.registry" in internal_imports("service.api.verifications")
        assert "machines.core" in internal_imports("machines.common")
        assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]

    def test_shell_routes_do_not_branch_on_the_channel(self):
        """The routes reach a channel only through the registry of channel shells."""
        for name in ("service.api.verifications", "service.api.providers"):
            source = MODULES[name].read_text(encoding="utf-8")
            assert "Channel.SMS" not in source
            assert "Channel.MOTP" not in source
            assert "CODELESS" not in source
