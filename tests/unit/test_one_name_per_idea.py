"""One definition per idea in bluez_jk (issue: three NotifyModes, two ProtocolNames, the
address pattern three times...): each of these names is assigned or defined in exactly one
module, and no other module compiles its own Bluetooth address pattern."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import bluez_jk

ROOT = Path(bluez_jk.__file__).parent
SOURCES = {p.relative_to(ROOT).as_posix(): ast.parse(p.read_text()) for p in ROOT.rglob("*.py")}

DEFINED_ONCE = {
    "NotifyMode": "names.py",
    "NotifyModeSetting": "names.py",
    "MAC_ADDRESS": "names.py",
    "device_path": "names.py",
    "ProtocolName": "protocol/variants.py",
    "DetectedBy": "protocol/variants.py",
    "Status": "protocol/stream.py",
    "Got": "protocol/stream.py",
    "ManagedObjects": "bluez/properties.py",
}


def _definitions(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


@pytest.mark.parametrize(("name", "home"), sorted(DEFINED_ONCE.items()))
def test_defined_in_one_module(name: str, home: str) -> None:
    where = sorted(path for path, tree in SOURCES.items() if name in _definitions(tree))
    assert where == [home]


def test_no_other_module_has_its_own_address_pattern() -> None:
    found = sorted(
        path
        for path, tree in SOURCES.items()
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and "{2}(" in node.value
        and "[0-9A-F" in node.value
    )
    assert found == ["names.py"]
