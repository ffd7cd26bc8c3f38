"""BlueZ versions the simulator can play where their D-Bus behaviour differs.

Default 5.66: Debian 12 and Raspberry Pi OS bookworm, and what the real-BlueZ tier runs.
"""

from __future__ import annotations

from typing import Literal, get_args

BluezName = Literal["5.66", "5.84"]
BLUEZ_NAMES: tuple[str, ...] = get_args(BluezName)
BluezVersion = tuple[int, int]


def parse_bluez(name: BluezName) -> BluezVersion:
    major, minor = name.split(".")
    return int(major), int(minor)


def acquire_failure_wedges(version: BluezVersion) -> bool:
    """Before 5.84 a failed AcquireNotify gets no reply and leaves the characteristic
    "Notify acquired" until bluetoothd restarts (docs/bluez.md fact 16)."""
    return version < (5, 84)
