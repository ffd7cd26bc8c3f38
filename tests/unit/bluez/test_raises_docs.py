"""Which typed error each bluez/ call raises is the contract recovery.decide relies on, so it is
written down: every public function of bluez_jk/bluez that can fail (it is async or raises)
has a `Raises:` section, every name there is an error class of the project (or `Nothing`), and
every class the function raises itself is among them."""

from __future__ import annotations

import ast
import inspect
import typing
from pathlib import Path

import pytest

import bluez_jk.bluez
from bluez_jk import errors
from bluez_jk.bluez import errors as bluez_errors

ROOT = Path(bluez_jk.bluez.__file__).parent
FunctionNode = ast.FunctionDef | ast.AsyncFunctionDef


def _public_functions() -> list[tuple[str, FunctionNode]]:
    found: list[tuple[str, FunctionNode]] = []
    for path in sorted(ROOT.glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, FunctionNode) and not node.name.startswith("_"):
                found.append((f"{path.name}:{node.name}", node))
    return found


def _own_raises(node: FunctionNode) -> set[str]:
    """Classes raised in the function's own body (nested functions are theirs)."""
    names: set[str] = set()
    todo: list[ast.AST] = list(node.body)
    while todo:
        item = todo.pop()
        if isinstance(item, FunctionNode | ast.Lambda):
            continue
        if isinstance(item, ast.Raise) and isinstance(item.exc, ast.Call):
            func = item.exc.func
            if isinstance(func, ast.Name):
                names.add(func.id)
        todo.extend(ast.iter_child_nodes(item))
    return names


def _can_fail(node: FunctionNode) -> bool:
    return isinstance(node, ast.AsyncFunctionDef) or bool(_own_raises(node))


def _documented(node: FunctionNode) -> list[str]:
    doc = ast.get_docstring(node) or ""
    _, found, section = doc.partition("Raises:\n")
    assert found, "no Raises: section"
    names: list[str] = []
    indent = None
    for line in section.splitlines():
        if not line.strip():
            break
        depth = len(line) - len(line.lstrip())
        indent = depth if indent is None else indent
        if depth == indent:
            head = line.strip().split(":", 1)[0]
            names += [name.strip() for name in head.split(",")]
    return names


def _error_class(name: str) -> type[BaseException] | None:
    """The class `name` stands for; a factory such as map_dbus_error stands for what it
    returns."""
    for module in (bluez_errors, errors):
        found = getattr(module, name, None)
        if inspect.isfunction(found):
            found = typing.get_type_hints(found)["return"]
        if inspect.isclass(found) and issubclass(found, BaseException):
            return found
    return None


FAILING = [(name, node) for name, node in _public_functions() if _can_fail(node)]


def test_the_bluez_room_has_functions_that_can_fail() -> None:
    assert len(FAILING) > 15


@pytest.mark.parametrize(("name", "node"), FAILING, ids=[name for name, _ in FAILING])
def test_each_failing_function_documents_its_typed_errors(name: str, node: FunctionNode) -> None:
    listed = _documented(node)
    assert listed, name
    if listed == ["Nothing"]:
        assert not _own_raises(node), f"{name} raises but says Nothing"
        return
    classes = {}
    for entry in listed:
        cls = _error_class(entry)
        assert cls is not None, f"{name}: {entry} is not an error class of bluez_jk"
        classes[entry] = cls
    for raised in _own_raises(node):
        cls = _error_class(raised)
        assert cls is not None, f"{name} raises {raised}, not an error class of bluez_jk"
        assert any(issubclass(cls, listed_cls) for listed_cls in classes.values()), (
            f"{name} raises {raised} but its Raises: section does not name it"
        )
