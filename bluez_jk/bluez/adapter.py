"""Adapters: choosing one, discovery sessions, finding a device that BlueZ has not cached, and
listing what is nearby (jk-ble-scan)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from dbus_fast import Message, Variant

from bluez_jk.bluez.bus import (
    OBJECT_MANAGER,
    PROPERTIES,
    BluezBus,
    interfaces_rule,
    properties_changed_rule,
    signal_body,
)
from bluez_jk.bluez.paths import BLUEZ_ROOT, adapter_name, adapter_path, is_under
from bluez_jk.bluez.properties import ADAPTER, DEVICE, Device1, ManagedObjects
from bluez_jk.errors import AdapterNotFound, BusError, InProgress, JkError

log = logging.getLogger(__name__)

JK_SERVICE_UUID = "0000ffe0-0000-1000-8000-00805f9b34fb"
# 0x0B65 is the common JK company id, 0x4B4A ("JK") seen on a BD4A8S (docs/protocol.md 1.1).
JK_MANUFACTURER_IDS = frozenset({0x0B65, 0x4B4A})


def resolve_adapter(objects: ManagedObjects, adapter: str | None) -> str:
    """The object path of `hciN`, or of the default adapter: the first powered one that can be
    central (what Bleak picks too), else the first one at all.

    Raises:
        AdapterNotFound: no adapter `hciN` (the message lists those present), or none at all.
    """
    adapters = sorted(
        (path, ifaces[ADAPTER])
        for path, ifaces in objects.items()
        if ADAPTER in ifaces and is_under(path, BLUEZ_ROOT)
    )
    if adapter is not None:
        wanted = adapter_path(adapter)
        for path, _props in adapters:
            if path == wanted:
                return path
        known = ", ".join(adapter_name(p) for p, _ in adapters) or "none"
        raise AdapterNotFound(f"no adapter {adapter} (present: {known})", stage="adapter")
    for path, props in adapters:
        roles = props.get("Roles")
        if props.get("Powered", True) and (roles is None or "central" in roles):
            return path
    if adapters:
        return adapters[0][0]
    raise AdapterNotFound("no Bluetooth adapter", stage="adapter")


def require_powered(objects: ManagedObjects, adapter_obj: str) -> None:
    """A read needs the adapter on. Checked up front, from the objects at hand, because what
    BlueZ answers a Connect on a powered-off adapter depends on its version and bearer, and a
    powered-off adapter is somebody's decision: the gateway must not take it for a wedged one
    (docs/bluez.md 2.6).

    Raises:
        AdapterNotFound: `Powered` is false.
    """
    if objects.get(adapter_obj, {}).get(ADAPTER, {}).get("Powered", True) is False:
        raise AdapterNotFound(
            f"adapter {adapter_name(adapter_obj)} is powered off (bluetoothctl power on)",
            stage="adapter",
        )


def discovery_filter(pattern: str | None) -> dict[str, Variant]:
    options = {"Transport": Variant("s", "le"), "DuplicateData": Variant("b", False)}
    if pattern is not None:
        options["Pattern"] = Variant("s", pattern)
    return options


@asynccontextmanager
async def discovery(
    bus: BluezBus, adapter_obj: str, *, pattern: str | None, timeout_s: float
) -> AsyncIterator[None]:
    """A discovery session of this bus connection, stopped and its filter cleared on exit.

    InProgress "Operation already in progress" on StartDiscovery means our own start/stop is
    still pending or the kernel refused the scan (docs/bluez.md 2.3): retry with backoff.

    Raises:
        InProgress: StartDiscovery still refused when `timeout_s` runs out.
        AdapterNotFound: the adapter is not powered (NotReady) or gone.
        BusError: any other error reply (stage "discover" has no default of its own).
        BusLost, Timeout: as `BluezBus.call`.
    """
    try:
        await _set_filter(bus, adapter_obj, discovery_filter(pattern), timeout_s)
    except BusError as err:
        if pattern is None or err.dbus_error != "org.bluez.Error.InvalidArguments":
            raise
        # BlueZ < 5.54 has no Pattern key.
        await _set_filter(bus, adapter_obj, discovery_filter(None), timeout_s)
    started = False
    try:
        delay_s = 0.25
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + timeout_s
        while True:
            # Counted as started until refused: a StartDiscovery abandoned on our side
            # (timeout, cancellation) may still start a session of this connection.
            started = True
            try:
                await bus.call(
                    adapter_obj, ADAPTER, "StartDiscovery", stage="discover", timeout_s=timeout_s
                )
                break
            except JkError as err:
                started = err.dbus_error is None
                if not isinstance(err, InProgress) or loop.time() + delay_s > give_up_at:
                    raise
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, 1.0)
        yield
    finally:
        await _end_discovery(bus, adapter_obj, started)


async def _end_discovery(bus: BluezBus, adapter_obj: str, started: bool) -> None:
    """Stop our session and clear our filter. A session left running lives as long as our bus
    connection, which a Reader keeps, so a rejected stop is retried."""
    if started:
        await _stop_discovery(bus, adapter_obj)
    if bus.connected:
        try:
            await _set_filter(bus, adapter_obj, {}, 3.0)
        except JkError as err:
            log.info("clearing the discovery filter failed: %s", err)


async def _set_filter(
    bus: BluezBus, adapter_obj: str, filter_: dict[str, Variant], timeout_s: float
) -> None:
    """SetDiscoveryFilter for this bus connection; `{}` clears it."""
    await bus.call(
        adapter_obj,
        ADAPTER,
        "SetDiscoveryFilter",
        "a{sv}",
        [filter_],
        stage="discover",
        timeout_s=timeout_s,
    )


async def _stop_discovery(bus: BluezBus, adapter_obj: str, attempts: int = 3) -> None:
    for attempt in range(attempts):
        if not bus.connected:
            return
        try:
            await bus.call(adapter_obj, ADAPTER, "StopDiscovery", stage="discover", timeout_s=3.0)
        except InProgress as err:
            # Our start/stop is still pending, or the kernel rejected the stop; in the latter
            # case BlueZ < 5.88 believes it still scans until a Start+Stop pair (bluez#807).
            log.info("StopDiscovery rejected (try %d): %s", attempt + 1, err)
            await asyncio.sleep(0.1 * (attempt + 1))
            with contextlib.suppress(JkError):
                await bus.call(
                    adapter_obj, ADAPTER, "StartDiscovery", stage="discover", timeout_s=3.0
                )
        except JkError as err:
            log.info("StopDiscovery failed: %s", err)
            return
        else:
            return
    log.warning("discovery could not be stopped on %s", adapter_name(adapter_obj))


async def discover_device(
    bus: BluezBus, adapter_obj: str, device_obj: str, address: str, timeout_s: float
) -> bool:
    """Run discovery until BlueZ reports the device (InterfacesAdded, or an RSSI update of a
    cached object), at most `timeout_s`. True when seen, False when not (not an error here:
    the caller decides that the device was not found).

    Raises:
        InProgress, AdapterNotFound, BusError, BusLost, Timeout: as `discovery`.
    """
    seen = asyncio.Event()

    def on_signal(message: Message) -> None:
        added = signal_body(message, OBJECT_MANAGER, "InterfacesAdded")
        if added is not None and added[0] == device_obj and DEVICE in added[1]:
            seen.set()
            return
        changed = signal_body(message, PROPERTIES, "PropertiesChanged")
        if (
            changed is not None
            and message.path == device_obj
            and changed[0] == DEVICE
            and "RSSI" in changed[1]
        ):
            seen.set()

    rules = [
        interfaces_rule("InterfacesAdded", adapter_obj),
        properties_changed_rule(path=device_obj),
    ]
    log.info("discovering address=%s adapter=%s", address, adapter_name(adapter_obj))
    async with (
        bus.signals(rules, on_signal),
        discovery(bus, adapter_obj, pattern=address, timeout_s=timeout_s),
    ):
        # The object may have appeared after the caller looked and before our match rules
        # were in place (another program's scan); it would then only show up on an RSSI move.
        objects = await bus.managed_objects(stage="discover", timeout_s=timeout_s)
        if DEVICE in objects.get(device_obj, {}):
            return True
        try:
            async with asyncio.timeout(timeout_s):
                await seen.wait()
        except TimeoutError:
            return False
    return True


async def set_powered(bus: BluezBus, adapter_obj: str, powered: bool, timeout_s: float) -> None:
    """Adapter1.Powered. bluetoothd answers the Set once the controller has switched
    (docs/bluez.md 2.6), so the reply is the end of the step.

    Raises:
        AdapterNotFound: the adapter is gone (UnknownObject) or refused (NotReady).
        BusLost, Timeout, JkError: as `BluezBus.call`.
    """
    await bus.call(
        adapter_obj,
        PROPERTIES,
        "Set",
        "ssv",
        [ADAPTER, "Powered", Variant("b", powered)],
        stage="adapter",
        timeout_s=timeout_s,
    )
    log.info("adapter powered=%s adapter=%s", powered, adapter_name(adapter_obj))


@dataclass
class ScanEntry:
    address: str
    name: str | None
    rssi: int | None
    looks_like_jk: bool


def looks_like_jk(props: Device1) -> bool:
    uuids = [str(u).lower() for u in props.get("UUIDs", [])]
    manufacturers = props.get("ManufacturerData") or {}
    return JK_SERVICE_UUID in uuids or any(int(k) in JK_MANUFACTURER_IDS for k in manufacturers)


async def scan(bus: BluezBus, adapter_obj: str, duration_s: float) -> list[ScanEntry]:
    """Every device that advertised during `duration_s` of discovery on this adapter.

    Raises:
        InProgress, AdapterNotFound, BusError, BusLost, Timeout: as `discovery`.
    """
    props_by_path: dict[str, Device1] = {}
    seen: set[str] = set()

    def on_signal(message: Message) -> None:
        added = signal_body(message, OBJECT_MANAGER, "InterfacesAdded")
        if added is not None and DEVICE in added[1] and is_under(added[0], adapter_obj):
            props_by_path.setdefault(added[0], {}).update(added[1][DEVICE])
            seen.add(added[0])
            return
        changed = signal_body(message, PROPERTIES, "PropertiesChanged")
        path = message.path or ""
        if changed is not None and changed[0] == DEVICE and is_under(path, adapter_obj):
            props_by_path.setdefault(path, {}).update(changed[1])
            if "RSSI" in changed[1]:
                seen.add(path)

    rules = [
        interfaces_rule("InterfacesAdded", adapter_obj),
        properties_changed_rule(namespace=adapter_obj),
    ]
    async with bus.signals(rules, on_signal):
        objects = await bus.managed_objects(stage="discover")
        for path, ifaces in objects.items():
            if DEVICE in ifaces and is_under(path, adapter_obj):
                merged = ifaces[DEVICE].copy()
                merged.update(props_by_path.get(path, {}))
                props_by_path[path] = merged
        async with discovery(bus, adapter_obj, pattern=None, timeout_s=5.0):
            await asyncio.sleep(duration_s)  # scanning for a fixed window is the point here
    entries = []
    for path in sorted(seen):
        props = props_by_path[path]
        rssi = props.get("RSSI")
        entries.append(
            ScanEntry(
                address=props.get("Address", ""),
                name=props.get("Name"),
                rssi=rssi,
                looks_like_jk=looks_like_jk(props),
            )
        )
    return entries
