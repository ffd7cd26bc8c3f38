"""What to tell a user when a read stage runs out of time: the likely causes and the next step.

Kept apart from the reader so that its control flow stays free of prose."""

from __future__ import annotations

import os
from pathlib import Path

from bluez_jk.adapter_lock import lock_holder, lock_path
from bluez_jk.bluez.errors import CONNECT_HINT


def stage_timeout_message(stage: str, within: str, adapter: str | None) -> str:
    """`within` reads like "within 20.0 s". For stage "lock" this reads the lock file and
    /proc/locks: call it on a worker thread, not on the event loop."""
    if stage == "connect":
        return f"connect did not complete {within}: {CONNECT_HINT}"
    if stage == "lock":
        return busy_message(adapter, within)
    if stage == "discover":
        return (
            f"the BMS was not found {within}: check that it is powered and in range "
            "(`jk-ble-scan --jk-only` lists what advertises) and that no other central is "
            "connected to it"
        )
    return f"{stage} did not complete {within}"


def busy_message(adapter: str | None, within: str) -> str:
    name = adapter or "the default adapter"
    path: Path | None = lock_path(adapter) if adapter else None
    holder = _holder(path) if path is not None else ""
    who = f" ({holder})" if holder else ""
    return (
        f"{name} stayed in use by another process{who} {within}: "
        "while the gateway runs, ask it instead (jk-ble-read --config FILE --name NAME "
        "--via-mqtt), or give --timeout more time"
    )


def _holder(path: Path) -> str:
    """Who holds the flock on `path` ("pid N comm, user U"), or "" when it cannot be told."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return ""
    try:
        return lock_holder(fd).rstrip("; ")
    finally:
        os.close(fd)
