"""Clean reads of every profile and layout, both notify mechanisms, the remembered fallback,
capture, a reused Reader across a lost bus, and the typed errors for bad adapters and buses."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus

from bluez_jk.protocol import StreamDecoder
from bluez_jk.reader import Reader, ReadRequest, read_once
from tests.fixtures.bluez import SimHandle
from tests.integration.reader.conftest import (
    ADDRESS,
    FAST,
    assert_device_released,
    assert_reader_clean,
    open_fds,
)

pytestmark = pytest.mark.integration

VOLTAGES_16 = [3.301 + 0.002 * i for i in range(16)]


@pytest.mark.parametrize(
    ("protocol", "cells", "extra"),
    [
        ("JK02_24S", 16, {"current": -12.5, "battery_soc": 55, "cycle_count": 123}),
        ("JK02_32S", 16, {"current": 7.25, "battery_soc": 81, "temperature_sensor_1": 21.5}),
        ("JK04", 16, {}),
    ],
)
async def test_clean_read_of_each_profile(
    sim_factory: Callable[..., SimHandle],
    monkeypatch: pytest.MonkeyPatch,
    protocol: str,
    cells: int,
    extra: dict[str, float],
) -> None:
    sim = sim_factory(devices=[f"{ADDRESS},adapter=hci0,protocol={protocol},cells={cells}"])
    voltages = [round(v, 3) for v in VOLTAGES_16[:cells]]
    sim.set_state(ADDRESS, voltages=voltages, **extra)
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", sim.bus_address)
    fds_before = open_fds()
    reading = await read_once(ReadRequest(name="jk1", address=ADDRESS, timeout_s=5), timing=FAST)
    assert reading["error"] is None
    assert reading["connected"] is True
    assert reading["adapter"] == "hci0"
    assert reading["protocol"] == protocol
    assert reading["got"] == {"device_info": True, "cell_info": True, "settings": True}
    cell_info = reading["status"]["cell_info"]
    assert cell_info["voltages"] == pytest.approx(voltages, abs=1e-6)
    for key, value in extra.items():
        assert cell_info[key] == pytest.approx(value, abs=1e-6), key
    assert reading["model_nbr"] == "BK-BLE-1.0"
    assert 0 < reading["duration_s"] < 5
    assert_device_released(sim)
    assert open_fds() <= fds_before


@pytest.mark.parametrize("mode", ["acquire", "start"])
async def test_both_notify_mechanisms(sim: SimHandle, reader: Reader, mode: str) -> None:
    req = ReadRequest(name="jk1", address=ADDRESS, timeout_s=5, notify_mode=mode)  # type: ignore[arg-type]
    fds_before = open_fds()
    reading = await reader.read(req)
    assert reading["error"] is None
    starts = [e for e in sim.log() if e["event"] == "notify_start"]
    assert [e["mode"] for e in starts] == [mode]
    assert_device_released(sim)
    await assert_reader_clean(sim, reader)
    assert open_fds() <= fds_before


async def test_split_layout_picks_the_two_ffe1_by_flags(
    sim_factory: Callable[..., SimHandle], monkeypatch: pytest.MonkeyPatch
) -> None:
    sim = sim_factory(devices=[f"{ADDRESS},adapter=hci0,protocol=JK02_32S,layout=new"])
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", sim.bus_address)
    reading = await read_once(ReadRequest(name="jk1", address=ADDRESS, timeout_s=5), timing=FAST)
    assert reading["error"] is None
    assert reading["model_nbr"] is None  # no Device Information service on this module
    assert_device_released(sim)


async def _foreign_start_notify(sim: SimHandle) -> MessageBus:
    """Another client with a StartNotify session: AcquireNotify then answers InProgress."""
    bus = await MessageBus(bus_address=sim.bus_address).connect()
    path = sim.device_props(ADDRESS)["path"]
    objects = await bus.call(
        Message(
            destination="org.bluez",
            path="/",
            interface="org.freedesktop.DBus.ObjectManager",
            member="GetManagedObjects",
        )
    )
    assert objects is not None
    chars = [
        p
        for p, ifaces in objects.body[0].items()
        if p.startswith(path + "/")
        and "org.bluez.GattCharacteristic1" in ifaces
        and "notify" in ifaces["org.bluez.GattCharacteristic1"]["Flags"].value
    ]
    # BlueZ 5.66 refuses StartNotify without a link (the real-BlueZ tier's probe): connect
    # first; the session then outlives the link (docs/bluez.md fact 8).
    connected = await bus.call(
        Message(destination="org.bluez", path=path, interface="org.bluez.Device1", member="Connect")
    )
    assert connected is not None
    assert connected.message_type == MessageType.METHOD_RETURN, connected.body
    reply = None
    for _ in range(100):  # until ServicesResolved: StartNotify needs the GATT client ready
        reply = await bus.call(
            Message(
                destination="org.bluez",
                path=chars[0],
                interface="org.bluez.GattCharacteristic1",
                member="StartNotify",
            )
        )
        if reply is not None and reply.message_type == MessageType.METHOD_RETURN:
            break
        await asyncio.sleep(0.05)
    assert reply is not None
    assert reply.message_type == MessageType.METHOD_RETURN, reply.body
    return bus


async def test_auto_is_start_notify_before_bluez_5_84(
    sim: SimHandle, reader: Reader, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failed AcquireNotify wedges BlueZ 5.66 (docs/bluez.md fact 16): auto never uses it."""
    monkeypatch.setenv("BLUEZ_JK_BLUEZ_VERSION", "5.66")
    reading = await reader.read(ReadRequest(name="jk1", address=ADDRESS, timeout_s=5))
    assert reading["error"] is None
    modes = {e["mode"] for e in sim.log() if e["event"] == "notify_start"}
    assert modes == {"start"}


async def test_auto_falls_back_to_start_notify_and_remembers(
    sim: SimHandle, reader: Reader, monkeypatch: pytest.MonkeyPatch
) -> None:
    # From BlueZ 5.84 on, auto tries AcquireNotify first.
    monkeypatch.setenv("BLUEZ_JK_BLUEZ_VERSION", "5.84")
    # The device must be known (GATT cached) for a foreign StartNotify to arm.
    assert (await reader.read(ReadRequest(name="jk1", address=ADDRESS, timeout_s=5)))[
        "error"
    ] is None
    foreign = await _foreign_start_notify(sim)
    sim.clear_log()
    try:
        reading = await reader.read(ReadRequest(name="jk1", address=ADDRESS, timeout_s=5))
    finally:
        foreign.disconnect()
    assert reading["error"] is None
    assert reader.notify_mode(ADDRESS) == "start"
    bus = reader._bus
    sim.clear_log()
    assert (await reader.read(ReadRequest(name="jk1", address=ADDRESS, timeout_s=5)))[
        "error"
    ] is None
    modes = [e["mode"] for e in sim.log() if e["event"] == "notify_start"]
    assert modes == ["start"]  # straight to the remembered mode, no AcquireNotify attempt
    assert reader._bus is bus  # one bus connection for every read of a Reader
    await assert_reader_clean(sim, reader)


async def test_capture_gets_every_chunk_and_decodes_back(sim: SimHandle, reader: Reader) -> None:
    chunks: list[bytes] = []
    reading = await reader.read(
        ReadRequest(name="jk1", address=ADDRESS, timeout_s=5), capture=chunks.append
    )
    assert reading["error"] is None
    decoder = StreamDecoder()
    for chunk in chunks:
        decoder.feed(chunk)
    assert decoder.got == reading["got"]
    assert decoder.status["device_info"] == reading["status"]["device_info"]


async def test_reader_survives_a_lost_bus(sim: SimHandle, reader: Reader) -> None:
    req = ReadRequest(name="jk1", address=ADDRESS, timeout_s=5)
    assert (await reader.read(req))["error"] is None
    first_bus = reader._bus
    await asyncio.to_thread(sim.restart_bus)
    reading = await reader.read(req)
    assert reading["error"] is None, reading["error"]
    assert reader._bus is not first_bus
    assert_device_released(sim)


async def test_unknown_adapter(sim: SimHandle, reader: Reader) -> None:
    reading = await reader.read(ReadRequest(name="jk1", address=ADDRESS, adapter="hci7"))
    assert reading["error"] is not None
    assert reading["error"]["type"] == "AdapterNotFound"
    assert "hci0" in reading["error"]["message"]


async def test_unreachable_bus(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/bluez-jk-bus")
    reading = await read_once(ReadRequest(name="jk1", address=ADDRESS, timeout_s=3))
    assert reading["error"] is not None
    assert reading["error"]["type"] == "BusError"
    assert reading["duration_s"] < 3 + 2


async def test_cancellation_cleans_up_and_propagates(sim: SimHandle, reader: Reader) -> None:
    sim.set_fault("silent")
    fds_before = open_fds()
    task = asyncio.create_task(reader.read(ReadRequest(name="jk1", address=ADDRESS, timeout_s=30)))
    await asyncio.to_thread(sim.wait_log, lambda e: e["event"] == "notify_start", 5.0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert_device_released(sim)
    await assert_reader_clean(sim, reader)
    assert open_fds() <= fds_before


async def test_adapter_that_vanishes_and_returns(sim: SimHandle, reader: Reader) -> None:
    req = ReadRequest(name="jk1", address=ADDRESS, adapter="hci0", timeout_s=5)
    await asyncio.to_thread(sim.set_adapter_present, "hci0", False)
    reading = await reader.read(req)
    assert reading["error"] is not None
    assert reading["error"]["type"] == "AdapterNotFound"
    await asyncio.to_thread(sim.set_adapter_present, "hci0", True)
    reading = await reader.read(req)
    assert reading["error"] is None, reading["error"]
    assert_device_released(sim)


async def test_kept_rules_and_cached_state_survive_a_bluetoothd_restart(
    sim: SimHandle, reader: Reader
) -> None:
    """The rules a read keeps for the connection's life name org.bluez, not its unique name:
    after bluetoothd restarts (a new owner, every object exported anew) the next read on the
    same connection adds none, sees the new objects and reads the model number it kept."""
    req = ReadRequest(name="jk1", address=ADDRESS, adapter="hci0", timeout_s=10)
    first = await reader.read(req)
    assert first["error"] is None, first["error"]
    bus = reader._bus
    assert bus is not None
    kept = bus.kept_rules
    assert kept
    await asyncio.to_thread(sim.restart)
    for _ in range(2):
        reading = await reader.read(req)
        assert reading["error"] is None, reading["error"]
        assert reading["model_nbr"] == first["model_nbr"]
    assert reader._bus is bus
    assert bus.kept_rules == kept
    assert_device_released(sim)
    await assert_reader_clean(sim, reader)


async def test_a_read_of_a_known_bms_makes_only_the_calls_it_needs(
    sim: SimHandle, reader: Reader, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 13: after the first read, a read of the same BMS adds and removes no match rule,
    asks GetManagedObjects once, reads no model number again; the rest is the link itself."""
    req = ReadRequest(name="jk1", address=ADDRESS, adapter="hci0", timeout_s=10)
    first = await reader.read(req)
    assert first["error"] is None, first["error"]
    bus = await reader.get_bus()
    real_call = bus.call
    members: list[str] = []

    async def call(path: str, interface: str, member: str, *args: Any, **kwargs: Any) -> Any:
        members.append(member)
        return await real_call(path, interface, member, *args, **kwargs)

    monkeypatch.setattr(bus, "call", call)
    reading = await reader.read(req)
    monkeypatch.undo()
    assert reading["error"] is None, reading["error"]
    assert reading["model_nbr"] == first["model_nbr"]
    writes = members.count("WriteValue")
    assert writes >= 2, members
    assert [m for m in members if m != "WriteValue"] == [
        "GetManagedObjects",
        "Connect",
        "StartNotify",
        "StopNotify",
        "Disconnect",
    ], members
    await assert_reader_clean(sim, reader)
