"""Which BlueZ runs here: asked of bluetoothd's binary once per process, without blocking the
event loop on the disk (the blocking guard of tests/conftest.py fails the test if it does)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bluez_jk.bluez import version


@pytest.fixture
def fake_bluetoothd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    binary = tmp_path / "bluetoothd"
    binary.write_text("#!/bin/sh\necho 5.66\n")
    binary.chmod(0o755)
    monkeypatch.delenv("BLUEZ_JK_BLUEZ_VERSION", raising=False)
    monkeypatch.setattr(version, "_CANDIDATES", (str(tmp_path / "absent"), str(binary)))
    monkeypatch.setattr(version, "_cached", [])
    return binary


async def test_the_version_comes_from_the_first_runnable_binary(fake_bluetoothd: Path) -> None:
    assert await version.bluez_version() == (5, 66)
    fake_bluetoothd.unlink()
    assert await version.bluez_version() == (5, 66)  # asked once per process


async def test_no_binary_is_an_unknown_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BLUEZ_JK_BLUEZ_VERSION", raising=False)
    monkeypatch.setattr(version, "_CANDIDATES", (str(tmp_path / "absent"),))
    monkeypatch.setattr(version, "_cached", [])
    assert await version.bluez_version() is None
