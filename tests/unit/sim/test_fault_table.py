"""The fault table (`bluez_jk.sim.faults.FAULTS`) is the one place that tells what a fault
does: it names every fault, and its `acts_in` lists exactly the methods that ask about it."""

from __future__ import annotations

import ast
from pathlib import Path

import bluez_jk.sim
from bluez_jk.sim.faults import FAULT_NAMES, FAULTS

SIM = Path(bluez_jk.sim.__file__).parent
_QUERIES = {"active", "fire", "clear"}


def _asked_in() -> dict[str, set[str]]:
    """Fault name -> `Class.method` of every `.active/.fire/.clear("name", ...)` call."""
    found: dict[str, set[str]] = {}

    def walk(node: ast.AST, scope: list[str]) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                walk(child, [*scope, child.name])
                continue
            if (
                isinstance(child, ast.Call)
                and isinstance(child.func, ast.Attribute)
                and child.func.attr in _QUERIES
                and child.args
                and isinstance(child.args[0], ast.Constant)
                and child.args[0].value in FAULT_NAMES
            ):
                found.setdefault(child.args[0].value, set()).add(".".join(scope))
            walk(child, scope)

    for path in SIM.glob("*.py"):
        if path.name != "faults.py":
            walk(ast.parse(path.read_text()), [])
    return found


def test_the_table_has_every_fault_name_once() -> None:
    assert list(FAULTS) == list(FAULT_NAMES)


def test_acts_in_names_exactly_the_methods_that_ask() -> None:
    asked = _asked_in()
    for name, kind in FAULTS.items():
        assert set(kind.acts_in.split()) == asked.get(name, set()), name


def test_every_fault_acts_somewhere() -> None:
    assert all(FAULTS[name].acts_in for name in FAULT_NAMES)
