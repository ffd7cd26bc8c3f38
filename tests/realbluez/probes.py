"""D-Bus probes: single BlueZ calls whose answers the client's error table and recovery policy
rely on, made by a plain dbus-fast client against either rig. Each probe records, step by
step, the method, the D-Bus error name and message (or "ok"), and property changes in the
order they arrived; the differential test compares the two rigs step by step."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from typing import Any

from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from bluez_jk.reader import Reader
from tests.realbluez.scenarios import (
    Bms,
    Outcome,
    Rig,
    fault_timeout,
    labelled,
    read_timeout,
    request,
    system_bus,
)

ADAPTER = "org.bluez.Adapter1"
DEVICE = "org.bluez.Device1"
CHAR = "org.bluez.GattCharacteristic1"
PROPS = "org.freedesktop.DBus.Properties"
FFE1 = "0000ffe1-0000-1000-8000-00805f9b34fb"


def dev_path(bms: Bms) -> str:
    return f"/org/bluez/{bms.adapter}/dev_{bms.address.replace(':', '_')}"


class Probe:
    """One client connection that records what it sees."""

    def __init__(self, bus: MessageBus) -> None:
        self.bus = bus
        self.steps: list[str] = []  # compared between the simulator and real BlueZ
        self.info: list[str] = []  # shown in the summary only: what may differ run to run
        self.changes: list[str] = []
        self._handler = self._on_message

    def _on_message(self, msg: Message) -> None:
        # Replies too, in the order they came off the wire: awaiting a call returns after
        # whatever else arrived in the same read, so the order must be taken here.
        if msg.message_type in (MessageType.METHOD_RETURN, MessageType.ERROR):
            self.changes.append(f"reply {msg.reply_serial}")
        if msg.message_type == MessageType.SIGNAL and msg.member == "PropertiesChanged":
            iface, changed = msg.body[0], msg.body[1]
            for name in ("Connected", "ServicesResolved", "NotifyAcquired", "Notifying"):
                if iface in (DEVICE, CHAR) and name in changed:
                    self.changes.append(f"{name}={changed[name].value}")

    async def __aenter__(self) -> Probe:
        self.bus.add_message_handler(self._handler)
        await self.bus.call(
            Message(
                destination="org.freedesktop.DBus",
                path="/org/freedesktop/DBus",
                interface="org.freedesktop.DBus",
                member="AddMatch",
                signature="s",
                body=["type='signal',sender='org.bluez',member='PropertiesChanged'"],
            )
        )
        return self

    async def __aexit__(self, *_: object) -> None:
        self.bus.remove_message_handler(self._handler)

    async def call(
        self,
        path: str,
        iface: str,
        member: str,
        sig: str = "",
        body: list[Any] | None = None,
        *,
        timeout_s: float = 60.0,
        record: bool = True,
    ) -> tuple[str, Message | None]:
        msg = Message(
            destination="org.bluez",
            path=path,
            interface=iface,
            member=member,
            signature=sig,
            body=body or [],
        )
        try:
            reply = await asyncio.wait_for(self.bus.call(msg), timeout_s)
        except TimeoutError:
            result = f"{member}: no reply within {timeout_s:.0f} s"
            reply = None
        else:
            assert reply is not None
            if reply.message_type == MessageType.ERROR:
                text = reply.body[0] if reply.body else ""
                result = f"{member}: {reply.error_name} {text!r}"
            else:
                result = f"{member}: ok"
        if record:
            self.steps.append(result)
        return result, reply

    async def wait_change(self, text: str, within_s: float) -> bool:
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            if text in self.changes:
                return True
            await asyncio.sleep(0.05)
        return False

    async def connected_resolved(self, bms: Bms, within_s: float) -> None:
        self.changes.clear()
        await self.call(dev_path(bms), DEVICE, "Connect", timeout_s=within_s)
        await self.wait_change("ServicesResolved=True", within_s)

    async def disconnect(self, bms: Bms) -> None:
        await self.call(dev_path(bms), DEVICE, "Disconnect", timeout_s=30, record=False)

    async def ffe1_notify_path(self, bms: Bms) -> str:
        reply = await self.bus.call(
            Message(
                destination="org.bluez",
                path="/",
                interface="org.freedesktop.DBus.ObjectManager",
                member="GetManagedObjects",
            )
        )
        assert reply is not None
        for path, ifaces in reply.body[0].items():
            char = ifaces.get(CHAR)
            if (
                path.startswith(dev_path(bms) + "/")
                and char is not None
                and char["UUID"].value == FFE1
                and "notify" in char["Flags"].value
            ):
                return str(path)
        raise LookupError("no FFE1 with notify")


def _limit(rig: Rig) -> float:
    # Beyond the kernel's 40 s L2CAP connect timeout (the rig; the simulator's real timing).
    return 50.0


async def connect_not_advertising(rig: Rig, probe: Probe, bms: Bms) -> None:
    await rig.fault("not-advertising", bms.address, True)
    try:
        result, _ = await probe.call(dev_path(bms), DEVICE, "Connect", timeout_s=_limit(rig))
        if "no reply" in result:
            # Still pending in bluetoothd: only a Disconnect ends it (fact 4).
            await probe.call(dev_path(bms), DEVICE, "Disconnect", timeout_s=30)
    finally:
        await rig.fault("not-advertising", bms.address, False)


async def connect_twice(rig: Rig, probe: Probe, bms: Bms) -> None:
    """A second Connect while the first is still pending (the BMS does not advertise)."""
    await rig.fault("not-advertising", bms.address, True)
    try:
        first = asyncio.ensure_future(
            probe.call(dev_path(bms), DEVICE, "Connect", timeout_s=_limit(rig), record=False)
        )
        await asyncio.sleep(1.0)
        await probe.call(dev_path(bms), DEVICE, "Connect", timeout_s=_limit(rig))
        await probe.call(dev_path(bms), DEVICE, "Disconnect", timeout_s=30)
        result, _ = await first
        probe.steps.append(f"first {result}")
    finally:
        await rig.fault("not-advertising", bms.address, False)


async def disconnect_order(rig: Rig, probe: Probe, bms: Bms) -> None:
    """Disconnect is answered and Connected turns false. Which comes first on the wire is
    shown, not compared: 5.66 answers before it queues Connected when it drops the link
    itself, and after it when the link was already going (docs/bluez.md 3.3); the rig
    showed both."""
    await rig.appear(bms.address)  # advertising again after the probes before
    await probe.connected_resolved(bms, _limit(rig))
    probe.changes.clear()
    asked = time.monotonic()
    _, reply = await probe.call(dev_path(bms), DEVICE, "Disconnect", timeout_s=30)
    probe.info.append(f"answered after {time.monotonic() - asked:.1f} s")
    gone = await probe.wait_change("Connected=False", 10)
    probe.steps.append("Connected=false" if gone else "Connected stays true for 10 s")
    seen = probe.changes
    marker = f"reply {reply.reply_serial}" if reply is not None else ""
    gone_before = (
        marker in seen
        and "Connected=False" in seen
        and seen.index("Connected=False") < seen.index(marker)
    )
    probe.info.append("Connected=false " + ("before" if gone_before else "after") + " the reply")


async def acquire_twice(rig: Rig, probe: Probe, bms: Bms) -> None:
    await probe.connected_resolved(bms, _limit(rig))
    path = await probe.ffe1_notify_path(bms)
    _, reply = await probe.call(path, CHAR, "AcquireNotify", "a{sv}", [{}])
    fds = list(reply.unix_fds) if reply is not None else []
    try:
        await probe.call(path, CHAR, "AcquireNotify", "a{sv}", [{}])
        await probe.call(path, CHAR, "StartNotify")
    finally:
        for fd in fds:
            os.close(fd)
    await probe.wait_change("NotifyAcquired=False", 5)
    probe.steps.append(
        "fd closed -> NotifyAcquired=false"
        if "NotifyAcquired=False" in probe.changes
        else "fd closed, NotifyAcquired unchanged"
    )
    await probe.call(path, CHAR, "StopNotify")
    await probe.disconnect(bms)


async def write_while_disconnected(rig: Rig, probe: Probe, bms: Bms) -> None:
    await probe.connected_resolved(bms, _limit(rig))
    path = await probe.ffe1_notify_path(bms)
    await probe.disconnect(bms)
    await probe.wait_change("Connected=False", 10)
    await probe.call(path, CHAR, "WriteValue", "aya{sv}", [b"\x00", {}])
    await probe.call(path, CHAR, "StartNotify")
    await probe.call(path, CHAR, "ReadValue", "a{sv}", [{}])


async def unknown_device(rig: Rig, probe: Probe, bms: Bms) -> None:
    path = f"/org/bluez/{bms.adapter}/dev_00_11_22_33_44_55"
    await probe.call(path, DEVICE, "Connect")
    await probe.call(f"/org/bluez/{bms.adapter}", "org.bluez.Adapter1", "RemoveDevice", "o", [path])


async def set_powered(probe: Probe, bms: Bms, on: bool) -> None:
    await probe.call(
        f"/org/bluez/{bms.adapter}",
        PROPS,
        "Set",
        "ssv",
        [ADAPTER, "Powered", Variant("b", on)],
        timeout_s=30,
    )


async def read_step(probe: Probe, bms: Bms, what: str, timeout_s: float) -> None:
    """One read with the project's reader; the step says its error type or ok."""
    async with Reader() as reader:
        reading = await reader.read(request(bms, timeout_s=timeout_s))
    error = reading["error"]
    probe.steps.append(f"{what}: {error['type'] if error else 'ok'}")


async def power_off_and_on(rig: Rig, probe: Probe, bms: Bms) -> None:
    """Adapter1.Powered false with a link up: the link, Connect and StartDiscovery while off;
    then a read after Powered true (the gateway's adapter_recovery relies on all four)."""
    await probe.connected_resolved(bms, _limit(rig))
    probe.changes.clear()
    await set_powered(probe, bms, False)
    await probe.wait_change("Connected=False", 10)
    probe.steps.append("link dropped" if "Connected=False" in probe.changes else "link kept")
    await probe.call(dev_path(bms), DEVICE, "Connect", timeout_s=_limit(rig))
    await probe.call(f"/org/bluez/{bms.adapter}", ADAPTER, "StartDiscovery")
    await set_powered(probe, bms, True)
    await read_step(probe, bms, "read after Powered true", read_timeout(rig))
    # Trusted: 5.66 would otherwise drop the object as temporary later, and the removal of a
    # temporary object is where it died on the rig (docs/bluez.md fact 21).
    await probe.call(
        dev_path(bms), PROPS, "Set", "ssv", [DEVICE, "Trusted", Variant("b", True)], record=False
    )


async def wedged_controller(rig: Rig, probe: Probe, bms: Bms) -> None:
    """A controller that never completes a connection until it is reset: reads fail, the
    reader's power cycle (what the gateway's adapter_recovery does) cures it.

    On real 5.66 bluetoothd died in the wedge in both runs (docs/bluez.md fact 21), which
    would take every scenario running beside the probes with it: there it runs only with
    REALBLUEZ_WEDGE=1."""
    if rig.kind == "real" and not os.environ.get("REALBLUEZ_WEDGE"):
        probe.steps.append("not run on real 5.66 without REALBLUEZ_WEDGE=1 (fact 21)")
        return
    await read_step(probe, bms, "read before the wedge", read_timeout(rig))
    await rig.fault("adapter-wedged", bms.address, True)
    try:
        await read_step(probe, bms, "read while wedged", fault_timeout(rig))
        async with Reader() as reader:
            await reader.power_cycle(bms.adapter)
        probe.steps.append("power cycle: ok")
        await read_step(probe, bms, "read after the power cycle", read_timeout(rig))
    finally:
        await rig.fault("adapter-wedged", bms.address, False)


PROBES = {
    "Connect to a known BMS that stopped advertising": connect_not_advertising,
    "Connect while a Connect is pending, then Disconnect": connect_twice,
    "Disconnect: reply and Connected=false": disconnect_order,
    "AcquireNotify twice, StartNotify while acquired, StopNotify after": acquire_twice,
    "GATT calls on a disconnected device": write_while_disconnected,
    "Connect / RemoveDevice of an unknown device": unknown_device,
    "Adapter1.Powered off and on": power_off_and_on,
    "a wedged controller, then a power cycle": wedged_controller,
}


def probe_scenario(name: str) -> Any:
    label = f"D-Bus probe: {name}"

    async def run(rig: Rig) -> Outcome:
        bms = rig.bms["jk10"]  # its own adapter: the probes run beside the gateway
        # A read first: BlueZ then knows the device and its GATT (as on a user's machine).
        async with Reader() as reader:
            await reader.read(request(bms, timeout_s=read_timeout(rig)))
        bus = await system_bus(rig)
        try:
            async with Probe(bus) as probe:
                t0 = time.monotonic()
                try:
                    await PROBES[name](rig, probe, bms)
                finally:
                    with contextlib.suppress(Exception):
                        await probe.disconnect(bms)
                took = time.monotonic() - t0
        finally:
            bus.disconnect()
        summary = "; ".join([*probe.steps, *probe.info])
        return Outcome(label, True, summary, took, {"steps": probe.steps})

    return labelled(label, run)


def all_probes() -> list[Any]:
    return [probe_scenario(name) for name in PROBES]
