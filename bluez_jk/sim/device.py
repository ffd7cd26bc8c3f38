"""org.bluez.Device1 for one emulated JK-BMS: the link state machine, its GATT cache and the
board behind it (docs/bluez.md 3, 6.3)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any, Protocol

from dbus_fast import DBusError, Variant

from bluez_jk.names import device_path
from bluez_jk.sim import errors, pairing
from bluez_jk.sim.agents import Agent
from bluez_jk.sim.devices import PAIRING_REQUIRED, DeviceSpec
from bluez_jk.sim.dispatch import Call, DBusObject, Interface, Method
from bluez_jk.sim.gatt import GattDatabase, LayoutName, uuid128
from bluez_jk.sim.jkbms import JkBms
from bluez_jk.sim.world import World

DEVICE_IFACE = "org.bluez.Device1"
_JK_COMPANY_ID = 0x0B65  # docs/protocol.md 1.1


class AdapterView(Protocol):
    """What a device reads of its adapter (bluez.Adapter; a Protocol so that the adapter's
    module may import this one and not the other way round)."""

    name: str
    path: str
    present: bool
    powered: bool

    def connect_wedged(self) -> bool: ...


class Device:
    """One emulated JK-BMS board as BlueZ's Device1 and its cached GATT database."""

    def __init__(self, world: World, adapter: AdapterView, spec: DeviceSpec) -> None:
        self.world = world
        self.dispatcher = world.dispatcher
        self.faults = world.faults
        self.events = world.events
        self.bluez = world.bluez
        self.trusted = False
        self.alias = spec.display_name
        self.adapter = adapter
        self.adapter_name = adapter.name
        self.spec = spec
        self.address = spec.address
        self.path = device_path(adapter.path, spec.address)
        self.exported = False
        self.connected = False
        self.services_resolved = False
        self._disconnecting: asyncio.Future[None] | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._resolving: asyncio.Task[None] | None = None
        # The bond: BlueZ's side (Paired/Bonded, kept in its storage, i.e. in memory here) and
        # whether the BMS still holds its half (ForgetBond drops it).
        self.paired = False
        self.bonded = False
        self.bms_bond = False
        self._pairing: asyncio.Task[None] | None = None
        self._pair_requester: str | None = None
        self._temporary: asyncio.Task[None] | None = None
        self._removing = False
        self.rssi: int | None = None
        self._rssi_flip = False
        self.gatt: GattDatabase | None = None
        self.bms = JkBms(spec, world.timing, world.faults, self._notify, self._peer_drop)

    # ---- GattHost -------------------------------------------------------------------------

    @property
    def link_up(self) -> bool:
        return self.connected and self.gatt is not None and self.gatt.exported

    @property
    def disconnecting(self) -> bool:
        return self._disconnecting is not None

    @property
    def mtu(self) -> int:
        return self.spec.profile.mtu

    def on_write(self, data: bytes) -> None:
        self.bms.on_write(data)

    def on_subscribed(self) -> None:
        self.bms.subscribed()

    def pairing_refuses(self) -> bool:
        """Does the BMS refuse a subscription on this link (Insufficient Authentication)?
        A BMS that lost its half of the bond refuses as if never paired, and BlueZ's failed
        encryption turns Paired false."""
        if self.spec.pairing not in PAIRING_REQUIRED:
            return False
        if self.paired and self.bms_bond:
            return False
        if self.paired:
            self.events.record("bond_lost", self.address, self.adapter_name)
            self._set_bond(False)
        return True

    def _notify(self, chunk: bytes) -> None:
        if self.gatt is None:
            return
        for char in self.gatt.characteristics:
            if "notify" in char.spec.flags and char.spec.uuid == 0xFFE1:
                char.notify(chunk)

    async def _peer_drop(self) -> None:
        self.events.record("peer_drop", self.address, self.adapter_name)
        await self.drop_link()

    async def drop_link(self) -> None:
        """The BMS ends the link (the DropLink control, a peer drop)."""
        await self.link_down("org.bluez.Reason.Remote", "Connection terminated by remote user")

    # ---- the control interface ----------------------------------------------------------------

    def set_state(self, values: dict[str, Any]) -> None:
        """SetState: override the BMS's readings (`clear` drops every override)."""
        self.bms.state.set_overrides(values)
        self.events.record("state_set", self.address, self.adapter_name, keys=sorted(values))

    def forget_bond(self) -> None:
        """The BMS loses its half of the bond (reset, paired with another host); BlueZ keeps
        its keys and only finds out at the next subscription."""
        self.bms_bond = False
        self.events.record("bond_forgotten", self.address, self.adapter_name)

    def describe(self) -> dict[str, Any]:
        """GetDevice: the state tests check, as plain JSON values."""
        notify = self.gatt.notify_state() if self.gatt is not None else None
        return {
            "address": self.address,
            "adapter": self.adapter_name,
            "path": self.path,
            "exported": self.exported,
            "Connected": self.connected,
            "Trusted": self.trusted,
            "Paired": self.paired,
            "Bonded": self.bonded,
            "bms_bond": self.bms_bond,
            "pairing": self.spec.pairing,  # the mode only: the passkey stays secret
            "ServicesResolved": self.services_resolved,
            "Notifying": notify.notifying if notify else False,
            "NotifyAcquired": notify.held if notify else False,
            "notify_sessions": notify.sessions if notify else [],
            "gatt": self.gatt.name if self.gatt is not None else None,
            "frames_sent": self.bms.frames_sent,
        }

    def shutdown(self) -> None:
        """The simulator stops: the BMS falls quiet, acquired sockets close."""
        self.bms.stop()
        if self.gatt is not None:
            for char in self.gatt.characteristics:
                char.release_acquired(reason="shutdown")

    # ---- D-Bus object -------------------------------------------------------------------------

    def dbus_object(self) -> DBusObject:
        types = {
            "Address": "s", "AddressType": "s", "Name": "s", "Alias": "s", "Appearance": "q",
            "Paired": "b", "Bonded": "b", "Trusted": "b", "Blocked": "b", "LegacyPairing": "b",
            "CablePairing": "b", "RSSI": "n", "Connected": "b", "UUIDs": "as", "Adapter": "o",
            "ManufacturerData": "a{qv}", "ServicesResolved": "b", "AdvertisingFlags": "ay",
        }  # fmt: skip
        m = {
            "Connect": Method("", "", self._connect),
            "Disconnect": Method("", "", self._disconnect),
            "Pair": Method("", "", self._pair),
            "CancelPairing": Method("", "", self._cancel_pairing),
        }
        iface = Interface(
            DEVICE_IFACE,
            types,
            self._props,
            m,
            {"Disconnected": "ss"},
            writable=frozenset({"Trusted", "Alias"}),
            setter=self._set_property,
        )
        return DBusObject(self.path, {DEVICE_IFACE: iface})

    async def _set_property(self, name: str, value: Any) -> None:
        if name == "Trusted":
            self.trusted = bool(value)
        else:
            self.alias = str(value) or self.spec.display_name  # "" restores the name
        self._changed(name)

    def _props(self) -> dict[str, Any]:
        mac = bytes.fromhex(self.address.replace(":", ""))
        if self.gatt is not None and self.gatt.exported:
            uuids = self.gatt.uuids()  # GATT primaries once resolved (and stored)
        else:
            uuids = [uuid128(0xFFE0)]  # what the module advertises
        props: dict[str, Any] = {
            "Address": self.address, "AddressType": "public", "Name": self.spec.display_name,
            "Alias": self.alias, "Paired": self.paired, "Bonded": self.bonded,
            "Trusted": self.trusted, "Blocked": False, "LegacyPairing": False,
            "CablePairing": False,
            "Connected": self.connected, "UUIDs": uuids, "Adapter": self.adapter.path,
            "ManufacturerData": {_JK_COMPANY_ID: Variant("ay", b"\x88\xa0" + mac)},
            "ServicesResolved": self.services_resolved, "AdvertisingFlags": b"\x06",
        }  # fmt: skip
        if self.rssi is not None:
            props["RSSI"] = self.rssi
        return props

    def _changed(self, *names: str) -> None:
        self.dispatcher.changed(self.path, DEVICE_IFACE, *names)

    # ---- lifetime -----------------------------------------------------------------------------

    def start(self) -> None:
        """At simulator start: a stored device (connected before), unless a fault says not."""
        if self.faults.active("not-advertising", self.address) or self.faults.active(
            "uncached", self.address
        ):
            return
        self.restore()
        if self.faults.active("left-connected", self.address):
            self.force_link_soon()

    def restore(self) -> None:
        """Load the device and its GATT cache from storage (start-up, adapter back)."""
        if self.exported or not self.adapter.present:
            return
        self.exported = True
        self.dispatcher.add(self.dbus_object())
        if self.gatt is None:
            self.gatt = self._new_gatt(fresh=False)
        self.gatt.export(self.dispatcher)
        self.events.record("device_added", self.address, self.adapter_name)

    def _new_gatt(self, fresh: bool) -> GattDatabase:
        name: LayoutName = self.spec.layout
        if not fresh and self.faults.active("stale-cache", self.address):
            name = "stale"
        return GattDatabase(self, self.path, name)

    def use_stale_cache(self) -> None:
        """stale-cache armed at run time: the cache of a disconnected device now holds a
        previous firmware's objects."""
        if self.connected or not self.exported:
            return
        if self.gatt is not None and self.gatt.name != "stale":
            self.gatt.unexport(self.dispatcher)
        self.gatt = self._new_gatt(fresh=False)
        self.gatt.export(self.dispatcher)

    def unexport(self) -> None:
        if not self.exported:
            return
        if self.gatt is not None:
            self.gatt.unexport(self.dispatcher)
        self.rssi = None
        self.exported = False
        self.dispatcher.remove(self.path)
        self.events.record("device_removed", self.address, self.adapter_name)

    def forget(self) -> None:
        """Gone from BlueZ's storage (uncached armed at run time): no object, no GATT cache."""
        if not self.connected and self._connecting is None:
            self.unexport()
            self.gatt = None
            self.paired = self.bonded = False

    async def remove(self) -> None:
        """Adapter1.RemoveDevice: disconnect first, then forget the device, its cache and bond."""
        self.events.record("remove_device", self.address, self.adapter_name)
        self._stop_temporary()
        self._removing = True  # a pairing cancelled here must not schedule another removal
        try:
            if self._pairing is not None:
                self._pairing.cancel()
            if self.paired or self.bonded:
                self._set_bond(False)
                self.events.record("bond_removed", self.address, self.adapter_name, by="remove")
            if self.connected or self._connecting is not None:
                await self._disconnect_link()
            # Only RemoveDevice cures a stale cache (docs/bluez.md fact 7).
            self.faults.clear("stale-cache", self.address)
            self.faults.clear("stale-cache", None)
            self.unexport()
            self.gatt = None
        finally:
            self._removing = False

    @property
    def advertising(self) -> bool:
        return (
            self.adapter.present
            and not self.connected
            and self._connecting is None
            and not self.faults.active("not-advertising", self.address)
        )

    def advertise(self, scan_elapsed_s: float) -> None:
        if not self.advertising:
            return
        if not self.exported:
            if self.faults.active("uncached", self.address) and (
                scan_elapsed_s < self.world.timing.uncached_s
            ):
                return
            self.faults.fire("uncached", self.address)
            self.rssi = -62
            self.exported = True
            self.dispatcher.add(self.dbus_object())
            self.events.record("device_added", self.address, self.adapter_name, by="discovery")
            return
        # BlueZ reports RSSI moves of 8 dB or more; alternate so each advert is reported.
        self._rssi_flip = not self._rssi_flip
        self.rssi = -62 if self._rssi_flip else -71
        self._changed("RSSI")

    def scan_ended(self) -> None:
        # not-advertising:N hides the device from N discovery sessions (or N connects).
        self.faults.fire("not-advertising", self.address)
        if self.rssi is not None and self.exported:
            self.rssi = None
            self._changed("RSSI")  # reported as invalidated (1.3)

    # ---- Connect ------------------------------------------------------------------------------

    async def _connect(self, call: Call) -> None:
        self.events.record("connect_call", self.address, self.adapter_name, sender=call.sender)
        if self._connecting is not None:
            # Before 5.81 a second Connect fails with the kernel's EALREADY text; the real-BlueZ
            # tier's probe saw exactly this on 5.66 (docs/bluez.md section 8).
            if self.bluez < (5, 81):
                raise errors.already_in_progress()
            raise errors.in_progress()
        self._stop_temporary()  # a device that is connected to is no longer temporary
        if self.connected:
            return
        if not self.adapter.powered:
            self.events.record("connect_failed", self.address, self.adapter_name, error="off")
            raise errors.connect_powered_off()
        if self.faults.fire("in-progress", self.address):
            raise errors.in_progress()
        task = asyncio.get_running_loop().create_task(self._establish())
        self._connecting = task
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.cancelled():
                # Cancelled by a Disconnect or RemoveDevice from anyone (3.3).
                self.events.record(
                    "connect_failed", self.address, self.adapter_name, error="canceled"
                )
                raise errors.connection_canceled() from None
            raise
        finally:
            if self._connecting is task:
                self._connecting = None
        self._resolving = self.world.spawn(self._resolve())

    async def _establish(self) -> None:
        timing = self.world.timing
        if self.faults.fire("not-advertising", self.address) or self.adapter.connect_wedged():
            # Nothing answers: the kernel gives up after its LE connect timeout.
            await asyncio.sleep(timing.connect_timeout_s)
            self.events.record("connect_failed", self.address, self.adapter_name, error="timeout")
            raise errors.connection_abort()
        await asyncio.sleep(timing.connect_s)
        self._link_up()
        if self.faults.fire("connect-abort", self.address):
            self.dispatcher.flush()
            await asyncio.sleep(max(timing.att_s, 0.001))
            self.connected = False
            self._changed("Connected")
            self.events.record("disconnected", self.address, self.adapter_name, reason="abort")
            self.events.record("connect_failed", self.address, self.adapter_name, error="abort")
            raise errors.connection_abort()
        await asyncio.sleep(timing.att_s)

    def _link_up(self) -> None:
        self.connected = True
        self._changed("Connected")
        if self.rssi is not None:
            self.rssi = None  # a connected device no longer advertises
            self._changed("RSSI")
        self.events.record("connected", self.address, self.adapter_name)

    async def _resolve(self) -> None:
        await asyncio.sleep(self.world.timing.resolve_s)
        if not self.connected or self.disconnecting:
            return
        if self.faults.fire("no-services", self.address):
            self.events.record("resolve_skipped", self.address, self.adapter_name)
            return
        if self.gatt is None:
            self.gatt = self._new_gatt(fresh=True)
        elif self.gatt.name == "stale" and not self.faults.fire("stale-cache", self.address):
            # The fault's count ran out: this connection's cache check finds the real services.
            self.gatt.unexport(self.dispatcher)
            self.gatt = self._new_gatt(fresh=True)
        self.gatt.export(self.dispatcher)
        self.dispatcher.flush()
        for char in self.gatt.characteristics:
            char.mtu_changed()
        self.services_resolved = True
        self._changed("UUIDs", "ServicesResolved")
        for char in self.gatt.characteristics:
            char.arm()  # sessions survive disconnects and are re-armed (docs/bluez.md fact 8)
        self.hold_notify_foreign()
        self.events.record(
            "services_resolved", self.address, self.adapter_name, layout=self.gatt.name
        )
        if any(c.notifying for c in self.gatt.characteristics):
            self.bms.subscribed()

    def hold_notify_foreign(self) -> None:
        """notify-acquired: once services are resolved, another program takes the notify."""
        if not self.services_resolved or self.gatt is None:
            return
        if self.faults.fire("notify-acquired", self.address):
            for char in self.gatt.characteristics:
                char.hold_foreign()

    def force_link_soon(self) -> None:
        self.world.spawn(self.force_link())

    async def force_link(self) -> None:
        """left-connected: a crashed predecessor's link is still up (docs/bluez.md fact 5)."""
        if self.connected or not self.exported:
            return
        self._link_up()
        await self._resolve()

    # ---- Disconnect ---------------------------------------------------------------------------

    async def _disconnect(self, call: Call) -> None:
        self.events.record("disconnect_call", self.address, self.adapter_name, sender=call.sender)
        await self._disconnect_link(call.answer)

    async def _disconnect_link(self, answer: Callable[[], None] | None = None) -> None:
        """`answer`: a Disconnect caller's reply, sent where bluetoothd sends it (`link_down`)."""
        if self._connecting is not None:
            task = self._connecting
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            if self.connected:
                await self.link_down(
                    "org.bluez.Reason.Local", "Connection terminated by local host"
                )
            return
        if not self.connected:
            return
        if self._disconnecting is not None:
            await asyncio.shield(self._disconnecting)
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._disconnecting = done
        try:
            await asyncio.sleep(self.world.timing.disconnect_grace_s)
            await self.link_down(
                "org.bluez.Reason.Local", "Connection terminated by local host", answer=answer
            )
        finally:
            self._disconnecting = None
            if not done.done():
                done.set_result(None)

    async def link_down(
        self,
        reason: str,
        message: str,
        cancel: bool = False,
        answer: Callable[[], None] | None = None,
    ) -> None:
        """The link is gone: sockets shut, then ServicesResolved, Disconnected, the reply to
        a Disconnect (`answer`), Connected: 5.66 answers in device_remove_connection before
        it queues Connected (docs/bluez.md 3.3)."""
        if cancel and self._connecting is not None:
            self._connecting.cancel()
        if not self.connected:
            return
        if self._resolving is not None:
            self._resolving.cancel()
            self._resolving = None
        self.bms.stop()
        if self.gatt is not None:
            for char in self.gatt.characteristics:
                char.link_down()
        self.services_resolved = False
        self._changed("ServicesResolved")
        self.dispatcher.emit(self.path, DEVICE_IFACE, "Disconnected", "ss", [reason, message])
        if answer is not None:
            answer()
        self.connected = False
        self._changed("Connected")
        if self.gatt is not None:
            for char in self.gatt.characteristics:
                char.mtu_changed()  # MTU exists only while connected
        self.dispatcher.flush()
        self.events.record("disconnected", self.address, self.adapter_name, reason=reason)

    # ---- bus clients leaving ------------------------------------------------------------------

    def client_left(self, sender: str) -> None:
        if self._pairing is not None and self._pair_requester == sender:
            # create_bond_req_exit: the requester left before the bonding finished.
            self._pairing.cancel()
            self.world.spawn(self._disconnect_link())
        if self.gatt is None:
            return
        for char in self.gatt.characteristics:
            char.end_session(sender, reason="bus_left")

    # ---- Pair ---------------------------------------------------------------------------------

    def _set_bond(self, on: bool) -> None:
        changed = [n for n, v in (("Paired", self.paired), ("Bonded", self.bonded)) if v != on]
        self.paired = self.bonded = on
        if changed:
            self._changed(*changed)

    def _stop_temporary(self) -> None:
        if self._temporary is not None:
            self._temporary.cancel()
            self._temporary = None

    async def _pair(self, call: Call) -> None:
        """Device1.Pair (src/device.c pair_device): connects if needed, runs SMP with the
        caller's agent (else the default, else none) and answers once services are resolved."""
        self._stop_temporary()
        if self._pairing is not None:
            raise errors.in_progress()
        if self.bonded:
            raise errors.already_exists()
        agent = self.world.agents.agent_for(call.sender)
        self.events.record(
            "pair_call", self.address, self.adapter_name, sender=call.sender,
            capability=agent.capability if agent is not None else None,
        )  # fmt: skip
        task = asyncio.get_running_loop().create_task(self._bond(agent))
        self._pairing = task
        self._pair_requester = call.sender
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if not task.cancelled():
                raise
            self._pair_failed("canceled")
            raise errors.authentication_canceled() from None
        except DBusError as err:
            self._pair_failed(err.type.rsplit(".", 1)[-1])
            raise
        finally:
            if self._pairing is task:
                self._pairing = None
                self._pair_requester = None

    async def _bond(self, agent: Agent | None) -> None:
        brought_up = False
        try:
            if not self.connected:
                brought_up = True
                await self._link_for_pairing()
            await pairing.exchange(
                self.spec, self.world.agents, agent, self.path, self.world.timing
            )
            self._check_still_connected()
        except BaseException:
            if brought_up:
                # The link existed only for the pairing: it goes once the pairing failed.
                self.world.spawn(self._disconnect_link())
            raise
        self.bms_bond = True
        self._set_bond(True)
        self.events.record("paired", self.address, self.adapter_name)
        # The reply waits for the services (device_bonding_complete -> device_browse_gatt).
        if self._resolving is not None and not self.services_resolved:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(self._resolving)

    def _check_still_connected(self) -> None:
        if not self.connected:
            raise errors.authentication_canceled()  # the link dropped: MGMT_STATUS_DISCONNECTED

    async def _link_for_pairing(self) -> None:
        if self._connecting is None:
            self._connecting = asyncio.get_running_loop().create_task(self._establish())
            task = self._connecting
            try:
                await asyncio.shield(task)
            except DBusError:
                raise errors.connection_attempt_failed() from None
            finally:
                if self._connecting is task:
                    self._connecting = None
            self._resolving = self.world.spawn(self._resolve())
            return
        try:
            await asyncio.shield(self._connecting)  # someone's Connect is under way
        except DBusError:
            raise errors.connection_attempt_failed() from None

    def _pair_failed(self, error: str) -> None:
        self.events.record("pair_failed", self.address, self.adapter_name, error=error)
        if not self.paired and not self.trusted and self.exported and not self._removing:
            # device_bonding_complete: an untrusted device goes back to being temporary.
            self._temporary = self.world.spawn(self._expire())

    async def _expire(self) -> None:
        await asyncio.sleep(self.world.timing.temporary_s)
        self._temporary = None
        self.events.record("temporary_removed", self.address, self.adapter_name)
        await self.remove()

    async def _cancel_pairing(self, _call: Call) -> None:
        """Device1.CancelPairing. With no pairing under way BlueZ removes the bond (!) and
        answers DoesNotExist (src/device.c cancel_pairing)."""
        if self._pairing is None:
            if self.paired or self.bonded:
                self._set_bond(False)
                self.events.record("bond_removed", self.address, self.adapter_name, by="cancel")
            raise errors.does_not_exist()
        self.events.record("cancel_pairing", self.address, self.adapter_name)
        self._pairing.cancel()
