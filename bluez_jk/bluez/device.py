"""One Device1: its live properties, Connect with the ServicesResolved wait, Disconnect and
RemoveDevice."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import cast

from dbus_fast import Message, Variant

from bluez_jk.bluez.adapter import require_powered, resolve_adapter
from bluez_jk.bluez.bus import (
    OBJECT_MANAGER,
    PROPERTIES,
    BluezBus,
    interfaces_rule,
    properties_changed_rule,
    signal_body,
)
from bluez_jk.bluez.errors import LinkLost, ObjectVanished
from bluez_jk.bluez.paths import adapter_name
from bluez_jk.bluez.properties import ADAPTER, DEVICE, Device1, Interfaces, ManagedObjects
from bluez_jk.errors import JkError, ServicesNotResolved

log = logging.getLogger(__name__)


class DeviceWatch:
    """Device1 properties kept current from PropertiesChanged, and whether the object is gone.

    Waiters are woken on every change and re-check their own condition, so a state that is
    passed through quickly (Connected true -> false) is seen only if it still holds."""

    def __init__(self, path: str, props: Device1 | None) -> None:
        self.path = path
        self.props: Device1 = (props or {}).copy()
        self.exists = props is not None
        # The device's GATT objects as the snapshot had them plus InterfacesAdded/Removed
        # since: what `find_jk_chars` needs, without another GetManagedObjects.
        self.objects: ManagedObjects = {}
        self.prefix = path + "/"
        self._waiters: list[asyncio.Future[None]] = []
        self.listeners: list[Callable[[], None]] = []

    def reset(self, props: Device1 | None) -> None:
        self.props = (props or {}).copy()
        self.exists = props is not None
        self._wake()

    def on_signal(self, message: Message) -> None:
        # Cheap header checks first: the device's namespace rule also brings the Value signal
        # of every notification, which is none of this watch's business.
        member = message.member
        if member == "PropertiesChanged":
            if message.path != self.path:
                return
            changed = signal_body(message, PROPERTIES, "PropertiesChanged")
            if changed is not None and changed[0] == DEVICE:
                self.props.update(changed[1])
                if changed[2]:
                    # Invalidated names come from BlueZ as plain strings: rebuilt, not popped.
                    gone = set(changed[2])
                    self.props = cast(
                        Device1, {k: v for k, v in self.props.items() if k not in gone}
                    )
                self._wake()
            return
        if member not in ("InterfacesAdded", "InterfacesRemoved"):
            return
        if message.body[0].startswith(self.prefix):
            self._on_gatt_signal(message)
            return
        if message.body[0] != self.path:
            return
        added = signal_body(message, OBJECT_MANAGER, "InterfacesAdded")
        if added is not None and DEVICE in added[1]:
            self.props = added[1][DEVICE]
            self.exists = True
            self._wake()
            return
        removed = signal_body(message, OBJECT_MANAGER, "InterfacesRemoved")
        if removed is not None and DEVICE in removed[1]:
            self.exists = False
            self.props = {}
            self._wake()

    def _on_gatt_signal(self, message: Message) -> None:
        added = signal_body(message, OBJECT_MANAGER, "InterfacesAdded")
        if added is not None:
            ifaces = self.objects.setdefault(added[0], {})
            ifaces.update(added[1])
            return
        removed = signal_body(message, OBJECT_MANAGER, "InterfacesRemoved")
        if removed is not None and removed[0] in self.objects:
            left = {k: v for k, v in self.objects[removed[0]].items() if k not in removed[1]}
            if left:
                self.objects[removed[0]] = cast(Interfaces, left)
            else:
                del self.objects[removed[0]]

    @property
    def connected(self) -> bool:
        return self.props.get("Connected", False)

    @property
    def services_resolved(self) -> bool:
        return self.props.get("ServicesResolved", False)

    def _wake(self) -> None:
        for listener in list(self.listeners):
            listener()
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def wait_for(self, condition: Callable[[DeviceWatch], bool], timeout_s: float) -> bool:
        """True once `condition(self)` holds, False after `timeout_s`.

        Raises:
            Nothing: running out of time is the False answer.
        """
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(max(timeout_s, 0.0)):
                while not condition(self):
                    waiter: asyncio.Future[None] = loop.create_future()
                    self._waiters.append(waiter)
                    await waiter
        except TimeoutError:
            return condition(self)
        return True


@asynccontextmanager
async def watch_device(bus: BluezBus, adapter_obj: str, path: str) -> AsyncIterator[DeviceWatch]:
    """Subscribe first, then read the current state, so that no change falls in between.
    The match rules (the device's namespace: its own and its GATT objects' PropertiesChanged;
    the adapter's InterfacesAdded/Removed) stay for the connection's life: a read of the same
    BMS adds none, and `started_notify` shares the namespace rule.

    Raises:
        AdapterNotFound: the adapter is not (or no longer) there, or it is powered off.
        BusLost, Timeout: as `BluezBus.call`.
        BusError: a match rule refused, or bluetoothd not on the bus.
        ConnectFailed: any other error reply to GetManagedObjects (the default of stage
            "connect").
    """
    watch = DeviceWatch(path, None)
    rules = [
        properties_changed_rule(namespace=path),
        interfaces_rule("InterfacesAdded", adapter_obj),
        interfaces_rule("InterfacesRemoved", adapter_obj),
    ]
    async with bus.signals(rules, watch.on_signal, keep=True):
        objects = await bus.managed_objects(
            stage="connect",
            wanted=lambda p: p in (adapter_obj, path) or p.startswith(watch.prefix),
        )
        if adapter_obj not in objects:
            # Gone since it was resolved (or never checked): the full list names the others.
            resolve_adapter(await bus.managed_objects(stage="adapter"), adapter_name(adapter_obj))
        # A named adapter skips the reader's resolve step, so its Powered is checked here.
        require_powered(objects, adapter_obj)
        watch.reset(objects.get(path, {}).get(DEVICE))
        watch.objects = {p: i for p, i in objects.items() if p.startswith(watch.prefix)}
        yield watch


async def connect(bus: BluezBus, watch: DeviceWatch, timeout_s: float) -> None:
    """Device1.Connect. LE Connect replies once ATT is up, before GATT (docs/bluez.md fact 2);
    the caller waits for ServicesResolved separately.

    Raises:
        ObjectVanished: the device object is gone (before the call, or DoesNotExist).
        ConnectAborted: a transient LE failure (le-connection-abort-by-local and the like,
            docs/bluez.md fact 3): the policy retries it.
        ConnectFailed: any other Failed reply, or a reply without a rule of its own.
        InProgress: a Connect of ours or of another client is still pending.
        AuthenticationRequired: the device wants pairing, or refused it.
        AdapterNotFound: the adapter is not powered (NotReady) or gone.
        LinkLost: the link dropped during the Connect (NotConnected).
        BusLost, Timeout: as `BluezBus.call`.
    """
    if not watch.exists:
        raise ObjectVanished("device object is gone", stage="connect")
    await bus.call(watch.path, DEVICE, "Connect", stage="connect", timeout_s=timeout_s)
    log.info("connected path=%s", watch.path)


async def wait_services_resolved(watch: DeviceWatch, timeout_s: float) -> None:
    """Race ServicesResolved=true against the link dropping and the object vanishing.

    Raises:
        ObjectVanished: the device object went away meanwhile.
        LinkLost: the link dropped before the services were resolved.
        ServicesNotResolved: ServicesResolved stayed false for `timeout_s`.
    """
    done = await watch.wait_for(
        lambda w: w.services_resolved or not w.connected or not w.exists, timeout_s
    )
    if not watch.exists:
        raise ObjectVanished("device object vanished while resolving services", stage="resolve")
    if watch.services_resolved:
        return
    if done and not watch.connected:
        raise LinkLost("link dropped before services were resolved", stage="resolve")
    raise ServicesNotResolved(
        f"ServicesResolved stayed false for {timeout_s:.1f} s", stage="resolve"
    )


async def disconnect(bus: BluezBus, watch: DeviceWatch, timeout_s: float) -> None:
    """Device1.Disconnect; its reply comes after the link is down (2 s grace in bluetoothd).
    Some BlueZ versions never reply (bluez#947), hence the bound and the state wait.

    Raises:
        Nothing: a failed Disconnect is logged, cleanup goes on (only cancellation passes).
    """
    if not bus.connected:
        return
    try:
        await bus.call(watch.path, DEVICE, "Disconnect", stage="cleanup", timeout_s=timeout_s)
    except ObjectVanished:
        return
    except JkError as err:
        log.warning("disconnect failed path=%s error=%s", watch.path, err)
    await watch.wait_for(lambda w: not w.connected or not w.exists, min(timeout_s, 2.0))


async def remove_device(bus: BluezBus, adapter_obj: str, path: str, timeout_s: float) -> None:
    """Adapter1.RemoveDevice: the only cure for a stale GATT cache (docs/bluez.md fact 7).
    A device that is already gone is not an error.

    Raises:
        AdapterNotFound: the adapter is not powered or gone.
        ServicesNotResolved: any reply without a rule of its own (the default of stage
            "resolve").
        BusLost, Timeout, JkError: as `BluezBus.call`.
    """
    try:
        await bus.call(
            adapter_obj, ADAPTER, "RemoveDevice", "o", [path], stage="resolve", timeout_s=timeout_s
        )
        log.info("removed device path=%s", path)
    except ObjectVanished:
        pass


async def keep_device(bus: BluezBus, path: str, timeout_s: float) -> None:
    """Device1.Trusted = true: BlueZ then never drops the object as a temporary device.
    Used when FFE1 is wedged: removing such a device crashes bluetoothd 5.66 (the real-BlueZ
    tier saw it die ~30 s later, when the temporary object expired; docs/bluez.md fact 16).

    Raises:
        JkError: the typed error of the failed Properties.Set (callers treat it as best effort).
    """
    await bus.call(
        path,
        "org.freedesktop.DBus.Properties",
        "Set",
        "ssv",
        [DEVICE, "Trusted", Variant("b", True)],
        stage="subscribe",
        timeout_s=timeout_s,
    )
    log.info("marked Trusted (BlueZ keeps the device object) path=%s", path)
