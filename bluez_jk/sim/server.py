"""The simulator process: one bus connection owning `org.bluez`, its adapters and devices."""

from __future__ import annotations

import asyncio
import logging
from types import TracebackType

from dbus_fast import BusType, Message, MessageType
from dbus_fast.aio import MessageBus
from dbus_fast.constants import NameFlag, RequestNameReply

from bluez_jk.sim.bluez import Adapter
from bluez_jk.sim.control import Control
from bluez_jk.sim.device import Device
from bluez_jk.sim.devices import DeviceSpec, parse_device
from bluez_jk.sim.dispatch import Dispatcher
from bluez_jk.sim.eventlog import EventLog
from bluez_jk.sim.faults import FAULTS, Fault, FaultSet, is_fault_name, normalize_mac
from bluez_jk.sim.outbox import Outbox
from bluez_jk.sim.timing import TIMINGS, TimingName
from bluez_jk.sim.versions import BluezName, parse_bluez
from bluez_jk.sim.world import World

log = logging.getLogger(__name__)

BUS_NAME = "org.bluez"
_NAME_LOST_RULE = (
    "type='signal',sender='org.freedesktop.DBus',interface='org.freedesktop.DBus',"
    "member='NameOwnerChanged',arg2=''"
)


class SimulatorError(RuntimeError):
    pass


class Simulator:
    def __init__(
        self,
        devices: list[DeviceSpec],
        faults: list[Fault] | None = None,
        timing: TimingName = "real",
        bus_address: str | None = None,
        bluez: BluezName = "5.66",
    ) -> None:
        self.timing = TIMINGS[timing]
        self.bluez = parse_bluez(bluez)
        self.faults = FaultSet(faults)
        self.events = EventLog()
        self.specs = devices
        self.bus_address = bus_address
        self.adapters: dict[str, Adapter] = {}
        self.devices: dict[tuple[str, str], Device] = {}
        self._bus: MessageBus | None = None
        self._outbox: Outbox | None = None
        self._world: World | None = None
        self._dispatcher: Dispatcher | None = None

    @property
    def world(self) -> World:
        if self._world is None:
            raise SimulatorError("simulator not started")
        return self._world

    async def __aenter__(self) -> Simulator:
        if self.bus_address:
            bus = MessageBus(bus_address=self.bus_address, negotiate_unix_fd=True)
        else:
            bus = MessageBus(bus_type=BusType.SYSTEM, negotiate_unix_fd=True)
        await bus.connect()
        self._bus = bus
        self._outbox = Outbox(bus)
        self._dispatcher = Dispatcher(self._outbox)
        self._world = World(
            self._dispatcher, self.timing, self.faults, self.events, bluez=self.bluez
        )
        bus.add_message_handler(self._dispatcher.handle)
        self._dispatcher.name_lost.append(self._client_left)
        await self._call_daemon("AddMatch", "s", [_NAME_LOST_RULE])
        self._dispatcher.add(self._world.agents.dbus_object())
        self.adapter("hci0")
        for spec in self.specs:
            self._add(spec)
        self._dispatcher.add(Control(self).dbus_object())
        for device in self.devices.values():
            device.start()
        self._dispatcher.flush()
        reply = await bus.request_name(BUS_NAME, NameFlag.DO_NOT_QUEUE)
        if reply is not RequestNameReply.PRIMARY_OWNER:
            raise SimulatorError(f"could not own {BUS_NAME}: {reply.name}")
        self.events.record("started", timing=self.timing.name, faults=self.faults.describe())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        world = self._world
        if world is not None:
            world.agents.release_all()
            for device in self.devices.values():
                device.shutdown()
            for task in list(world.tasks):
                task.cancel()
            await asyncio.gather(*world.tasks, return_exceptions=True)
        if self._dispatcher is not None:
            await self._dispatcher.close()
        if self._outbox is not None:
            await self._outbox.close()
        if self._bus is not None:
            self._bus.disconnect()
            await self.wait_closed()

    async def _call_daemon(self, member: str, signature: str, body: list[object]) -> None:
        assert self._bus is not None
        reply = await self._bus.call(
            Message(
                destination="org.freedesktop.DBus",
                path="/org/freedesktop/DBus",
                interface="org.freedesktop.DBus",
                member=member,
                signature=signature,
                body=body,
            )
        )
        if reply is None or reply.message_type is MessageType.ERROR:
            raise SimulatorError(f"{member} failed: {reply.body if reply else 'no reply'}")

    async def wait_closed(self) -> None:
        """Until the bus connection is gone (dbus-fast cancels the future on a user disconnect)."""
        if self._bus is None:
            return
        waiter = asyncio.ensure_future(self._bus.wait_for_disconnect())  # type: ignore[no-untyped-call]
        await asyncio.wait({waiter})
        if not waiter.cancelled() and waiter.exception() is not None:
            log.info("sim: bus connection lost: %r", waiter.exception())

    # ---- model ----------------------------------------------------------------------------

    def adapter(self, name: str) -> Adapter:
        adapter = self.adapters.get(name)
        if adapter is None:
            adapter = Adapter(self.world, name, int(name[3:]))
            self.adapters[name] = adapter
            adapter.appear()
        return adapter

    def _add(self, spec: DeviceSpec) -> Device:
        key = (spec.adapter, spec.address)
        if key in self.devices:
            raise ValueError(f"device {spec.address} on {spec.adapter} given twice")
        adapter = self.adapter(spec.adapter)
        device = Device(self.world, adapter, spec)
        adapter.devices.append(device)
        self.devices[key] = device
        return device

    def add_device(self, text: str, start: bool) -> Device:
        device = self._add(parse_device(text))
        if start:
            device.start()
        return device

    def device(self, address: str) -> Device:
        mac = normalize_mac(address)
        for (_adapter, addr), device in self.devices.items():
            if addr == mac:
                return device
        raise KeyError(address)

    def stats(self) -> dict[str, int]:
        outbox = self._outbox
        return {
            "messages_sent": outbox.sent if outbox else 0,
            "outbox_waits": outbox.waits if outbox else 0,
            "frames_sent": sum(d.bms.frames_sent for d in self.devices.values()),
            "events": self.events.count(),
        }

    def _targets(self, address: str | None) -> list[Device]:
        return [d for d in self.devices.values() if address is None or d.address == address]

    async def set_fault(self, fault: Fault) -> None:
        """Arm a fault at run time; the ones that describe a present state apply at once."""
        self.faults.add(fault)
        self.events.record("fault_set", fault.address, fault=fault.describe())
        on_arm = FAULTS[fault.name].on_arm
        if on_arm is not None:
            for device in self._targets(fault.address):
                on_arm(device)

    def clear_faults(self, name: str | None, address: str | None) -> int:
        """Disarm the faults matching `name` and `address` (None: any); an unknown name
        matches none."""
        removed = 0
        if name is None or is_fault_name(name):
            removed = self.faults.clear(name, address)
        self.events.record("faults_cleared", address, name=name, removed=removed)
        return removed

    def armed_faults(self) -> list[str]:
        return self.faults.describe()

    async def set_adapter_present(self, name: str, present: bool) -> bool:
        """The "adapter gone" control; False if there is no adapter of that name."""
        adapter = self.adapters.get(name)
        if adapter is None:
            return False
        if present:
            adapter.appear()
        else:
            await adapter.vanish()
        return True

    def _client_left(self, unique_name: str) -> None:
        """BlueZ's disconnect watches: a client's discovery and notify sessions end with it."""
        self.world.agents.client_left(unique_name)
        for adapter in self.adapters.values():
            adapter.end_session(unique_name, "bus_left")
        for device in self.devices.values():
            device.client_left(unique_name)
