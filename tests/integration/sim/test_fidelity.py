"""BlueZ behaviour the clients depend on (docs/bluez.md sections 0, 1, 4 and 6)."""

from __future__ import annotations

import asyncio
import re
import select
import socket
from collections.abc import Callable

import pytest
from dbus_fast import DBusError, Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from bluez_jk.protocol import command
from bluez_jk.protocol.stream import StreamDecoder
from tests.fixtures.bluez import SimHandle
from tests.integration.sim.client import (
    ADAPTER1,
    ADDRESS,
    CHAR,
    CHAR1,
    DEV,
    DEVICE1,
    Client,
    client,
    is_prop,
)

pytestmark = pytest.mark.integration

Factory = Callable[..., SimHandle]
HCI0 = "/org/bluez/hci0"
GATT_PATH = re.compile(
    r"^/org/bluez/hci0/dev_C8_47_80_37_02_E8/service[0-9a-f]{4}(/char[0-9a-f]{4}(/desc[0-9a-f]{4})?)?$"
)


async def _acquire(c: Client) -> tuple[socket.socket, int]:
    reply = await c.raw(CHAR, CHAR1, "AcquireNotify", "a{sv}", [{}])
    assert reply.message_type is MessageType.METHOD_RETURN, reply.body
    assert reply.signature == "hq"
    fd = reply.unix_fds[reply.body[0]]
    sock = socket.socket(fileno=fd)
    sock.setblocking(False)
    return sock, int(reply.body[1])


async def _recv(sock: socket.socket, timeout_s: float = 5.0) -> bytes:
    loop = asyncio.get_running_loop()
    return await asyncio.wait_for(loop.sock_recv(sock, 1024), timeout_s)


async def test_object_tree_paths_and_properties(sim: SimHandle) -> None:
    async with client(sim.bus_address) as c:
        objects = await c.managed()
        adapter = objects[HCI0][ADAPTER1]
        assert "central" in adapter["Roles"]
        assert adapter["Powered"] is True
        gatt = [p for p in objects if p.startswith(DEV + "/")]
        assert gatt
        assert all(GATT_PATH.match(p) for p in gatt)
        for path in [HCI0, DEV, *gatt]:
            assert objects[path]["org.freedesktop.DBus.Introspectable"] == {}
            assert objects[path]["org.freedesktop.DBus.Properties"] == {}
        ffe1 = objects[CHAR][CHAR1]
        assert ffe1["Flags"] == ["write-without-response", "write", "notify"]
        assert {"Notifying", "NotifyAcquired", "WriteAcquired"} <= set(ffe1)
        assert "MTU" not in ffe1  # exists only while connected
        assert "/org/bluezjk/simulator" not in objects
        xml = (await c.call("/", "org.freedesktop.DBus.Introspectable", "Introspect"))[0]
        assert "org.freedesktop.DBus.ObjectManager" in xml
        assert '<node name="org"/>' in xml
        xml = (await c.call(CHAR, "org.freedesktop.DBus.Introspectable", "Introspect"))[0]
        assert '<method name="AcquireNotify">' in xml
        assert '<property name="NotifyAcquired" type="b" access="read"/>' in xml


async def test_unknown_paths_answer_unknown_object(sim: SimHandle) -> None:
    async with client(sim.bus_address) as c:
        gone = "/org/bluez/hci0/dev_00_11_22_33_44_55"
        assert await c.expect_error(gone, DEVICE1, "Connect") == (
            "org.freedesktop.DBus.Error.UnknownObject",
            'Method "Connect" with signature "" on interface "org.bluez.Device1" doesn\'t exist\n',
        )
        name, _ = await c.expect_error(DEV, DEVICE1, "Connect", "s", ["x"])
        assert name == "org.freedesktop.DBus.Error.UnknownMethod"


async def test_device_info_service_and_cccd(sim: SimHandle) -> None:
    model = DEV + "/service0008/char0009"
    cccd = CHAR + "/desc0013"
    async with client(sim.bus_address) as c:
        # 5.66's answer without a link (the real-BlueZ tier's probe, docs/bluez.md 8).
        assert await c.expect_error(model, CHAR1, "ReadValue", "a{sv}", [{}]) == (
            "org.bluez.Error.Failed",
            "Failed to send read request",
        )
        await c.connect_resolved()
        assert bytes((await c.call(model, CHAR1, "ReadValue", "a{sv}", [{}]))[0]) == b"BK-BLE-1.0"
        assert await c.expect_error(
            cccd, "org.bluez.GattDescriptor1", "WriteValue", "aya{sv}", [b"\x01\x00", {}]
        ) == ("org.bluez.Error.NotPermitted", "Write not permitted")
        assert await c.expect_error(model, CHAR1, "WriteValue", "aya{sv}", [b"x", {}]) == (
            "org.bluez.Error.NotAuthorized",
            "Operation Not Authorized",
        )


async def test_connect_signals_in_bluez_order(sim: SimHandle) -> None:
    async with client(sim.bus_address) as c:
        await c.call(DEV, DEVICE1, "Connect")
        # Connected=true arrived before the reply; ServicesResolved comes later, with UUIDs.
        assert any(is_prop(m, DEV, "Connected", True) for m in c.signals)
        resolved = await c.wait_prop(DEV, "ServicesResolved", True)
        assert "UUIDs" in resolved.body[1]
        assert "0000ffe0-0000-1000-8000-00805f9b34fb" in resolved.body[1]["UUIDs"].value
        assert (await c.props(CHAR, CHAR1))["MTU"] == 131
        await c.call(DEV, DEVICE1, "Connect")  # already connected: success
        start = len(c.signals)
        wire: list[str] = []  # in the order it came off the socket, replies included

        def record(m: Message) -> None:
            if m.message_type is MessageType.METHOD_RETURN:
                wire.append("reply")
            elif m.message_type is MessageType.SIGNAL and m.path == DEV:
                changed = m.body[1] if m.member == "PropertiesChanged" else {}
                wire.append(next(iter(changed), m.member))

        c.bus.add_message_handler(record)
        try:
            await c.call(DEV, DEVICE1, "Disconnect")
            await c.wait_prop(DEV, "Connected", False, start=start)
        finally:
            c.bus.remove_message_handler(record)
        # 5.66 answers in device_remove_connection, then queues Connected (docs/bluez.md 3.3).
        assert wire == ["ServicesResolved", "Disconnected", "reply", "Connected"]
        await c.call(DEV, DEVICE1, "Disconnect")  # already disconnected: success


async def test_acquire_notify_delivers_datagrams_and_is_exclusive(sim: SimHandle) -> None:
    async with client(sim.bus_address) as c, client(sim.bus_address) as other:
        await c.connect_resolved()
        sock, mtu = await _acquire(c)
        with sock:
            assert mtu == 131
            # NotifyAcquired=true was signalled before the reply (gdbus flushes first).
            assert any(is_prop(m, CHAR, "NotifyAcquired", True) for m in c.signals)
            props = await c.props(CHAR, CHAR1)
            assert props["Notifying"] is False
            assert await other.expect_error(CHAR, CHAR1, "AcquireNotify", "a{sv}", [{}]) == (
                "org.bluez.Error.NotPermitted",
                "Notify acquired",
            )
            assert await other.expect_error(CHAR, CHAR1, "StartNotify") == (
                "org.bluez.Error.NotPermitted",
                "Notify acquired",
            )
            await c.write(0x97)
            decoder = StreamDecoder()
            while not decoder.got["device_info"]:
                chunk = await _recv(sock)
                assert 0 < len(chunk) <= mtu - 3
                decoder.feed(chunk)
            assert c.values() == []  # Value is not updated while acquired
        await c.wait_prop(CHAR, "NotifyAcquired", False)  # closing the fd released it
        await c.call(CHAR, CHAR1, "StartNotify")
        assert await other.expect_error(CHAR, CHAR1, "AcquireNotify", "a{sv}", [{}]) == (
            "org.bluez.Error.InProgress",
            "In Progress",
        )
    stops = [e for e in sim.log() if e["event"] == "notify_stop" and e["mode"] == "acquire"]
    assert [e["reason"] for e in stops] == ["fd_closed"]


async def test_any_stop_notify_releases_an_acquired_fd(sim: SimHandle) -> None:
    async with client(sim.bus_address) as c, client(sim.bus_address) as other:
        await c.connect_resolved()
        sock, _ = await _acquire(c)
        with sock:
            await other.call(CHAR, CHAR1, "StopNotify")
            assert await _recv(sock) == b""
        assert (await c.props(CHAR, CHAR1))["NotifyAcquired"] is False


async def test_disconnect_shuts_the_acquired_fd_and_stops_notifications(sim: SimHandle) -> None:
    async with client(sim.bus_address) as c, client(sim.bus_address) as watcher:
        await c.connect_resolved()
        sock, _ = await _acquire(c)
        with sock:
            await c.call(DEV, DEVICE1, "Disconnect")
            assert await _recv(sock) == b""
            poll = select.poll()
            poll.register(sock.fileno(), select.POLLIN)
            assert poll.poll(0)[0][1] & select.POLLHUP
        assert (await watcher.props(CHAR, CHAR1))["NotifyAcquired"] is False
        assert any(is_prop(m, CHAR, "NotifyAcquired", False) for m in watcher.signals)
    assert [e["reason"] for e in sim.log() if e["event"] == "notify_stop"] == ["disconnect"]


async def test_start_notify_sessions_survive_disconnect_and_rearm(sim: SimHandle) -> None:
    """docs/bluez.md fact 8: only StopNotify or leaving the bus ends a StartNotify session."""
    async with client(sim.bus_address) as c:
        await c.connect_resolved()
        await c.call(CHAR, CHAR1, "StartNotify")
        await c.write(0x97)
        await c.wait_signal(lambda _m: len(c.values()) >= 3)
        await c.call(DEV, DEVICE1, "Disconnect")
        seen = len(c.values())
        assert sim.device_props(ADDRESS)["notify_sessions"] == [c.bus.unique_name]
        await c.connect_resolved()
        await c.write(0x97)  # no second StartNotify: the session was re-armed
        await c.wait_signal(lambda _m: len(c.values()) > seen)
        await c.call(CHAR, CHAR1, "StopNotify")
        assert (await c.props(CHAR, CHAR1))["Notifying"] is False
        assert await c.expect_error(CHAR, CHAR1, "StopNotify") == (
            "org.bluez.Error.Failed",
            "No notify session started",
        )


async def test_a_client_leaving_the_bus_ends_its_sessions(sim: SimHandle) -> None:
    async with client(sim.bus_address) as watcher:
        async with client(sim.bus_address) as c:
            await c.connect_resolved()
            await c.call(CHAR, CHAR1, "StartNotify")
            await c.call(HCI0, ADAPTER1, "StartDiscovery")
            await watcher.wait_prop(CHAR, "Notifying", True, start=0)
            # Discovering turns true after the StartDiscovery reply: a client that left before
            # that never had a scan to end (on a loaded machine it could, and the test hung).
            await watcher.wait_prop(HCI0, "Discovering", True, start=0)
            leaving = c.bus.unique_name
        # The link stays up: BlueZ never disconnects when a client goes (docs/bluez.md fact 5).
        await watcher.wait_prop(CHAR, "Notifying", False)
        await watcher.wait_prop(HCI0, "Discovering", False)
        assert (await watcher.props(DEV, DEVICE1))["Connected"] is True
    for event in ("notify_stop", "discovery_stop"):
        await sim.await_log(lambda e, name=event: e["event"] == name)
    stops = [e for e in sim.log() if e["event"] in ("notify_stop", "discovery_stop")]
    assert {(e["event"], e["sender"], e["reason"]) for e in stops} == {
        ("notify_stop", leaving, "bus_left"),
        ("discovery_stop", leaving, "bus_left"),
    }


async def test_discovery_sessions_are_per_connection(sim: SimHandle) -> None:
    async with client(sim.bus_address) as c, client(sim.bus_address) as other:
        assert await c.expect_error(HCI0, ADAPTER1, "StopDiscovery") == (
            "org.bluez.Error.Failed",
            "No discovery started",
        )
        await c.call(HCI0, ADAPTER1, "SetDiscoveryFilter", "a{sv}", [{}])
        await c.call(HCI0, ADAPTER1, "StartDiscovery")
        assert await c.expect_error(HCI0, ADAPTER1, "StartDiscovery") == (
            "org.bluez.Error.InProgress",
            "Operation already in progress",
        )
        await other.call(HCI0, ADAPTER1, "StartDiscovery")  # joins, no error
        await c.wait_signal(lambda m: m.path == DEV and "RSSI" in m.body[1])
        await c.call(HCI0, ADAPTER1, "StopDiscovery")
        assert (await c.props(HCI0, ADAPTER1))["Discovering"] is True
        await other.call(HCI0, ADAPTER1, "StopDiscovery")
        invalidated = await c.wait_signal(lambda m: m.path == DEV and "RSSI" in m.body[2])
        assert invalidated.body[1] == {}
        assert (await c.props(HCI0, ADAPTER1))["Discovering"] is False


async def test_pending_connect_is_shared_and_cancelled_by_any_disconnect(sim: SimHandle) -> None:
    sim.set_fault("not-advertising", address=ADDRESS)  # the connect hangs until its timeout
    async with client(sim.bus_address) as c, client(sim.bus_address) as other:
        pending = asyncio.ensure_future(c.expect_error(DEV, DEVICE1, "Connect"))
        await sim.await_log(lambda e: e["event"] == "connect_call")
        # 5.66's answer (the real-BlueZ tier's probe; InProgress from 5.81 on).
        assert await other.expect_error(DEV, DEVICE1, "Connect") == (
            "org.bluez.Error.Failed",
            "Operation already in progress",
        )
        await other.call(DEV, DEVICE1, "Disconnect")
        assert await pending == ("org.bluez.Error.Failed", "br-connection-canceled")


async def test_start_notify_in_the_disconnect_grace_window(sim_factory: Factory) -> None:
    sim = sim_factory(timing="real")  # a 2 s grace window, as bluetoothd
    async with client(sim.bus_address) as c, client(sim.bus_address) as other:
        await c.connect_resolved()
        leaving = asyncio.ensure_future(c.call(DEV, DEVICE1, "Disconnect"))
        await sim.await_log(lambda e: e["event"] == "disconnect_call")
        assert (await other.props(DEV, DEVICE1))["Connected"] is True
        assert await other.expect_error(CHAR, CHAR1, "StartNotify") == (
            "org.bluez.Error.NotConnected",
            "Not Connected",
        )
        await leaving
        await c.wait_prop(DEV, "Connected", False)  # right after the reply (3.3)
    log = sim.log()
    asked = next(e["t"] for e in log if e["event"] == "disconnect_call")
    down = next(e["t"] for e in log if e["event"] == "disconnected")
    # Not before the 2 s grace; the bound above only rules out a link held until some other
    # timer (the 20 s kernel connect timeout), so a loaded machine's late timer still passes.
    assert 1.9 <= down - asked < 10.0


async def test_adapter_can_vanish_and_return(sim: SimHandle) -> None:
    async with client(sim.bus_address) as c:
        await c.connect_resolved()
        sim.set_adapter_present("hci0", False)
        removed = await c.wait_signal(
            lambda m: m.member == "InterfacesRemoved" and m.body[0] == HCI0
        )
        assert ADAPTER1 in removed.body[1]
        assert not [p for p in await c.managed() if p.startswith(HCI0)]
        name, _ = await c.expect_error(DEV, DEVICE1, "Connect")
        assert name == "org.freedesktop.DBus.Error.UnknownObject"
        sim.set_adapter_present("hci0", True)
        await c.wait_signal(lambda m: m.member == "InterfacesAdded" and m.body[0] == DEV)
        assert (await c.props(DEV, DEVICE1))["Connected"] is False


async def test_new_module_layout_has_two_ffe1_and_no_device_information(
    sim_factory: Factory,
) -> None:
    sim = sim_factory(devices=[f"{ADDRESS},layout=new"])
    async with client(sim.bus_address) as c:
        objects = await c.managed()
        chars = {p: o[CHAR1] for p, o in objects.items() if CHAR1 in o}
        assert [c_["Flags"] for c_ in chars.values()] == [
            ["write-without-response", "write"],
            ["read", "notify"],
        ]
        assert {c_["UUID"] for c_ in chars.values()} == {"0000ffe1-0000-1000-8000-00805f9b34fb"}
        services = [
            o["org.bluez.GattService1"]["UUID"]
            for o in objects.values()
            if "org.bluez.GattService1" in o
        ]
        assert services == ["0000ffe0-0000-1000-8000-00805f9b34fb"]
        write, notify = sorted(chars)
        await c.connect_resolved()
        await c.call(notify, CHAR1, "StartNotify")
        await c.write(0x97, write)
        await c.wait_signal(lambda _m: len(c.values(notify)) >= 2)


@pytest.mark.parametrize("protocol", ["JK02_24S", "JK04"])
async def test_other_profiles_over_dbus(sim_factory: Factory, protocol: str) -> None:
    sim = sim_factory(devices=[f"{ADDRESS},protocol={protocol},cells=8"])
    async with client(sim.bus_address) as c:
        await c.connect_resolved()
        decoder = await c.read_frames(lambda d: all(d.got.values()))
        assert decoder.protocol == protocol
        assert not decoder.errors


async def test_gatt_errors_by_state(sim: SimHandle) -> None:
    async with client(sim.bus_address) as c:
        write = [b"\x00", {}]
        # 5.66's answers without a link (the real-BlueZ tier's probe, docs/bluez.md 8).
        assert await c.expect_error(CHAR, CHAR1, "WriteValue", "aya{sv}", write) == (
            "org.bluez.Error.Failed",
            "No ATT transport",
        )
        assert await c.expect_error(CHAR, CHAR1, "AcquireNotify", "a{sv}", [{}]) == (
            "org.bluez.Error.Failed",
            "Not connected",
        )
        assert await c.expect_error(CHAR, CHAR1, "StartNotify") == (
            "org.bluez.Error.Failed",
            "Failed to register notify session",
        )
        await c.connect_resolved()
        await c.call(CHAR, CHAR1, "StartNotify")
        await c.wait_prop(CHAR, "Notifying", True, start=0)
        assert await c.expect_error(CHAR, CHAR1, "ReadValue", "a{sv}", [{}]) == (
            "org.bluez.Error.NotPermitted",
            "Read not permitted",
        )
        bad_type = [b"\x00", {"type": Variant("s", "sideways")}]
        assert await c.expect_error(CHAR, CHAR1, "WriteValue", "aya{sv}", bad_type) == (
            "org.bluez.Error.NotSupported",
            "Operation is not supported",
        )
        request = [b"\x00", {"type": Variant("s", "request")}]
        first, second = await asyncio.gather(
            c.raw(CHAR, CHAR1, "WriteValue", "aya{sv}", request),
            c.raw(CHAR, CHAR1, "WriteValue", "aya{sv}", request),
        )
        assert first.message_type is MessageType.METHOD_RETURN
        assert (second.error_name, second.body) == ("org.bluez.Error.InProgress", ["In Progress"])


async def test_acquire_write_carries_commands(sim: SimHandle) -> None:
    async with client(sim.bus_address) as c:
        await c.connect_resolved()
        await c.call(CHAR, CHAR1, "StartNotify")
        reply = await c.raw(CHAR, CHAR1, "AcquireWrite", "a{sv}", [{}])
        assert reply.message_type is MessageType.METHOD_RETURN
        with socket.socket(fileno=reply.unix_fds[reply.body[0]]) as sock:
            assert (await c.props(CHAR, CHAR1))["WriteAcquired"] is True
            assert await c.expect_error(CHAR, CHAR1, "WriteValue", "aya{sv}", [b"\x00", {}]) == (
                "org.bluez.Error.NotPermitted",
                "Write acquired",
            )
            sock.send(command(0x97))
            await c.wait_signal(lambda _m: b"\x55\xaa\xeb\x90\x03" in b"".join(c.values()))
        await c.wait_prop(CHAR, "WriteAcquired", False)


async def test_remove_device_and_power(sim: SimHandle) -> None:
    async with client(sim.bus_address) as c:
        await c.connect_resolved()
        assert await c.expect_error(
            HCI0, ADAPTER1, "RemoveDevice", "o", [HCI0 + "/dev_00_00_00_00_00_01"]
        ) == (
            "org.bluez.Error.DoesNotExist",
            "Does Not Exist",
        )
        await c.call(HCI0, ADAPTER1, "RemoveDevice", "o", [DEV])  # connected: disconnects first
        assert any(is_prop(m, DEV, "Connected", False) for m in c.signals)
        assert DEV not in await c.managed()
        await c.call(
            HCI0, "org.freedesktop.DBus.Properties", "Set", "ssv",
            [ADAPTER1, "Powered", Variant("b", False)],
        )  # fmt: skip
        assert await c.expect_error(HCI0, ADAPTER1, "StartDiscovery") == (
            "org.bluez.Error.NotReady",
            "Resource Not Ready",
        )
        assert await c.expect_error(
            HCI0, "org.freedesktop.DBus.Properties", "Set", "ssv",
            [ADAPTER1, "Address", Variant("s", "x")],
        ) == (
            "org.freedesktop.DBus.Error.PropertyReadOnly",
            "Property 'Address' is not writable",
        )  # fmt: skip


async def test_proxy_clients_can_introspect_and_call(sim: SimHandle) -> None:
    bus = await MessageBus(bus_address=sim.bus_address).connect()
    try:
        node = await bus.introspect("org.bluez", DEV)
        device = bus.get_proxy_object("org.bluez", DEV, node).get_interface(DEVICE1)
        await device.call_connect()  # type: ignore[attr-defined]
        assert await device.get_connected() is True  # type: ignore[attr-defined]
        node = await bus.introspect("org.bluez", CHAR)
        char = bus.get_proxy_object("org.bluez", CHAR, node).get_interface(CHAR1)
        with pytest.raises(DBusError) as err:
            await char.call_read_value({})  # type: ignore[attr-defined]
        assert (err.value.type, err.value.text) == (
            "org.bluez.Error.NotPermitted",
            "Read not permitted",
        )
    finally:
        bus.disconnect()
