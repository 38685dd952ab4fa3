"""The library's import structure: the core (``hubs``) stands alone, and no two modules of the
library import each other, directly or around a loop.

Read from the source (every ``import`` statement, also inside functions and ``TYPE_CHECKING``
blocks), not from what happens to be imported at run time, so a lazy import cannot hide a tie.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.e2e.harness import ROOT

LIBRARY = ("hubs", "monitoring")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def library_modules() -> dict[str, Path]:
    found = {}
    for package in LIBRARY:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" not in path.parts:
                found[module_name(path)] = path
    return found


def imported_names(path: Path, name: str) -> set[str]:
    """Every module name ``path`` (module ``name``) imports, relative imports resolved; for
    ``from X import y`` both ``X`` and ``X.y`` (which is a module when y is a submodule)."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def import_graph() -> dict[str, set[str]]:
    modules = library_modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for imported in imported_names(path, name):
            # The nearest library module that the import names (``hubs.delivery.acked.send`` is
            # ``hubs.delivery.acked``); a package's ``__init__`` does not count as its children.
            while imported and imported not in modules:
                imported = imported.rpartition(".")[0]
            if imported and imported != name and not name.startswith(f"{imported}."):
                targets.add(imported)
        graph[name] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_graph_is_read():
    """The reader sees known ties (a check of the checker: an empty graph would pass below)."""
    graph = import_graph()
    assert "hubs.runtime" in graph["hubs.hub"]
    assert "hubs.delivery.pending" in graph["hubs.delivery.acked"]
    assert "hubs.signals" in graph["monitoring.observer"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("forbidden", ["monitoring", "conduit_rt"])
def test_the_core_never_imports(forbidden):
    offenders = {
        name: sorted(n for n in imported_names(path, name) if n == forbidden or n.startswith(f"{forbidden}."))
        for name, path in library_modules().items()
        if name.split(".")[0] == "hubs"
    }
    assert {name: found for name, found in offenders.items() if found} == {}


def test_monitoring_never_imports_the_demo_project():
    offenders = {
        name: sorted(n for n in imported_names(path, name) if n.split(".")[0] == "conduit_rt")
        for name, path in library_modules().items()
        if name.split(".")[0] == "monitoring"
    }
    assert {name: found for name, found in offenders.items() if found} == {}


def test_no_import_cycles():
    assert cycles(import_graph()) == []


PARTS = (
    "hubs.accept",
    "hubs.background",
    "hubs.confirmations",
    "hubs.inbox",
    "hubs.invoker",
    "hubs.keepalive",
    "hubs.membership",
    "hubs.session",
    "hubs.presence",
    "hubs.filters",
)


def test_the_parts_a_hub_composes_never_import_it():
    graph = import_graph()

    def reaches_hub(name: str, seen: set[str]) -> bool:
        for target in graph[name]:
            if target == "hubs.hub" or (target not in seen and reaches_hub(target, seen | {target})):
                return True
        return False

    assert [name for name in PARTS if reaches_hub(name, {name})] == []
