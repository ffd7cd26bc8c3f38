"""org.bluez.Adapter1 as bluetoothd shows it: power, discovery sessions, RemoveDevice
(docs/bluez.md 2, 6.2). Devices live in device.py."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from dbus_fast import Variant

from bluez_jk.sim import errors
from bluez_jk.sim.dispatch import Call, DBusObject, Interface, Method, Reply
from bluez_jk.sim.gatt import uuid128
from bluez_jk.sim.world import World

if TYPE_CHECKING:
    from bluez_jk.sim.device import Device

ADAPTER_IFACE = "org.bluez.Adapter1"


class Adapter:
    def __init__(self, world: World, name: str, index: int) -> None:
        self.world = world
        self.name = name
        self.path = f"/org/bluez/{name}"
        self.address = f"00:1A:7D:DA:71:{index:02X}"
        self.powered = True
        self.present = False
        self.devices: list[Device] = []
        self.sessions: set[str] = set()  # unique names with a discovery session
        self.filters: dict[str, dict[str, Any]] = {}
        self.discovering = False
        self._scan: asyncio.Task[None] | None = None

    def dbus_object(self) -> DBusObject:
        types = {
            "Address": "s", "AddressType": "s", "Name": "s", "Alias": "s", "Class": "u",
            "Connectable": "b", "Powered": "b", "PowerState": "s", "Discoverable": "b",
            "DiscoverableTimeout": "u", "Pairable": "b", "PairableTimeout": "u",
            "Discovering": "b", "UUIDs": "as", "Modalias": "s", "Roles": "as",
            "Manufacturer": "q", "Version": "y",
        }  # fmt: skip
        m = {
            "StartDiscovery": Method("", "", self._start_discovery),
            "StopDiscovery": Method("", "", self._stop_discovery),
            "SetDiscoveryFilter": Method("a{sv}", "", self._set_filter, ("properties",)),
            "RemoveDevice": Method("o", "", self._remove_device, ("device",)),
            "GetDiscoveryFilters": Method("", "as", self._filters, (), ("filters",)),
        }
        iface = Interface(
            ADAPTER_IFACE, types, self._props, m,
            writable=frozenset({"Powered", "Alias", "Discoverable", "Pairable"}),
            setter=self._set_property,
        )  # fmt: skip
        return DBusObject(self.path, {ADAPTER_IFACE: iface})

    def _props(self) -> dict[str, Any]:
        return {
            "Address": self.address, "AddressType": "public", "Name": f"bluez-jk-sim-{self.name}",
            "Alias": f"bluez-jk-sim-{self.name}", "Class": 0, "Connectable": self.powered,
            "Powered": self.powered, "PowerState": "on" if self.powered else "off",
            "Discoverable": False, "DiscoverableTimeout": 180, "Pairable": False,
            "PairableTimeout": 0, "Discovering": self.discovering,
            "UUIDs": [uuid128(0x1800), uuid128(0x1801)], "Modalias": "usb:v1D6Bp0246d0552",
            "Roles": ["central", "peripheral"], "Manufacturer": 2, "Version": 9,
        }  # fmt: skip

    def _changed(self, *names: str) -> None:
        self.world.dispatcher.changed(self.path, ADAPTER_IFACE, *names)

    # ---- presence (the "adapter gone" control) ---------------------------------------------

    def appear(self) -> None:
        if self.present:
            return
        self.present = True
        self.world.dispatcher.add(self.dbus_object())
        self.world.events.record("adapter_added", adapter=self.name)
        for device in self.devices:
            device.restore()

    async def vanish(self) -> None:
        if not self.present:
            return
        for device in self.devices:
            await device.link_down("org.bluez.Reason.Unknown", "Unspecified", cancel=True)
            device.unexport()
        self._end_scan()
        self.sessions.clear()
        self.filters.clear()
        self.present = False
        self.world.dispatcher.remove(self.path)
        self.world.events.record("adapter_removed", adapter=self.name)

    # ---- discovery ------------------------------------------------------------------------

    def _check_powered(self) -> None:
        if not self.powered:
            raise errors.not_ready()

    async def _set_filter(self, call: Call) -> None:
        self._check_powered()
        options: dict[str, Variant] = call.body[0]
        expected = {
            "UUIDs": "as", "RSSI": "n", "Pathloss": "q", "Transport": "s", "DuplicateData": "b",
            "Discoverable": "b", "Pattern": "s", "AutoConnect": "b",
        }  # fmt: skip
        for key, value in options.items():
            if key not in expected or value.signature != expected[key]:
                raise errors.invalid_arguments()
        if "Transport" in options and options["Transport"].value not in ("auto", "bredr", "le"):
            raise errors.invalid_arguments()
        if options:
            self.filters[call.sender] = {k: v.value for k, v in options.items()}
        else:
            self.filters.pop(call.sender, None)

    async def _filters(self, _call: Call) -> Reply:
        names = ["UUIDs", "RSSI", "Pathloss", "Transport", "DuplicateData", "Discoverable"]
        return Reply("as", [[*names, "Pattern", "AutoConnect"]])

    async def _start_discovery(self, call: Call) -> None:
        self._check_powered()
        if call.sender in self.sessions:
            raise errors.discovery_in_progress()
        self.sessions.add(call.sender)
        self.world.events.record("discovery_start", adapter=self.name, sender=call.sender)
        if not self.discovering:
            # The reply first, then Discovering=true (2.2).
            self.world.spawn(self._begin_scan())

    async def _begin_scan(self) -> None:
        await asyncio.sleep(0)
        if not self.sessions or self.discovering:
            return
        self.discovering = True
        self._changed("Discovering")
        self._scan = self.world.spawn(self._scan_loop())

    async def _stop_discovery(self, call: Call) -> None:
        self._check_powered()
        if call.sender not in self.sessions:
            raise errors.no_discovery()
        if self.world.faults.fire("stop-discovery-rejected", None):
            raise errors.discovery_in_progress()
        self.end_session(call.sender, "stop")

    def end_session(self, sender: str, reason: str) -> None:
        if sender not in self.sessions:
            return
        self.sessions.discard(sender)
        self.filters.pop(sender, None)
        self.world.events.record("discovery_stop", adapter=self.name, sender=sender, reason=reason)
        if not self.sessions:
            self._end_scan()

    def _end_scan(self) -> None:
        if self._scan is not None:
            self._scan.cancel()
            self._scan = None
        if self.discovering:
            self.discovering = False
            self._changed("Discovering")
            for device in self.devices:
                device.scan_ended()

    async def _scan_loop(self) -> None:
        timing = self.world.timing
        started = asyncio.get_running_loop().time()
        while True:
            await asyncio.sleep(timing.advert_s)
            elapsed = asyncio.get_running_loop().time() - started
            for device in self.devices:
                device.advertise(elapsed)
            # Real scans report in tens of ms at best; never spin in zero timing.
            if timing.advert_s == 0:
                await asyncio.sleep(0.01)

    # ---- devices --------------------------------------------------------------------------

    async def _remove_device(self, call: Call) -> None:
        path: str = call.body[0]
        self._check_powered()
        device = next((d for d in self.devices if d.path == path and d.exported), None)
        if device is None:
            raise errors.does_not_exist()
        await device.remove()

    async def _set_property(self, name: str, value: Any) -> None:
        if name == "Powered" and bool(value) != self.powered:
            if not value:
                for device in self.devices:
                    await device.link_down(
                        "org.bluez.Reason.Local", "Connection terminated by local host", cancel=True
                    )
                for sender in list(self.sessions):
                    self.end_session(sender, "power_off")
            else:
                self._reset_controller()
            self.powered = bool(value)
            self._changed("Powered", "PowerState", "Connectable")
            self.world.events.record("adapter_powered", adapter=self.name, powered=self.powered)

    # ---- a wedged controller (fault adapter-wedged) ---------------------------------------

    def connect_wedged(self) -> bool:
        """Does a Connect on this adapter time out? An `adapter-wedged` aimed at any of its
        devices wedges the whole controller; each timed-out Connect uses up one count."""
        return any(self.world.faults.fire("adapter-wedged", d.address) for d in self.devices)

    def _reset_controller(self) -> None:
        """Powering on resets the controller (the kernel sends HCI_Reset): the wedge is gone.
        An `adapter-wedged` aimed at no device goes with the first adapter that is reset."""
        faults = self.world.faults
        for device in self.devices:
            faults.clear("adapter-wedged", device.address)
        faults.clear_unaimed("adapter-wedged")
