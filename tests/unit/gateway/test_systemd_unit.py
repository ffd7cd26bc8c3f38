"""The shipped systemd unit: notify + watchdog, unprivileged, exposure <= 2.0 (measured)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
UNIT = REPO / "systemd" / "jk-ble-mqtt-gateway.service"
CHECK = REPO / "tools" / "check_unit_security.py"


def service_section() -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values.setdefault(key.strip(), []).append(value.strip())
    return values


def test_unit_contract() -> None:
    unit = service_section()
    assert unit["Type"] == ["notify"]
    assert int(unit["WatchdogSec"][0]) > 0
    assert unit["DynamicUser"] == ["yes"]
    assert unit["SupplementaryGroups"] == ["bluetooth"]
    assert unit["ProtectSystem"] == ["strict"]
    assert unit["StateDirectory"] == ["bluez-jk"]
    assert set(unit["RestrictAddressFamilies"][0].split()) == {"AF_UNIX", "AF_INET", "AF_INET6"}
    assert "/run/lock" in unit["ReadWritePaths"][0].split()
    assert any("--config /etc/bluez-jk/" in v for v in unit["ExecStart"])


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_exposure_is_at_most_2(tmp_path: Path) -> None:
    ok = subprocess.run(
        [sys.executable, str(CHECK), str(UNIT)], capture_output=True, text=True, check=False
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    exposure = float(ok.stdout.split("exposure ")[1].split()[0])
    assert exposure <= 2.0
    # The checker really fails a weak unit.
    weak = tmp_path / "weak.service"
    text = UNIT.read_text()
    for line in ("ProtectSystem=strict", "DynamicUser=yes", "CapabilityBoundingSet="):
        text = text.replace(f"\n{line}\n", "\n")
    weak.write_text(text)
    bad = subprocess.run(
        [sys.executable, str(CHECK), str(weak)], capture_output=True, text=True, check=False
    )
    assert bad.returncode == 1, bad.stdout + bad.stderr


def test_lock_directory_is_made_for_group_bluetooth_only() -> None:
    # Issue 18, item 10: in world-writable /run/lock any local user could hold our locks.
    unit = service_section()
    assert "-/run/bluez-jk" in unit["ReadWritePaths"][0].split()
    tmpfiles = (UNIT.parent / "bluez-jk.tmpfiles.conf").read_text().splitlines()
    entries = [line.split() for line in tmpfiles if line and not line.startswith("#")]
    assert entries == [["d", "/run/bluez-jk", "1770", "root", "bluetooth", "-"]]
