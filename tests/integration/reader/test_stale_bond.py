"""bluetoothd exits while it connects a BMS it holds a bond with: what BlueZ 5.66 does when the
BMS forgot the bond (docs/bluez.md fact 19). The read says so with the cure, the Reader
remembers the BMS, and its next read removes the stale bond and pairs again."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import pytest

from bluez_jk.reader import Reader, ReadRequest
from tests.fixtures.bluez import SimHandle
from tests.integration.reader.conftest import ADDRESS, FAST

pytestmark = pytest.mark.integration


async def _event(sim: SimHandle, name: str, within_s: float = 30.0) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if any(e["event"] == name for e in await asyncio.to_thread(sim.log)):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {name!r} in the simulator's log within {within_s} s")


def _sim(
    sim_factory: Callable[..., SimHandle], monkeypatch: pytest.MonkeyPatch, device: str
) -> SimHandle:
    # Real timing: a Connect to a silent BMS stays pending for 40 s, time to take bluetoothd.
    sim = sim_factory(devices=[device], timing="real")
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", sim.bus_address)
    return sim


async def _crash_in_connect(
    sim: SimHandle, reader: Reader, req: ReadRequest, *, paired: bool
) -> dict[str, str]:
    """A good read (paired or not), then one whose Connect is pending (the BMS does not
    answer) when bluetoothd goes."""
    first = await reader.read(req)
    assert first["error"] is None, first["error"]
    assert first["paired"] is paired
    await asyncio.to_thread(sim.set_fault, "not-advertising", None, ADDRESS)
    await asyncio.to_thread(sim.clear_log)
    pending = asyncio.create_task(reader.read(req))
    await _event(sim, "connect_call")
    await asyncio.to_thread(sim.restart)
    reading = await pending
    error = reading["error"]
    assert error is not None
    return dict(error)


async def test_bluetoothd_gone_in_connect_of_a_bonded_bms(
    sim_factory: Callable[..., SimHandle],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sim = _sim(sim_factory, monkeypatch, f"{ADDRESS},pairing=justworks")
    req = ReadRequest(name="jk1", address=ADDRESS, timeout_s=30.0)
    async with Reader(timing=FAST) as reader:
        error = await _crash_in_connect(sim, reader, req, paired=True)
        assert error["type"] == "BusError", error
        assert error["stage"] == "connect"
        assert "forgot the bond" in error["message"]
        assert f"jk-ble-pair --address {ADDRESS} --unpair" in error["message"]
        assert ADDRESS in reader.memory.stale_bonds
        with caplog.at_level(logging.WARNING, logger="bluez_jk.reader"):
            again = await reader.read(req)
    assert again["error"] is None, again["error"]
    assert again["paired"] is True
    assert "removing the stale bond of jk1" in caplog.text
    assert not reader.memory.stale_bonds
    assert "paired" in [e["event"] for e in sim.log()]


async def test_bluetoothd_gone_in_connect_of_an_unbonded_bms_is_no_stale_bond(
    sim_factory: Callable[..., SimHandle], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a bond there is nothing to remove: the error is what the read saw."""
    sim = _sim(sim_factory, monkeypatch, ADDRESS)
    req = ReadRequest(name="jk1", address=ADDRESS, timeout_s=30.0)
    async with Reader(timing=FAST) as reader:
        error = await _crash_in_connect(sim, reader, req, paired=False)
        assert "forgot the bond" not in error["message"], error
        assert not reader.memory.stale_bonds
