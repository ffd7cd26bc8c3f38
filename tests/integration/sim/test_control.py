"""The control interface `org.bluezjk.Simulator1`: state, faults and log at run time."""

from __future__ import annotations

import pytest

from tests.fixtures.bluez import SimHandle
from tests.integration.sim.client import ADDRESS, CHAR, CHAR1, DEV, DEVICE1, client

pytestmark = pytest.mark.integration


async def test_set_state_reaches_the_cell_info_frames(sim: SimHandle) -> None:
    sim.set_state(ADDRESS, current=-12.5, battery_soc=42, voltages=[3.2] * 16)
    async with client(sim.bus_address) as c:
        await c.connect_resolved()
        decoder = await c.read_frames(lambda d: d.got["cell_info"])
        cells = decoder.status["cell_info"]
        assert cells["current"] == -12.5
        assert cells["battery_soc"] == 42
        assert cells["voltages"] == [3.2] * 16
        assert cells["total_voltage"] == pytest.approx(51.2)


async def test_log_and_device_props_describe_a_session(sim: SimHandle) -> None:
    async with client(sim.bus_address) as c:
        await c.connect_resolved()
        await c.call(CHAR, CHAR1, "StartNotify")
        props = sim.device_props(ADDRESS)
        assert props["Connected"] is True
        assert props["ServicesResolved"] is True
        assert props["Notifying"] is True
        assert props["NotifyAcquired"] is False
        await c.call(CHAR, CHAR1, "StopNotify")
        await c.call(DEV, DEVICE1, "Disconnect")
    (link,) = sim.connections("hci0")
    assert link[0] == ADDRESS
    assert link[2] is not None
    assert link[1] < link[2]
    events = [e["event"] for e in sim.log() if e.get("address") == ADDRESS]
    assert events[-3:] == ["notify_stop", "disconnect_call", "disconnected"]
    assert [e["event"] for e in sim.log() if e["event"].startswith("notify")] == [
        "notify_start",
        "notify_stop",
    ]
    assert all(isinstance(e["t"], float) for e in sim.log())


async def test_drop_link_and_restart(sim: SimHandle) -> None:
    async with client(sim.bus_address) as c:
        await c.connect_resolved()
        sim.drop_link(ADDRESS)
        reason = await c.wait_signal(lambda m: m.member == "Disconnected")
        assert reason.body[0] == "org.bluez.Reason.Remote"
    address = sim.bus_address
    sim.restart()
    assert sim.bus_address == address
    assert sim.device_props(ADDRESS)["Connected"] is False
    assert next(e["event"] for e in sim.log()) == "adapter_added"  # a fresh simulator


def test_bad_control_arguments_are_refused(sim: SimHandle) -> None:
    with pytest.raises(RuntimeError, match=r"org\.bluezjk\.Error\.InvalidArguments"):
        sim.set_fault("no-such-fault")
    with pytest.raises(RuntimeError, match=r"org\.bluezjk\.Error\.InvalidArguments"):
        sim.device_props("00:00:00:00:00:01")
    sim.set_fault("junk", count=3, address=ADDRESS)
    assert sim.faults_armed() == [f"junk:3@{ADDRESS}"]
    assert sim.clear_faults() == 1
