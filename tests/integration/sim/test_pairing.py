"""Pairing against the simulator as a plain dbus-fast client with its own Agent1 sees it:
AgentManager1, Device1.Pair/CancelPairing with BlueZ 5.66's error names and texts, the
device option `pairing=` and the bond's life (docs/simulator.md "Pairing")."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable

import pytest
from bleak import BleakClient
from dbus_fast import Message, Variant

from bluez_jk.protocol import command
from tests.fixtures.bluez import SimHandle
from tests.integration.sim.agent import AGENT_MANAGER1, AGENT_PATH, FakeAgent
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
PASSKEY = 482913
SECRET = f"{PASSKEY:06d}"
PASSKEY_DEVICE = f"{ADDRESS},pairing=passkey:{SECRET}"
JUSTWORKS_DEVICE = f"{ADDRESS},pairing=justworks"
MANAGER = "/org/bluez"
HCI0 = "/org/bluez/hci0"
PROPS = "org.freedesktop.DBus.Properties"
FFE1 = "0000ffe1-0000-1000-8000-00805f9b34fb"
NOT_EXIST = ("org.bluez.Error.DoesNotExist", "Does Not Exist")
AUTH_FAILED = ("org.bluez.Error.AuthenticationFailed", "Authentication Failed")


@contextlib.asynccontextmanager
async def sim_with(
    sim_factory: Factory, device: str = JUSTWORKS_DEVICE
) -> AsyncIterator[tuple[SimHandle, Client]]:
    """A simulator with one device of the given `pairing=` mode, and a client of it. It logs
    at DEBUG, so the tests that grep its log for the passkey see everything it writes."""
    sim = sim_factory(devices=[device], log_level="DEBUG")
    async with client(sim.bus_address) as c:
        yield sim, c


def _prop_set(path: str, name: str, value: object) -> Callable[[Message], bool]:
    def match(m: Message) -> bool:
        return (
            m.member == "PropertiesChanged"
            and m.path == path
            and name in m.body[1]
            and m.body[1][name].value == value
        )

    return match


async def _subscribe_refused(c: Client) -> None:
    """StartNotify on a link the BMS does not trust: no answer while BlueZ tries to pair."""
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(c.call(CHAR, CHAR1, "StartNotify"), 1.0)


async def _remove_bond(c: Client, sim: SimHandle) -> None:
    """CancelPairing with no pairing under way: BlueZ deletes the bond and says DoesNotExist."""
    start = len(c.signals)
    assert await c.expect_error(DEV, DEVICE1, "CancelPairing") == NOT_EXIST
    await c.wait_prop(DEV, "Paired", False, start=start)
    assert sim.device_props(ADDRESS)["Bonded"] is False


async def _manager_error(c: Client, member: str, sig: str, body: list[object]) -> tuple[str, str]:
    return await c.expect_error(MANAGER, AGENT_MANAGER1, member, sig, body)


# ---- AgentManager1 ----------------------------------------------------------------------------


async def test_agent_manager_errors(sim_factory: Factory) -> None:
    async with sim_with(sim_factory) as (sim, c):
        # Nothing registered yet: unregister and default have nothing to act on.
        assert await _manager_error(c, "UnregisterAgent", "o", [AGENT_PATH]) == NOT_EXIST
        assert await _manager_error(c, "RequestDefaultAgent", "o", [AGENT_PATH]) == NOT_EXIST
        assert await _manager_error(c, "RegisterAgent", "os", [AGENT_PATH, "Telepathic"]) == (
            "org.bluez.Error.InvalidArguments",
            "Invalid arguments in method call",
        )
        # "" means KeyboardDisplay.
        await c.call(MANAGER, AGENT_MANAGER1, "RegisterAgent", "os", [AGENT_PATH, ""])
        assert await _manager_error(c, "RegisterAgent", "os", ["/other", "KeyboardOnly"]) == (
            "org.bluez.Error.AlreadyExists",
            "Already Exists",
        )
        # Another path than the registered one does not exist for this sender.
        assert await _manager_error(c, "UnregisterAgent", "o", ["/other"]) == NOT_EXIST
        assert await _manager_error(c, "RequestDefaultAgent", "o", ["/other"]) == NOT_EXIST
        await c.call(MANAGER, AGENT_MANAGER1, "RequestDefaultAgent", "o", [AGENT_PATH])
        await c.call(MANAGER, AGENT_MANAGER1, "UnregisterAgent", "o", [AGENT_PATH])
        assert await _manager_error(c, "UnregisterAgent", "o", [AGENT_PATH]) == NOT_EXIST
        registered = [e for e in sim.log() if e["event"] == "agent_registered"]
        assert [e["capability"] for e in registered] == ["KeyboardDisplay"]
        # Where BlueZ has it, and listed the way BlueZ lists it.
        assert "org.bluez.AgentManager1" in (await c.managed())[MANAGER]


async def test_default_agent_serves_other_callers_and_leaves_with_its_owner(
    sim_factory: Factory,
) -> None:
    async with sim_with(sim_factory, PASSKEY_DEVICE) as (sim, c):
        async with client(sim.bus_address) as owner:
            agent = FakeAgent(owner, passkey=PASSKEY)
            await agent.register()  # the first agent becomes the default by itself
            await c.call(DEV, DEVICE1, "Pair")  # c has no agent: the default one is asked
            assert agent.calls == [("RequestPasskey", [DEV])]
        await sim.await_log(
            lambda e: e["event"] == "agent_unregistered" and e["reason"] == "bus_left"
        )
        # No agent left: nobody can type the passkey (NoInputNoOutput), the pairing fails.
        await c.call(DEV, PROPS, "Set", "ssv", [DEVICE1, "Trusted", Variant("b", True)])
        await _remove_bond(c, sim)
        assert await c.expect_error(DEV, DEVICE1, "Pair") == AUTH_FAILED


async def test_own_agent_wins_over_the_default(sim_factory: Factory) -> None:
    async with (
        sim_with(sim_factory, PASSKEY_DEVICE) as (sim, c),
        client(sim.bus_address) as other,
    ):
        default = FakeAgent(other, passkey=0)
        await default.register(default=True)
        mine = FakeAgent(c, passkey=PASSKEY)
        await mine.register()
        await c.call(DEV, DEVICE1, "Pair")
        assert mine.members() == ["RequestPasskey"]
        assert default.calls == []


async def test_agents_get_release_when_bluetoothd_stops(sim_factory: Factory) -> None:
    async with sim_with(sim_factory) as (sim, c):
        agent = FakeAgent(c)
        await agent.register()
        await c.call(MANAGER, AGENT_MANAGER1, "UnregisterAgent", "o", [AGENT_PATH])
        await agent.register()
        sim.restart()  # org.bluez leaves the bus: registered agents are released
        await agent.wait_call("Release")
        assert agent.members() == ["Release"]  # none for UnregisterAgent


# ---- Pair -------------------------------------------------------------------------------------


async def test_passkey_right_pairs_signals_and_answers_after_services(
    sim_factory: Factory,
) -> None:
    async with sim_with(sim_factory, PASSKEY_DEVICE) as (sim, c):
        agent = FakeAgent(c, passkey=PASSKEY)
        await agent.register()
        # Not paired: the BMS refuses the subscription.
        await c.connect_resolved()
        await _subscribe_refused(c)
        refused = [e for e in sim.log() if e["event"] == "cccd_refused"]
        assert refused[0]["why"] == "not_paired"
        await c.call(DEV, DEVICE1, "Disconnect")
        await c.wait_prop(DEV, "Connected", False)
        start = len(c.signals)
        await c.call(DEV, DEVICE1, "Pair")  # connects first, since the link is down
        window = c.signals[start:]
        assert agent.calls == [("RequestPasskey", [DEV])]
        # Connected, Paired, Bonded and ServicesResolved were all signalled before the reply.
        for name in ("Connected", "Paired", "Bonded", "ServicesResolved"):
            assert any(_prop_set(DEV, name, True)(m) for m in window), name
        props = await c.props(DEV, DEVICE1)
        assert (props["Paired"], props["Bonded"], props["Connected"]) == (True, True, True)
        assert await c.expect_error(DEV, DEVICE1, "Pair") == (
            "org.bluez.Error.AlreadyExists",
            "Already Exists",
        )
        decoder = await c.read_frames(lambda d: d.got["cell_info"])
        assert decoder.protocol == "JK02_32S"
        # The passkey is a secret: not in the event log, the device info or the sim's log.
        assert SECRET not in json.dumps(sim.log())
        assert SECRET not in json.dumps(sim.device_props(ADDRESS))
        assert SECRET not in sim.log_text()


async def test_wrong_passkey_fails_and_an_untrusted_device_turns_temporary(
    sim_factory: Factory,
) -> None:
    async with sim_with(sim_factory, PASSKEY_DEVICE) as (sim, c):
        agent = FakeAgent(c, passkey=(PASSKEY + 1) % 1_000_000)
        await agent.register()
        assert await c.expect_error(DEV, DEVICE1, "Pair") == AUTH_FAILED
        # Temporary again; with fast timing removed at once (TemporaryTimeout 0).
        await c.wait_signal(lambda m: m.member == "InterfacesRemoved" and m.body[0] == DEV)
        assert DEV not in await c.managed()
        assert sim.device_props(ADDRESS)["Paired"] is False
        assert SECRET not in sim.log_text() + json.dumps(sim.log())


async def test_failed_pairing_of_a_trusted_device_keeps_it(sim_factory: Factory) -> None:
    async with sim_with(sim_factory, PASSKEY_DEVICE) as (sim, c):
        agent = FakeAgent(c, error="org.bluez.Error.Rejected")
        await agent.register()
        await c.call(DEV, PROPS, "Set", "ssv", [DEVICE1, "Trusted", Variant("b", True)])
        assert await c.expect_error(DEV, DEVICE1, "Pair") == AUTH_FAILED
        await sim.await_log(lambda e: e["event"] == "disconnected")  # Pair's own link goes
        assert DEV in await c.managed()
        assert not [e for e in sim.log() if e["event"] == "temporary_removed"]


async def test_passkey_needs_an_agent_that_can_type(sim_factory: Factory) -> None:
    async with sim_with(sim_factory, PASSKEY_DEVICE) as (_sim, c):
        agent = FakeAgent(c, capability="NoInputNoOutput", passkey=PASSKEY)
        await agent.register()
        assert await c.expect_error(DEV, DEVICE1, "Pair") == AUTH_FAILED
        assert agent.calls == []


async def test_justworks_pairs_without_agent_and_opens_the_subscription(
    sim_factory: Factory,
) -> None:
    async with sim_with(sim_factory) as (sim, c):
        await c.connect_resolved()
        await _subscribe_refused(c)
        await c.call(DEV, DEVICE1, "Pair")  # no agent at all: NoInputNoOutput, Just Works
        assert (await c.props(DEV, DEVICE1))["Paired"] is True
        decoder = await c.read_frames(lambda d: d.got["cell_info"])
        assert decoder.protocol == "JK02_32S"
        assert [e["capability"] for e in sim.log() if e["event"] == "pair_call"] == [None]


async def test_rejecting_bms(sim_factory: Factory) -> None:
    async with sim_with(sim_factory, f"{ADDRESS},pairing=rejects") as (_sim, c):
        assert await c.expect_error(DEV, DEVICE1, "Pair") == (
            "org.bluez.Error.AuthenticationRejected",
            "Authentication Rejected",
        )


async def test_open_bms_subscribes_unpaired(sim_factory: Factory) -> None:
    async with sim_with(sim_factory, f"{ADDRESS},pairing=none") as (_sim, c):
        await c.connect_resolved()
        await asyncio.wait_for(c.call(CHAR, CHAR1, "StartNotify"), 5)
        assert (await c.props(DEV, DEVICE1))["Paired"] is False


async def test_in_progress_and_cancel_pairing(sim_factory: Factory) -> None:
    async with sim_with(sim_factory, PASSKEY_DEVICE) as (_sim, c):
        agent = FakeAgent(c, hold=True)
        await agent.register()
        pair = asyncio.ensure_future(c.raw(DEV, DEVICE1, "Pair"))
        await agent.wait_call("RequestPasskey")
        assert await c.expect_error(DEV, DEVICE1, "Pair") == (
            "org.bluez.Error.InProgress",
            "In Progress",
        )
        await c.call(DEV, DEVICE1, "CancelPairing")
        reply = await pair
        assert (reply.error_name, reply.body[0]) == (
            "org.bluez.Error.AuthenticationCanceled",
            "Authentication Canceled",
        )
        await agent.wait_call("Cancel")  # the pending request is withdrawn from the agent


async def test_requester_leaving_cancels_the_pairing(sim_factory: Factory) -> None:
    """create_bond_req_exit: the caller of Pair leaves the bus, the pairing and its link end."""
    async with sim_with(sim_factory, PASSKEY_DEVICE) as (sim, c):
        agent = FakeAgent(c, hold=True)
        await agent.register()
        async with client(sim.bus_address) as requester:
            pending = asyncio.ensure_future(requester.raw(DEV, DEVICE1, "Pair"))
            await agent.wait_call("RequestPasskey")
        pending.cancel()
        await agent.wait_call("Cancel")
        await c.wait_prop(DEV, "Connected", False)
        failed = await sim.await_log(lambda e: e["event"] == "pair_failed")
        assert failed["error"] == "canceled"


async def test_remove_device_during_pairing_cancels_it_once(sim_factory: Factory) -> None:
    async with sim_with(sim_factory, PASSKEY_DEVICE) as (sim, c):
        agent = FakeAgent(c, hold=True)
        await agent.register()
        pair = asyncio.ensure_future(c.raw(DEV, DEVICE1, "Pair"))
        await agent.wait_call("RequestPasskey")
        await c.call(HCI0, ADAPTER1, "RemoveDevice", "o", [DEV])
        reply = await pair
        assert reply.error_name == "org.bluez.Error.AuthenticationCanceled"
        await agent.wait_call("Cancel")
        await asyncio.sleep(0.3)  # room for a wrong second removal to show up in the log
        removed = [e for e in sim.log() if e["event"] in ("device_removed", "temporary_removed")]
        assert [e["event"] for e in removed] == ["device_removed"]


async def test_agent_that_never_answers_times_out(sim_factory: Factory) -> None:
    async with sim_with(sim_factory, PASSKEY_DEVICE) as (_sim, c):
        agent = FakeAgent(c, hold=True)
        await agent.register()
        assert await c.expect_error(DEV, DEVICE1, "Pair") == (
            "org.bluez.Error.AuthenticationTimeout",
            "Authentication Timeout",
        )
        await agent.wait_call("Cancel")


# ---- the bond ---------------------------------------------------------------------------------


async def test_bond_survives_disconnects(sim_factory: Factory) -> None:
    async with sim_with(sim_factory) as (sim, c):
        await c.call(DEV, DEVICE1, "Pair")
        await c.call(DEV, DEVICE1, "Disconnect")
        await c.wait_prop(DEV, "Connected", False)
        await c.connect_resolved()
        assert (await c.props(DEV, DEVICE1))["Paired"] is True
        decoder = await c.read_frames(lambda d: d.got["cell_info"])
        assert decoder.protocol == "JK02_32S"
        assert len([e for e in sim.log() if e["event"] == "pair_call"]) == 1


async def test_cancel_pairing_without_pairing_deletes_the_bond(sim_factory: Factory) -> None:
    async with sim_with(sim_factory) as (sim, c):
        await c.call(DEV, DEVICE1, "Pair")
        await _remove_bond(c, sim)
        await _subscribe_refused(c)


async def test_remove_device_deletes_the_bond(sim_factory: Factory) -> None:
    async with sim_with(sim_factory) as (sim, c):
        await c.call(DEV, DEVICE1, "Pair")
        await c.call(HCI0, ADAPTER1, "RemoveDevice", "o", [DEV])
        info = sim.device_props(ADDRESS)
        assert (info["exported"], info["Paired"], info["Bonded"]) == (False, False, False)
        await c.call(HCI0, ADAPTER1, "StartDiscovery")
        await c.wait_signal(lambda m: m.member == "InterfacesAdded" and m.body[0] == DEV)
        await c.call(HCI0, ADAPTER1, "StopDiscovery")
        assert (await c.props(DEV, DEVICE1))["Paired"] is False


async def test_bms_forgetting_the_bond(sim_factory: Factory) -> None:
    async with sim_with(sim_factory) as (sim, c):
        await c.call(DEV, DEVICE1, "Pair")
        await c.call(DEV, DEVICE1, "Disconnect")
        await c.wait_prop(DEV, "Connected", False)
        sim.forget_bond(ADDRESS)
        assert sim.device_props(ADDRESS)["Paired"] is True  # BlueZ does not know yet
        await c.connect_resolved()
        start = len(c.signals)
        await _subscribe_refused(c)
        await c.wait_prop(DEV, "Paired", False, start=start)
        await c.wait_prop(DEV, "Bonded", False, start=start)
        await c.call(DEV, DEVICE1, "Pair")  # one re-pair restores it
        decoder = await c.read_frames(lambda d: d.got["cell_info"])
        assert decoder.protocol == "JK02_32S"
        bond_events = [e["event"] for e in sim.log() if e["event"].startswith("bond_")]
        assert bond_events == ["bond_forgotten", "bond_lost"]


# ---- Bleak ------------------------------------------------------------------------------------


async def test_bleak_pair(sim_factory: Factory, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unmodified Bleak 3.1 `pair()` (Trusted=true, then Pair) works against a BMS that
    requires pairing, and so does the subscription it opens."""
    sim = sim_factory(devices=[JUSTWORKS_DEVICE])
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", sim.bus_address)
    got = asyncio.Event()
    async with BleakClient(ADDRESS, timeout=15) as bleak:
        await bleak.pair()
        await bleak.start_notify(FFE1, lambda _c, _d: got.set())
        await bleak.write_gatt_char(FFE1, command(0x97), response=False)
        await asyncio.wait_for(got.wait(), 10)
        await bleak.stop_notify(FFE1)
    info = sim.device_props(ADDRESS)
    assert (info["Paired"], info["Bonded"], info["Trusted"]) == (True, True, True)
