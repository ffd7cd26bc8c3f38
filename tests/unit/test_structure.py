"""Structure rules for bluez_jk (issue 17): no module reaches into another object's private
members, the read session is small functions around one explicit stage machine."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import get_args

import bluez_jk
from bluez_jk.errors import Stage
from bluez_jk.reader import SessionStage

ROOT = Path(bluez_jk.__file__).parent
SOURCES = {p.relative_to(ROOT).as_posix(): ast.parse(p.read_text()) for p in ROOT.rglob("*.py")}
READER = SOURCES["reader.py"]
MAX_FUNCTION_LINES = 60

# Private names of third-party objects that have no public way to the same thing.
EXEMPT = {
    # dbus_fast's MessageBus keeps its socket's descriptor only as `_fd`; the outbox asks the
    # kernel how much of it is still unsent (TIOCOUTQ).
    ("sim/outbox.py", "_fd"),
}
# Underscore names that are public API: namedtuple's methods and fields.
PUBLIC_UNDERSCORE = {"_replace", "_asdict", "_fields", "_make"}


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__") and name not in PUBLIC_UNDERSCORE


def _functions(tree: ast.AST) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]


def _super_calls_of_own_name(tree: ast.AST) -> set[int]:
    """ids of `super()._name` inside a method `_name`: an override calling what it extends."""
    allowed: set[int] = set()
    for function in _functions(tree):
        for node in ast.walk(function):
            if (
                isinstance(node, ast.Attribute)
                and node.attr == function.name
                and isinstance(node.value, ast.Call)
                and isinstance(node.value.func, ast.Name)
                and node.value.func.id == "super"
            ):
                allowed.add(id(node))
    return allowed


def _foreign_private_uses(path: str, tree: ast.AST) -> list[str]:
    overrides = _super_calls_of_own_name(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            own = isinstance(node.value, ast.Name) and node.value.id in {"self", "cls"}
            if own or id(node) in overrides or (path, node.attr) in EXEMPT:
                continue
            found.append(f"{path}:{node.lineno}: {ast.unparse(node)}")
        elif isinstance(node, ast.ImportFrom):
            found += [
                f"{path}:{node.lineno}: from {node.module} import {alias.name}"
                for alias in node.names
                if _private(alias.name)
            ]
    return found


def test_no_module_uses_another_objects_private_members() -> None:
    found = [
        use for path, tree in sorted(SOURCES.items()) for use in _foreign_private_uses(path, tree)
    ]
    assert found == []


def test_the_scan_sees_what_it_forbids() -> None:
    tree = ast.parse(
        "from m import _hidden\n"
        "def f(self, reader):\n"
        "    reader._bus\n"
        "    self.reader._memory\n"
        "    self._own\n"
        "class C(B):\n"
        "    def _hook(self):\n"
        "        super()._hook()\n"
        "        super()._other()\n"
    )
    assert sorted(use.split(": ", 1)[1] for use in _foreign_private_uses("x.py", tree)) == [
        "from m import _hidden",
        "reader._bus",
        "self.reader._memory",
        "super()._other",
    ]


def test_no_function_in_reader_is_long() -> None:
    long = {
        f.name: f"{f.end_lineno - f.lineno + 1} lines"
        for f in _functions(READER)
        if f.end_lineno is not None and f.end_lineno - f.lineno + 1 > MAX_FUNCTION_LINES
    }
    assert long == {}


def test_the_session_changes_stage_only_in_enter() -> None:
    assigning = sorted(
        function.name
        for function in _functions(READER)
        for node in ast.walk(function)
        if isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign)
        for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
        if isinstance(target, ast.Attribute) and target.attr in {"stage", "_stage"}
    )
    assert assigning == ["__init__", "_enter"]


def test_session_stages_are_published_stage_names() -> None:
    assert {stage.value for stage in SessionStage} <= set(get_args(Stage))
    assert all(stage.published == stage.value for stage in SessionStage)
