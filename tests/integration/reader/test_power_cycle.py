"""`Reader.power_cycle` (the gateway's adapter_recovery) against the simulator: Powered goes
false then true under the adapter's lock, a read works afterwards, and a gone adapter or a
held lock is a typed error that leaves the adapter as it was."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
from dbus_fast import Variant

import bluez_jk.reader as reader_module
from bluez_jk.adapter_lock import AdapterLock
from bluez_jk.bluez.bus import PROPERTIES, BluezBus
from bluez_jk.bluez.properties import ADAPTER
from bluez_jk.errors import AdapterNotFound, Busy
from bluez_jk.reader import Reader, ReadRequest
from tests.fixtures.bluez import SimHandle
from tests.integration.reader.conftest import ADDRESS, assert_reader_clean

pytestmark = pytest.mark.integration

REQ = ReadRequest(name="jk1", address=ADDRESS, adapter="hci0", timeout_s=5)


def powered(sim: SimHandle) -> list[bool]:
    return [e["powered"] for e in sim.log() if e["event"] == "adapter_powered"]


async def test_power_cycle_switches_off_and_on_and_a_read_follows(
    sim: SimHandle, reader: Reader
) -> None:
    assert (await reader.read(REQ))["error"] is None
    assert await reader.power_cycle("hci0", off_s=0.05) == "hci0"
    assert powered(sim) == [False, True]
    reading = await reader.read(REQ)
    assert reading["error"] is None, reading["error"]
    await assert_reader_clean(sim, reader)


async def test_the_default_adapter_is_resolved(sim: SimHandle, reader: Reader) -> None:
    assert await reader.power_cycle(None, off_s=0.05) == "hci0"
    assert powered(sim) == [False, True]


async def test_a_gone_adapter_is_adapter_not_found_and_not_touched(
    sim: SimHandle, reader: Reader
) -> None:
    await asyncio.to_thread(sim.set_adapter_present, "hci0", False)
    with pytest.raises(AdapterNotFound, match="hci0"):
        await reader.power_cycle("hci0", off_s=0.05)
    await asyncio.to_thread(sim.set_adapter_present, "hci0", True)
    assert powered(sim) == []


async def test_a_held_lock_is_busy_and_the_adapter_stays_on(sim: SimHandle, reader: Reader) -> None:
    async with AdapterLock("hci0", timeout_s=1.0):
        with pytest.raises(Busy):
            await reader.power_cycle("hci0", off_s=0.05, timeout_s=0.3)
    assert powered(sim) == []


async def test_cancelled_twice_during_the_power_on_it_still_ends_on(
    sim: SimHandle, reader: Reader, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gateway's shutdown cancels a running cycle, then cancels again when its own
    deadline passes: the power-on must still finish before the cycle returns, or the adapter
    stays off until someone powers it by hand."""
    switching_on = asyncio.Event()
    switched: list[bool] = []
    real_set_powered = reader_module.set_powered

    async def slow_power_on(bus: Any, adapter_obj: str, powered: bool, timeout_s: float) -> None:
        if powered:
            switching_on.set()
            await asyncio.sleep(0.3)
        await real_set_powered(bus, adapter_obj, powered, timeout_s)
        switched.append(powered)

    monkeypatch.setattr(reader_module, "set_powered", slow_power_on)
    cycle = asyncio.create_task(reader.power_cycle("hci0", off_s=30.0))
    await wait_for(lambda: switched == [False])
    cycle.cancel()  # the shutdown
    await asyncio.wait_for(switching_on.wait(), 30)
    cycle.cancel()  # its deadline
    with pytest.raises(asyncio.CancelledError):
        await cycle
    assert switched == [False, True]
    assert powered(sim) == [False, True]


async def wait_for(predicate: Callable[[], bool], within_s: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + within_s
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("adapter", ["hci0", None])
async def test_a_read_on_a_powered_off_adapter_is_adapter_not_found(
    sim: SimHandle, reader: Reader, adapter: str | None
) -> None:
    """Somebody switched the adapter off: the read says so and tries nothing on it (a named
    adapter skips the resolve step, so the device watch checks Powered)."""
    bus = await BluezBus.connect()
    try:
        await bus.call(
            "/org/bluez/hci0", PROPERTIES, "Set", "ssv",
            [ADAPTER, "Powered", Variant("b", False)], stage="adapter", timeout_s=10,
        )  # fmt: skip
        reading = await reader.read(dataclasses.replace(REQ, adapter=adapter))
        assert reading["error"] is not None
        assert reading["error"]["type"] == "AdapterNotFound", reading["error"]
        assert "powered off" in reading["error"]["message"]
        assert not [e for e in sim.log() if e["event"] in ("connect_call", "discovery_start")]
    finally:
        await bus.call(
            "/org/bluez/hci0", PROPERTIES, "Set", "ssv",
            [ADAPTER, "Powered", Variant("b", True)], stage="adapter", timeout_s=10,
        )  # fmt: skip
        await bus.close()
    await assert_reader_clean(sim, reader)
