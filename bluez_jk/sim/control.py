"""`org.bluezjk.Simulator1` at `/org/bluezjk/simulator`: faults, device state and the event log
at run time, on the same bus connection as `org.bluez`."""

from __future__ import annotations

import json
from typing import Any, Protocol

from dbus_fast import DBusError, Variant

from bluez_jk.sim.device import Device
from bluez_jk.sim.dispatch import Call, DBusObject, Interface, Method, Reply
from bluez_jk.sim.eventlog import EventLog
from bluez_jk.sim.faults import Fault, make_fault, normalize_mac
from bluez_jk.sim.timing import Timing

CONTROL_IFACE = "org.bluezjk.Simulator1"
CONTROL_PATH = "/org/bluezjk/simulator"
_ERROR = "org.bluezjk.Error.InvalidArguments"


def _invalid(err: Exception) -> DBusError:
    return DBusError(_ERROR, str(err))


class SimulatorModel(Protocol):
    """What the control interface asks of the simulator (server.Simulator; a Protocol so that
    the server may import this module and not the other way round)."""

    @property
    def timing(self) -> Timing: ...
    @property
    def events(self) -> EventLog: ...
    async def set_fault(self, fault: Fault) -> None: ...
    def clear_faults(self, name: str | None, address: str | None) -> int: ...
    def armed_faults(self) -> list[str]: ...
    async def set_adapter_present(self, name: str, present: bool) -> bool: ...
    def device(self, address: str) -> Device: ...
    def add_device(self, text: str, start: bool) -> Device: ...
    def stats(self) -> dict[str, int]: ...


class Control:
    def __init__(self, sim: SimulatorModel) -> None:
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
        return Reply("u", [self.sim.clear_faults(name or None, mac)])

    async def _list_faults(self, _call: Call) -> Reply:
        return Reply("as", [self.sim.armed_faults()])

    async def _set_state(self, call: Call) -> None:
        address, values = call.body
        device = self._device(address)
        plain: dict[str, Any] = {
            k: v.value if isinstance(v, Variant) else v for k, v in values.items()
        }
        device.set_state(plain)

    async def _get_device(self, call: Call) -> Reply:
        return Reply("s", [json.dumps(self._device(call.body[0]).describe())])

    async def _get_log(self, _call: Call) -> Reply:
        return Reply("s", [self.sim.events.to_json()])

    async def _clear_log(self, _call: Call) -> None:
        self.sim.events.clear()

    async def _get_stats(self, _call: Call) -> Reply:
        return Reply("s", [json.dumps(self.sim.stats())])

    async def _set_adapter(self, call: Call) -> None:
        name, present = call.body
        if not await self.sim.set_adapter_present(name, present):
            raise DBusError(_ERROR, f"no adapter {name!r}")

    async def _drop_link(self, call: Call) -> None:
        await self._device(call.body[0]).drop_link()

    async def _forget_bond(self, call: Call) -> None:
        self._device(call.body[0]).forget_bond()

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
