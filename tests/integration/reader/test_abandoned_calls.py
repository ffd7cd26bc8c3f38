"""Calls whose caller gives up (cancelled by a pause or a session deadline, or timed out) while
the request is already on its way: what the late answer creates must still be undone.

Found by the fault soak: a read cancelled by cmd/pause while its first AddMatch was in flight
left that match rule on the gateway's bus connection for as long as the connection lived."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

import pytest

from bluez_jk.bluez.bus import DBUS, DBUS_PATH, BluezBus, properties_changed_rule
from bluez_jk.bluez.device import connect, disconnect, wait_services_resolved, watch_device
from bluez_jk.bluez.gatt import CHARACTERISTIC, find_jk_chars
from bluez_jk.bluez.paths import device_path
from bluez_jk.reader import Reader, ReadRequest
from tests.fixtures.bluez import SimHandle
from tests.fixtures.waits import EVENT_DEADLINE_S
from tests.integration.reader.conftest import (
    ADDRESS,
    assert_device_released,
    match_rules,
    open_fds,
)

pytestmark = pytest.mark.integration

ADAPTER = "/org/bluez/hci0"


async def _round_trip(bus: BluezBus) -> None:
    """dbus-daemon handles one connection's messages in order: after this reply, it has
    handled every request this connection sent before."""
    await bus.call(DBUS_PATH, DBUS, "GetId", stage="bus", timeout_s=5.0, destination=DBUS)


async def test_cancelled_while_add_match_is_in_flight_leaves_no_rule(
    sim: SimHandle, reader: Reader
) -> None:
    bus = await reader.get_bus()

    async def subscribed() -> None:
        rules = [properties_changed_rule(path=device_path(ADAPTER, ADDRESS))]
        async with bus.signals(rules, lambda _message: None):
            await asyncio.Event().wait()

    task = asyncio.create_task(subscribed())
    await asyncio.sleep(0)  # the task sends AddMatch and waits for its reply
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await _round_trip(bus)
    assert await match_rules(sim.bus_address, bus.unique_name) == len(bus.kept_rules)


async def test_abandoned_acquire_notify_fd_is_closed(sim: SimHandle, reader: Reader) -> None:
    bus = await reader.get_bus()
    dev_obj = device_path(ADAPTER, ADDRESS)
    async with watch_device(bus, ADAPTER, dev_obj) as watch:
        await connect(bus, watch, 5.0)
        try:
            await wait_services_resolved(watch, 5.0)
            objects = await bus.managed_objects(stage="resolve")
            chars = find_jk_chars(objects, dev_obj)
            fds_before = open_fds()
            sim.clear_log()
            task = asyncio.create_task(
                bus.call(
                    chars.notify,
                    CHARACTERISTIC,
                    "AcquireNotify",
                    "a{sv}",
                    [{}],
                    stage="subscribe",
                    timeout_s=5.0,
                )
            )
            await asyncio.sleep(0)  # the request leaves; its reply (with an fd) comes later
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            # The simulator ends the acquired session only when our end of the socket closes.
            stop = await sim.await_log(
                lambda e: e["event"] == "notify_stop" and e.get("mode") == "acquire", 5.0
            )
            assert stop["sender"] == bus.unique_name
            assert sim.device_props(ADDRESS)["Connected"] is True
            assert open_fds() <= fds_before
        finally:
            await disconnect(bus, watch, 3.0)
    assert await match_rules(sim.bus_address, bus.unique_name) == len(bus.kept_rules)
    assert sim.device_props(ADDRESS)["Connected"] is False


@pytest.mark.parametrize(
    ("member", "notify_mode", "fault"),
    [
        ("AddMatch", "auto", None),
        ("Connect", "auto", None),
        # auto is StartNotify before BlueZ 5.84 (the simulator's default 5.66): asked for.
        ("AcquireNotify", "acquire", None),
        ("StartNotify", "start", None),
        ("StartDiscovery", "auto", "uncached"),
    ],
)
async def test_read_cancelled_with_a_request_in_flight_leaves_nothing(
    sim: SimHandle,
    reader: Reader,
    monkeypatch: pytest.MonkeyPatch,
    member: str,
    notify_mode: Literal["auto", "acquire", "start"],
    fault: str | None,
) -> None:
    """A pause (cmd/pause cancels the read) at the worst moment: the request has left and its
    reply has not come back. Nothing it starts may outlive the read."""
    if fault is not None:
        sim.set_fault(fault, address=ADDRESS)
    bus = await reader.get_bus()
    fds_before = open_fds()
    real_call = bus.call
    read_task: asyncio.Task[Any] | None = None
    fired = asyncio.Event()

    async def call(path: str, interface: str, name: str, *args: Any, **kwargs: Any) -> Any:
        inner = asyncio.ensure_future(real_call(path, interface, name, *args, **kwargs))
        if name == member and not fired.is_set():
            fired.set()
            await asyncio.sleep(0)  # the request leaves
            assert read_task is not None
            read_task.cancel()
        return await inner

    monkeypatch.setattr(bus, "call", call)
    read_task = asyncio.create_task(
        reader.read(ReadRequest(name="jk1", address=ADDRESS, timeout_s=10, notify_mode=notify_mode))
    )
    with pytest.raises(asyncio.CancelledError):
        await read_task
    assert fired.is_set()
    monkeypatch.undo()

    async def released() -> bool:
        props = sim.device_props(ADDRESS)
        return not (
            props["Connected"]
            or props["Notifying"]
            or props["NotifyAcquired"]
            or props["notify_sessions"]
        )

    async with asyncio.timeout(EVENT_DEADLINE_S):
        while not await released():
            await asyncio.sleep(0.05)  # the simulator sees the late cleanup over its own bus
    assert_device_released(sim)
    await _round_trip(bus)
    assert await match_rules(sim.bus_address, bus.unique_name) == len(bus.kept_rules)
    assert open_fds() <= fds_before
    if member == "StartDiscovery":
        await sim.await_log(lambda e: e["event"] == "discovery_stop", 5.0)
    discovering = await bus.get_property(ADAPTER, "org.bluez.Adapter1", "Discovering", stage="bus")
    assert discovering is False
