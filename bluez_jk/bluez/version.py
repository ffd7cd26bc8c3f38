"""Which BlueZ runs on this machine, and the notify mode that is safe with it.

BlueZ publishes no version on D-Bus, so this asks the daemon's binary (`bluetoothd
--version`), once per process. `BLUEZ_JK_BLUEZ_VERSION` overrides it (containers that talk to
the host's bluetoothd, tests against the simulator's version profiles).

Why it matters (docs/bluez.md fact 16, shown on the real-BlueZ tier): before 5.84 a
failed AcquireNotify - the BMS refuses the CCCD write, or the link drops during the call -
never gets a reply, and the characteristic stays "Notify acquired" for every client until
bluetoothd restarts. StartNotify fails cleanly in the same situations, so it is the default
where the version is older or unknown.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess

from bluez_jk.bluez.gatt import NotifyMode

BluezVersion = tuple[int, int]

# 5.84 replies to a failed AcquireNotify and releases the acquisition (docs/bluez.md fact 16).
ACQUIRE_SAFE_FROM: BluezVersion = (5, 84)
_CANDIDATES = (
    "/usr/libexec/bluetooth/bluetoothd",  # Debian, Raspberry Pi OS
    "/usr/lib/bluetooth/bluetoothd",  # Arch, Alpine, older Debian
    "/usr/sbin/bluetoothd",
)
_VERSION = re.compile(r"^\s*(\d+)\.(\d+)")
_cached: list[BluezVersion | None] = []


def parse_version(text: str) -> BluezVersion | None:
    match = _VERSION.match(text)
    return (int(match.group(1)), int(match.group(2))) if match else None


async def bluez_version() -> BluezVersion | None:
    """The local bluetoothd's version, or None when it cannot be found or run (asked once per
    process, on a worker thread: it starts a program).

    Raises:
        Nothing: every failure means "unknown".
    """
    override = os.environ.get("BLUEZ_JK_BLUEZ_VERSION")
    if override:
        return parse_version(override)
    if not _cached:
        _cached.append(await asyncio.to_thread(_ask_bluetoothd))
    return _cached[0]


def _ask_bluetoothd() -> BluezVersion | None:
    for path in _CANDIDATES:
        if not os.access(path, os.X_OK):
            continue
        try:
            done = subprocess.run(  # noqa: S603 - a fixed path, no shell
                [path, "--version"], capture_output=True, text=True, timeout=5.0, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        found = parse_version(done.stdout)
        if found is not None:
            return found
    return None


def default_notify_mode(version: BluezVersion | None) -> NotifyMode:
    """`auto`: AcquireNotify (one socket, no signal per chunk) only where BlueZ survives its
    failure; StartNotify everywhere else."""
    if version is not None and version >= ACQUIRE_SAFE_FROM:
        return "acquire"
    return "start"
