"""The simulator's modules import each other without cycles, counting imports made only for
type checking (issue 17: bluez.py <-> device.py and control.py <-> server.py did). A module
that needs a type from a module above it takes a small Protocol instead."""

from __future__ import annotations

import ast
from pathlib import Path

import bluez_jk.sim

SIM = Path(bluez_jk.sim.__file__).parent
PACKAGE = "bluez_jk.sim"


def _imports(tree: ast.Module) -> set[str]:
    """Sibling modules named by any import anywhere in the module (TYPE_CHECKING blocks and
    function bodies included, as ast.walk visits every node)."""
    modules = {p.stem for p in SIM.glob("*.py")}
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from bluez_jk.sim import errors` names a module through the package.
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        elif isinstance(node, ast.ImportFrom) and node.level == 1:
            base = node.module or ""
            names = [f"{PACKAGE}.{base}" if base else PACKAGE]
            names += [f"{PACKAGE}.{a.name}" for a in node.names if not base]
        else:
            continue
        for name in names:
            head, _, rest = name.partition(PACKAGE + ".")
            stem = rest.split(".")[0]
            if not head and stem in modules:
                found.add(stem)
    return found


def _graph() -> dict[str, set[str]]:
    return {p.stem: _imports(ast.parse(p.read_text())) - {p.stem} for p in SIM.glob("*.py")}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as the modules along it, or None."""
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str] | None:
        if node in path:
            return [*path[path.index(node) :], node]
        if node in done:
            return None
        for nxt in sorted(graph.get(node, ())):
            found = visit(nxt, [*path, node])
            if found:
                return found
        done.add(node)
        return None

    for start in sorted(graph):
        found = visit(start, [])
        if found:
            return found
    return None


def test_the_sim_package_has_no_import_cycle() -> None:
    assert _cycle(_graph()) is None, " -> ".join(_cycle(_graph()) or [])


def test_the_scan_sees_type_checking_imports_and_finds_cycles() -> None:
    # The scan itself: an import under TYPE_CHECKING counts, and a two-module loop is found.
    tree = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "from bluez_jk.sim import errors\n"
        "if TYPE_CHECKING:\n    from bluez_jk.sim.server import Simulator\n"
    )
    assert _imports(tree) == {"errors", "server"}
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_the_old_cycles_are_gone() -> None:
    graph = _graph()
    assert not ("bluez" in graph["device"] and "device" in graph["bluez"])
    assert not ("control" in graph["server"] and "server" in graph["control"])
