"""Every fault of docs/simulator.md (stale-cache, left-connected, stop-discovery-rejected too)
as a plain dbus-fast client sees it: BlueZ's exact error names and texts, or its behaviour."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable

import pytest
from dbus_fast import Variant

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
)

pytestmark = pytest.mark.integration

Factory = Callable[..., SimHandle]
OTHER = "C8:47:80:11:22:33"
OTHER_DEV = "/org/bluez/hci0/dev_C8_47_80_11_22_33"
TWO = [f"{ADDRESS},name=JK-A", f"{OTHER},name=JK-B"]
ABORT = ("org.bluez.Error.Failed", "le-connection-abort-by-local")
IN_PROGRESS = ("org.bluez.Error.InProgress", "In Progress")
ACQUIRED = ("org.bluez.Error.NotPermitted", "Notify acquired")


def _decode(c: Client) -> StreamDecoder:
    decoder = StreamDecoder()
    for chunk in c.values():
        decoder.feed(chunk)
    return decoder


async def _handshake(c: Client) -> None:
    await c.connect_resolved()
    await c.call(CHAR, CHAR1, "StartNotify")
    await c.write(0x97)
    await c.write(0x96)


async def _adverts_seen(c: Client, path: str, count: int) -> None:
    """Wait until `path` was reported `count` times by discovery: a witness that time passed."""

    def seen(_m: object) -> bool:
        reports = [m for m in c.signals if m.path == path and m.member == "PropertiesChanged"]
        return sum("RSSI" in m.body[1] for m in reports) >= count

    await c.wait_signal(seen)


async def test_not_advertising_has_no_object_and_discovery_never_finds_it(
    sim_factory: Factory,
) -> None:
    sim = sim_factory(devices=TWO, faults=[f"not-advertising@{ADDRESS}"])
    async with client(sim.bus_address) as c:
        assert DEV not in await c.managed()
        assert await c.expect_error(DEV, DEVICE1, "Connect") == (
            "org.freedesktop.DBus.Error.UnknownObject",
            'Method "Connect" with signature "" on interface "org.bluez.Device1" doesn\'t exist\n',
        )
        await c.call("/org/bluez/hci0", ADAPTER1, "StartDiscovery")
        await c.wait_prop("/org/bluez/hci0", "Discovering", True)
        await _adverts_seen(c, OTHER_DEV, 3)  # the other device advertised three times
        assert DEV not in await c.managed()
        assert not [m for m in c.signals if DEV in (m.path, *m.body[:1])]
        await c.call("/org/bluez/hci0", ADAPTER1, "StopDiscovery")


async def test_not_advertising_on_a_stored_object_times_out_with_abort(sim: SimHandle) -> None:
    sim.set_fault("not-advertising", address=ADDRESS)
    async with client(sim.bus_address) as c:
        started = time.monotonic()
        assert await c.expect_error(DEV, DEVICE1, "Connect") == ABORT
        assert time.monotonic() - started >= 0.25  # the (fast) kernel connect timeout
        assert (await c.props(DEV, DEVICE1))["Connected"] is False


async def test_uncached_appears_after_about_the_configured_discovery_time(
    sim_factory: Factory,
) -> None:
    sim = sim_factory(faults=["uncached"])
    async with client(sim.bus_address) as c:
        assert DEV not in await c.managed()
        started = time.monotonic()
        await c.call("/org/bluez/hci0", ADAPTER1, "StartDiscovery")
        added = await c.wait_signal(
            lambda m: m.member == "InterfacesAdded" and m.body[0] == DEV, timeout_s=5
        )
        assert time.monotonic() - started >= 0.3
        assert added.path == "/"
        assert set(added.body[1]) == {
            "org.freedesktop.DBus.Introspectable",
            "org.freedesktop.DBus.Properties",
            DEVICE1,
        }
        assert "RSSI" in added.body[1][DEVICE1]
        # First connection after discovery: the GATT objects are created, then resolved.
        await c.call("/org/bluez/hci0", ADAPTER1, "StopDiscovery")
        await c.connect_resolved()
        assert CHAR in await c.managed()


async def test_in_progress_with_count_clears_after_n(sim_factory: Factory) -> None:
    sim = sim_factory(faults=[f"in-progress:2@{ADDRESS}"])
    async with client(sim.bus_address) as c:
        assert await c.expect_error(DEV, DEVICE1, "Connect") == IN_PROGRESS
        assert await c.expect_error(DEV, DEVICE1, "Connect") == IN_PROGRESS
        await c.call(DEV, DEVICE1, "Connect")
        assert sim.faults_armed() == []


async def test_connect_abort_flaps_connected_before_the_error(sim: SimHandle) -> None:
    sim.set_fault("connect-abort", count=1)
    async with client(sim.bus_address) as c:
        start = len(c.signals)
        assert await c.expect_error(DEV, DEVICE1, "Connect") == ABORT
        # Both transitions reached us before the error reply (gdbus flushes first).
        flaps = [
            m.body[1]["Connected"].value
            for m in c.signals[start:]
            if m.path == DEV and m.member == "PropertiesChanged" and "Connected" in m.body[1]
        ]
        assert flaps == [True, False]
        await c.connect_resolved()  # the count ran out


async def test_no_services_connects_but_never_resolves(sim: SimHandle) -> None:
    sim.set_fault("no-services", address=ADDRESS)
    async with client(sim.bus_address) as c:
        await c.call(DEV, DEVICE1, "Connect")
        sim.wait_log(lambda e: e["event"] == "resolve_skipped")
        props = await c.props(DEV, DEVICE1)
        assert props["Connected"] is True
        assert props["ServicesResolved"] is False


async def test_notify_acquired_refuses_until_any_stop_notify(sim_factory: Factory) -> None:
    sim = sim_factory(faults=["notify-acquired"])
    async with client(sim.bus_address) as c:
        await c.connect_resolved()
        assert (await c.props(CHAR, CHAR1))["NotifyAcquired"] is True
        assert await c.expect_error(CHAR, CHAR1, "StartNotify") == ACQUIRED
        assert await c.expect_error(CHAR, CHAR1, "AcquireNotify", "a{sv}", [{}]) == ACQUIRED
        # BlueZ >= 5.51: StopNotify from anyone releases an acquired notify.
        await c.call(CHAR, CHAR1, "StopNotify")
        assert (await c.props(CHAR, CHAR1))["NotifyAcquired"] is False
        await c.call(CHAR, CHAR1, "StartNotify")


async def test_notify_acquired_is_cleared_by_disconnect(sim: SimHandle) -> None:
    async with client(sim.bus_address) as c:
        await c.connect_resolved()
        sim.set_fault("notify-acquired", address=ADDRESS)
        assert (await c.props(CHAR, CHAR1))["NotifyAcquired"] is True
        await c.call(DEV, DEVICE1, "Disconnect")
        assert (await c.props(CHAR, CHAR1))["NotifyAcquired"] is False
        sim.clear_faults("notify-acquired")
        await c.connect_resolved()
        await c.call(CHAR, CHAR1, "StartNotify")


async def test_drop_mid_frame_drops_the_link_inside_a_cell_frame(sim: SimHandle) -> None:
    sim.set_fault("drop-mid-frame", count=1)
    async with client(sim.bus_address) as c:
        await _handshake(c)
        reason = await c.wait_signal(lambda m: m.member == "Disconnected" and m.path == DEV)
        assert reason.body == ["org.bluez.Reason.Remote", "Connection terminated by remote user"]
        await c.wait_prop(DEV, "Connected", False)
        decoder = _decode(c)
        assert decoder.got == {"device_info": True, "cell_info": False, "settings": True}
        cell_header = b"\x55\xaa\xeb\x90\x02"
        assert cell_header in b"".join(c.values())


async def test_bad_crc_frames_fail_the_checksum(sim: SimHandle) -> None:
    sim.set_fault("bad-crc", count=2)
    async with client(sim.bus_address) as c:
        await _handshake(c)
        await c.wait_signal(lambda _m: _decode(c).got["cell_info"])
        decoder = _decode(c)
        assert decoder.assembler.corrupt == 2


async def test_junk_puts_at_noise_and_glued_acks_on_the_wire(sim: SimHandle) -> None:
    sim.set_fault("junk")
    async with client(sim.bus_address) as c:
        await _handshake(c)
        await c.wait_signal(lambda _m: _decode(c).got["cell_info"])
        chunks = c.values()
        assert b"AT\r\n" in chunks
        assert any(len(ch) not in (128, 22, 20, 4) for ch in chunks)
        decoder = _decode(c)
        assert decoder.assembler.junk_bytes > 0
        assert all(decoder.got.values())


async def test_silent_accepts_writes_and_never_notifies(sim_factory: Factory) -> None:
    sim = sim_factory(devices=TWO, faults=[f"silent@{ADDRESS}"])
    other_char = OTHER_DEV + "/service0010/char0011"
    async with client(sim.bus_address) as c:
        await _handshake(c)
        await c.connect_resolved(OTHER_DEV)
        await c.call(other_char, CHAR1, "StartNotify")
        await c.write(0x97, other_char)
        await c.write(0x96, other_char)
        # The witness streams three cell-info frames; the silent one said nothing meanwhile.
        header = b"\x55\xaa\xeb\x90\x02"
        await c.wait_signal(lambda _m: b"".join(c.values(other_char)).count(header) >= 3)
        assert c.values() == []
        writes = [e for e in sim.log() if e["event"] == "write" and e["address"] == ADDRESS]
        assert [e["code"] for e in writes] == [0x97, 0x96]


async def test_slow_spaces_chunks_by_200_ms(sim: SimHandle) -> None:
    sim.set_fault("slow")
    async with client(sim.bus_address) as c:
        await c.connect_resolved()
        await c.call(CHAR, CHAR1, "StartNotify")
        arrivals: list[float] = []

        def stamp(_m: object) -> bool:
            while len(arrivals) < len(c.values()):
                arrivals.append(time.monotonic())
            return len(arrivals) >= 3

        await c.write(0x97)
        await c.wait_signal(stamp, timeout_s=5)
        gaps = [b - a for a, b in itertools.pairwise(arrivals)]
        assert min(gaps) >= 0.15


async def test_auth_required_refuses_the_subscription_not_the_write(sim: SimHandle) -> None:
    """As the real-BlueZ tier shows it: a BMS that wants pairing refuses the CCCD write; a
    Write Without Response still goes out, and StartNotify gets no answer while BlueZ tries
    to pair on its own (docs/bluez.md fact 16)."""
    sim.set_fault("auth-required", address=ADDRESS)
    async with client(sim.bus_address) as c:
        await c.connect_resolved()
        await c.call(CHAR, CHAR1, "WriteValue", "aya{sv}", [b"\x00", {}])
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(2.0):
                await c.call(CHAR, CHAR1, "StartNotify", "", [])
    assert sim.wait_log(lambda e: e["event"] == "cccd_refused")


async def test_a_refused_acquire_notify_wedges_bluez_5_66_until_restart(
    sim_factory: Factory,
) -> None:
    sim = sim_factory(faults=[f"auth-required:1@{ADDRESS}"])
    async with client(sim.bus_address) as c:
        await c.connect_resolved()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(2.0):
                await c.call(CHAR, CHAR1, "AcquireNotify", "a{sv}", [{}])
        await c.call(DEV, "org.bluez.Device1", "Disconnect", "", [])
    assert sim.device_props(ADDRESS)["NotifyAcquired"] is True
    async with client(sim.bus_address) as c:
        await c.connect_resolved()
        assert await c.expect_error(CHAR, CHAR1, "StartNotify", "", []) == (
            "org.bluez.Error.NotPermitted",
            "Notify acquired",
        )
    sim.restart()
    assert sim.device_props(ADDRESS)["NotifyAcquired"] is False


async def test_bluez_5_84_answers_a_refused_acquire_notify(sim_factory: Factory) -> None:
    sim = sim_factory(faults=[f"auth-required:1@{ADDRESS}"], bluez="5.84")
    async with client(sim.bus_address) as c:
        await c.connect_resolved()
        name, _ = await c.expect_error(CHAR, CHAR1, "AcquireNotify", "a{sv}", [{}])
        assert name == "org.bluez.Error.Failed"
    assert sim.device_props(ADDRESS)["NotifyAcquired"] is False


async def test_stale_cache_hides_ffe0_until_remove_device(sim_factory: Factory) -> None:
    sim = sim_factory(faults=["stale-cache"])
    async with client(sim.bus_address) as c:
        await c.connect_resolved()
        objects = await c.managed()
        services = {p: i for p, i in objects.items() if "org.bluez.GattService1" in i}
        assert services
        assert all(
            i["org.bluez.GattService1"]["UUID"] != "0000ffe0-0000-1000-8000-00805f9b34fb"
            for i in services.values()
        )
        await c.call(DEV, DEVICE1, "Disconnect")
        await c.call(DEV, DEVICE1, "Connect")  # a reconnect alone does not cure it
        await c.wait_prop(DEV, "ServicesResolved", True, start=0)
        assert CHAR not in await c.managed()
        await c.call("/org/bluez/hci0", ADAPTER1, "RemoveDevice", "o", [DEV])
        removed = [m.body[0] for m in c.signals if m.member == "InterfacesRemoved"]
        assert removed[-1] == DEV  # children first, the device last
        assert DEV not in await c.managed()
        await c.call("/org/bluez/hci0", ADAPTER1, "StartDiscovery")
        await c.wait_signal(lambda m: m.member == "InterfacesAdded" and m.body[0] == DEV)
        await c.call("/org/bluez/hci0", ADAPTER1, "StopDiscovery")
        await c.connect_resolved()
        assert CHAR in await c.managed()


async def test_left_connected_starts_connected_and_does_not_advertise(
    sim_factory: Factory,
) -> None:
    sim = sim_factory(devices=TWO, faults=[f"left-connected@{ADDRESS}"])
    sim.wait_log(lambda e: e["event"] == "services_resolved")
    async with client(sim.bus_address) as c:
        props = await c.props(DEV, DEVICE1)
        assert props["Connected"] is True
        assert props["ServicesResolved"] is True
        await c.call("/org/bluez/hci0", ADAPTER1, "StartDiscovery")
        await _adverts_seen(c, OTHER_DEV, 3)  # a connected BMS does not advertise
        assert not [m for m in c.signals if m.path == DEV and "RSSI" in m.body[1]]
        await c.call("/org/bluez/hci0", ADAPTER1, "StopDiscovery")
        await c.call(DEV, DEVICE1, "Connect")  # already connected: success at once
        await c.call(DEV, DEVICE1, "Disconnect")
        assert (await c.props(DEV, DEVICE1))["Connected"] is False


async def test_stop_discovery_rejected_once(sim: SimHandle) -> None:
    sim.set_fault("stop-discovery-rejected", count=1)
    async with client(sim.bus_address) as c:
        await c.call("/org/bluez/hci0", ADAPTER1, "StartDiscovery")
        assert await c.expect_error("/org/bluez/hci0", ADAPTER1, "StopDiscovery") == (
            "org.bluez.Error.InProgress",
            "Operation already in progress",
        )
        await c.call("/org/bluez/hci0", ADAPTER1, "StopDiscovery")


async def test_fault_aimed_at_one_mac_spares_the_other(sim_factory: Factory) -> None:
    sim = sim_factory(devices=TWO, faults=[f"in-progress@{OTHER}"])
    async with client(sim.bus_address) as c:
        await c.call(DEV, DEVICE1, "Connect")
        assert await c.expect_error(OTHER_DEV, DEVICE1, "Connect") == IN_PROGRESS
        assert sim.clear_faults(address=OTHER) == 1
        await c.call(OTHER_DEV, DEVICE1, "Connect")


async def test_not_advertising_count_hides_the_device_from_one_discovery(
    sim_factory: Factory,
) -> None:
    sim = sim_factory(devices=TWO, faults=[f"not-advertising:1@{ADDRESS}"])
    async with client(sim.bus_address) as c:
        await c.call("/org/bluez/hci0", ADAPTER1, "StartDiscovery")
        await _adverts_seen(c, OTHER_DEV, 2)
        assert DEV not in await c.managed()
        await c.call("/org/bluez/hci0", ADAPTER1, "StopDiscovery")
        await c.call("/org/bluez/hci0", ADAPTER1, "StartDiscovery")
        await c.wait_signal(lambda m: m.member == "InterfacesAdded" and m.body[0] == DEV)
        await c.call("/org/bluez/hci0", ADAPTER1, "StopDiscovery")
        await c.connect_resolved()


async def test_uncached_at_run_time_forgets_a_disconnected_device(sim: SimHandle) -> None:
    async with client(sim.bus_address) as c:
        sim.set_fault("uncached", count=1, address=ADDRESS)
        await c.wait_signal(lambda m: m.member == "InterfacesRemoved" and m.body[0] == DEV)
        assert not [p for p in await c.managed() if p.startswith(DEV)]
        await c.call("/org/bluez/hci0", ADAPTER1, "StartDiscovery")
        await c.wait_signal(lambda m: m.member == "InterfacesAdded" and m.body[0] == DEV)
        await c.call("/org/bluez/hci0", ADAPTER1, "StopDiscovery")
        await c.connect_resolved()
        assert CHAR in await c.managed()
        assert sim.faults_armed() == []


POWERED = ("org.freedesktop.DBus.Properties", "Set", "ssv")
HCI0 = "/org/bluez/hci0"
HCI1_DEV = "/org/bluez/hci1/dev_C8_47_80_11_22_33"


async def _power(c: Client, path: str, on: bool) -> None:
    iface, member, sig = POWERED
    await c.call(path, iface, member, sig, [ADAPTER1, "Powered", Variant("b", on)])


async def test_powered_off_drops_links_and_refuses_connect_and_discovery(sim: SimHandle) -> None:
    async with client(sim.bus_address) as c:
        await c.connect_resolved()
        await c.call(HCI0, ADAPTER1, "StartDiscovery")
        start = len(c.signals)
        await _power(c, HCI0, False)
        await c.wait_prop(DEV, "Connected", False, start=start)
        await c.wait_prop(HCI0, "Discovering", False, start=start)
        await c.wait_prop(HCI0, "Powered", False, start=start)
        # 5.66's LE connect path has no powered check: the kernel's socket connect fails.
        assert await c.expect_error(DEV, DEVICE1, "Connect") == (
            "org.bluez.Error.Failed",
            "Input/output error",
        )
        assert await c.expect_error(HCI0, ADAPTER1, "StartDiscovery") == (
            "org.bluez.Error.NotReady",
            "Resource Not Ready",
        )
        assert DEV in await c.managed()  # the device object stays
        await _power(c, HCI0, True)
        await c.connect_resolved()
    assert [(e["adapter"], e["powered"]) for e in sim.log() if e["event"] == "adapter_powered"] == [
        ("hci0", False),
        ("hci0", True),
    ]


async def test_adapter_wedged_times_out_every_connect_on_its_adapter_until_a_power_cycle(
    sim_factory: Factory,
) -> None:
    sim = sim_factory(devices=[f"{ADDRESS},adapter=hci0", f"{OTHER},adapter=hci1"])
    sim.set_fault("adapter-wedged", address=ADDRESS)
    async with client(sim.bus_address) as c:
        for _ in range(2):
            started = time.monotonic()
            assert await c.expect_error(DEV, DEVICE1, "Connect") == ABORT
            assert time.monotonic() - started >= 0.3  # connect_timeout_s with fast timing
        await c.connect_resolved(HCI1_DEV)  # the other adapter is not wedged
        assert sim.faults_armed() == ["adapter-wedged@" + ADDRESS]
        await _power(c, HCI0, False)
        assert sim.faults_armed() == ["adapter-wedged@" + ADDRESS]  # off alone is no reset
        await _power(c, HCI0, True)
        assert sim.faults_armed() == []
        await c.connect_resolved()


async def test_adapter_wedged_aimed_at_no_device_goes_with_the_first_reset(
    sim_factory: Factory,
) -> None:
    sim = sim_factory(devices=[f"{ADDRESS},adapter=hci0", f"{OTHER},adapter=hci1"])
    sim.set_fault("adapter-wedged")  # every adapter
    sim.set_fault("adapter-wedged", address=OTHER)
    async with client(sim.bus_address) as c:
        await _power(c, HCI0, False)
        await _power(c, HCI0, True)
        assert sim.faults_armed() == ["adapter-wedged@" + OTHER]
        await c.connect_resolved()
        assert await c.expect_error(HCI1_DEV, DEVICE1, "Connect") == ABORT
