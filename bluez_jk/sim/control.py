"""`org.bluezjk.Simulator1` at `/org/bluezjk/simulator`: faults, device state and the event log
at run time, on the same bus connection as `org.bluez`."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from dbus_fast import DBusError, Variant

from bluez_jk.sim.dispatch import Call, DBusObject, Interface, Method, Reply
from bluez_jk.sim.faults import make_fault, normalize_mac

if TYPE_CHECKING:
    from bluez_jk.sim.device import Device
    from bluez_jk.sim.server import Simulator

CONTROL_IFACE = "org.bluezjk.Simulator1"
CONTROL_PATH = "/org/bluezjk/simulator"
_ERROR = "org.bluezjk.Error.InvalidArguments"


def _invalid(err: Exception) -> DBusError:
    return DBusError(_ERROR, str(err))


class Control:
    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    def dbus_object(self) -> DBusObject:
        m = {
            "SetFault": Method("sus", "", self._set_fault, ("name", "count", "address")),
            "ClearFaults": Method("ss", "u", self._clear_faults, ("name", "address"), ("removed",)),
            "ListFaults": Method("", "as", self._list_faults, (), ("faults",)),
            "SetState": Method("sa{sv}", "", self._set_state, ("address", "values")),
            "GetDevice": Method("s", "s", self._get_device, ("address",), ("json",)),
            "GetLog": Method("", "s", self._get_log, (), ("json",)),
            "ClearLog": Method("", "", self._clear_log),
            "SetAdapterPresent": Method("sb", "", self._set_adapter, ("adapter", "present")),
            "DropLink": Method("s", "", self._drop_link, ("address",)),
            "AddDevice": Method("s", "", self._add_device, ("spec",)),
            "GetStats": Method("", "s", self._get_stats, (), ("json",)),
            "ForgetBond": Method("s", "", self._forget_bond, ("address",)),
        }
        iface = Interface(
            CONTROL_IFACE, {"Timing": "s"}, lambda: {"Timing": self.sim.timing.name}, m
        )
        return DBusObject(CONTROL_PATH, {CONTROL_IFACE: iface}, managed=False)

    async def _set_fault(self, call: Call) -> None:
        name, count, address = call.body
        try:
            fault = make_fault(name, count or None, address or None)
        except ValueError as err:
            raise _invalid(err) from err
        await self.sim.set_fault(fault)

    async def _clear_faults(self, call: Call) -> Reply:
        name, address = call.body
        try:
            mac = normalize_mac(address) if address else None
        except ValueError as err:
            raise _invalid(err) from err
        removed = self.sim.faults.clear(name or None, mac)
        self.sim.events.record("faults_cleared", mac, name=name or None, removed=removed)
        return Reply("u", [removed])

    async def _list_faults(self, _call: Call) -> Reply:
        return Reply("as", [self.sim.faults.describe()])

    async def _set_state(self, call: Call) -> None:
        address, values = call.body
        device = self._device(address)
        plain: dict[str, Any] = {
            k: v.value if isinstance(v, Variant) else v for k, v in values.items()
        }
        device.bms.state.overrides.update(plain)
        if plain.get("clear"):
            device.bms.state.overrides.clear()
        self.sim.events.record("state_set", device.address, device.adapter_name, keys=sorted(plain))

    async def _get_device(self, call: Call) -> Reply:
        device = self._device(call.body[0])
        chars = device.gatt.characteristics if device.gatt is not None else []
        notify = [c for c in chars if "notify" in c.spec.flags]
        info = {
            "address": device.address,
            "adapter": device.adapter_name,
            "path": device.path,
            "exported": device.exported,
            "Connected": device.connected,
            "Trusted": device.trusted,
            "Paired": device.paired,
            "Bonded": device.bonded,
            "bms_bond": device.bms_bond,
            "pairing": device.spec.pairing,  # the mode only: the passkey stays secret
            "ServicesResolved": device.services_resolved,
            "Notifying": any(c.notifying for c in notify),
            "NotifyAcquired": any(c.held for c in notify),
            "notify_sessions": sorted({s for c in notify for s in c.sessions}),
            "gatt": device.gatt.name if device.gatt is not None else None,
            "frames_sent": device.bms.frames_sent,
        }
        return Reply("s", [json.dumps(info)])

    async def _get_log(self, _call: Call) -> Reply:
        return Reply("s", [json.dumps(self.sim.events.events)])

    async def _clear_log(self, _call: Call) -> None:
        self.sim.events.events.clear()

    async def _get_stats(self, _call: Call) -> Reply:
        return Reply("s", [json.dumps(self.sim.stats())])

    async def _set_adapter(self, call: Call) -> None:
        name, present = call.body
        adapter = self.sim.adapters.get(name)
        if adapter is None:
            raise DBusError(_ERROR, f"no adapter {name!r}")
        if present:
            adapter.appear()
        else:
            await adapter.vanish()

    async def _drop_link(self, call: Call) -> None:
        device = self._device(call.body[0])
        await device.link_down("org.bluez.Reason.Remote", "Connection terminated by remote user")

    async def _forget_bond(self, call: Call) -> None:
        """The BMS loses its half of the bond (reset, paired with another host); BlueZ keeps
        its keys and only finds out at the next subscription."""
        device = self._device(call.body[0])
        device.bms_bond = False
        self.sim.events.record("bond_forgotten", device.address, device.adapter_name)

    async def _add_device(self, call: Call) -> None:
        try:
            self.sim.add_device(call.body[0], start=True)
        except ValueError as err:
            raise _invalid(err) from err

    def _device(self, address: str) -> Device:
        try:
            return self.sim.device(address)
        except (KeyError, ValueError) as err:
            raise DBusError(_ERROR, f"no device {address!r}") from err
