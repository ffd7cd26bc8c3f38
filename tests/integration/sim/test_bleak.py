"""An unmodified Bleak 3.1 client against the simulator (docs/bluez.md 6.7)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from bleak import BleakClient

from bluez_jk.protocol import command
from bluez_jk.protocol.stream import StreamDecoder
from tests.fixtures.bluez import SimHandle
from tests.integration.sim.client import ADDRESS

pytestmark = pytest.mark.integration

FFE1 = "0000ffe1-0000-1000-8000-00805f9b34fb"


@pytest.mark.parametrize(
    ("bluez_args", "mode"),
    [({}, "start"), ({"use_start_notify": False}, "acquire")],
    ids=["StartNotify", "AcquireNotify"],
)
async def test_bleak_reads_all_frames(
    sim: SimHandle, monkeypatch: pytest.MonkeyPatch, bluez_args: dict[str, Any], mode: str
) -> None:
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", sim.bus_address)
    decoder = StreamDecoder()
    complete = asyncio.Event()

    def on_notify(_char: object, data: bytearray) -> None:
        decoder.feed(bytes(data))
        if all(decoder.got.values()):
            complete.set()

    async with BleakClient(ADDRESS, timeout=15) as client:
        char = client.services.get_characteristic(FFE1)
        assert char is not None
        # Bleak 3.1 takes the BlueZ notify switch on start_notify, not on the client.
        await client.start_notify(char, on_notify, bluez=bluez_args)
        await client.write_gatt_char(char, command(0x97), response=False)
        await client.write_gatt_char(char, command(0x96), response=False)
        await asyncio.wait_for(complete.wait(), 10)
        await client.stop_notify(char)
    assert decoder.protocol == "JK02_32S"
    assert not decoder.errors
    assert len(decoder.status["cell_info"]["voltages"]) == 16
    starts = [e for e in sim.log() if e["event"] == "notify_start"]
    stops = [e for e in sim.log() if e["event"] == "notify_stop"]
    assert [e["mode"] for e in starts] == [mode]
    assert [e["mode"] for e in stops] == [mode]
    assert sim.device_props(ADDRESS)["Connected"] is False


async def test_bleak_retries_after_connect_abort(
    sim: SimHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bleak waits for the Connected true->false flap, then retries (docs/bluez.md 6.6)."""
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", sim.bus_address)
    sim.set_fault("connect-abort", count=1)
    async with BleakClient(ADDRESS, timeout=15) as client:
        assert client.is_connected
    calls = [e["event"] for e in sim.log() if e["event"] in ("connect_call", "connect_failed")]
    assert calls == ["connect_call", "connect_failed", "connect_call"]
