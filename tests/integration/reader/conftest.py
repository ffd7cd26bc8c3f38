"""Helpers for reading the simulator: a private lock directory, fast reader timing, and the
leak checks (the simulator's view of the device, our fds, dbus-daemon's match-rule count)."""

from __future__ import annotations

import gc
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bluez_jk.bluez.bus import MAX_KEPT_RULES
from bluez_jk.reader import Reader, Timing
from tests.fixtures.bluez import SimHandle, match_rules

ADDRESS = "C8:47:80:37:02:E8"
# Resend quickly: the fast simulator answers within milliseconds.
FAST = Timing(resend_s=0.3, resend_max_s=1.0, disconnect_s=3.0)


@pytest.fixture(autouse=True)
def _lock_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    lock_dir = tmp_path / "locks"
    monkeypatch.setenv("BLUEZ_JK_LOCK_DIR", str(lock_dir))
    return lock_dir


def open_fds() -> set[int]:
    # Collect first: objects of earlier tests closing their sockets in a finalizer would
    # otherwise change the set under a test. Callers compare with `<=`, since an fd closed
    # meanwhile is no leak of ours.
    gc.collect()
    return {int(fd) for fd in os.listdir("/proc/self/fd")}


def assert_device_released(sim: SimHandle, address: str = ADDRESS) -> None:
    props = sim.device_props(address)
    assert props["Connected"] is False, props
    assert props["Notifying"] is False, props
    assert props["NotifyAcquired"] is False, props
    assert props["notify_sessions"] == [], props


async def assert_reader_clean(sim: SimHandle, reader: Reader) -> None:
    """The connection holds exactly the match rules it keeps for its life (bounded), none
    left by a read."""
    bus = reader._bus
    if bus is not None and bus.connected:
        assert await match_rules(sim.bus_address, bus.unique_name) == len(bus.kept_rules)
        assert len(bus.kept_rules) <= MAX_KEPT_RULES


@pytest.fixture
async def reader(sim: SimHandle, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Reader]:
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", sim.bus_address)
    async with Reader(timing=FAST) as r:
        await r.get_bus()  # so that fd counts taken in tests include the bus socket
        yield r
