"""GATT: picking the JK characteristics by Flags, the model-number read, command writes and the
two notification mechanisms (AcquireNotify fd, StartNotify + PropertiesChanged(Value))."""

from __future__ import annotations

import asyncio
import logging
import os
import select
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from dbus_fast import Message, Variant

from bluez_jk.bluez.bus import PROPERTIES, BluezBus, properties_changed_rule
from bluez_jk.bluez.errors import LinkLost, StaleCache
from bluez_jk.bluez.paths import device_of, is_under
from bluez_jk.bluez.properties import CHARACTERISTIC, SERVICE, ManagedObjects
from bluez_jk.errors import JkError

# Named here too while reader.py imports it from this module.
from bluez_jk.names import NotifyMode as NotifyMode  # noqa: PLC0414 - re-export

log = logging.getLogger(__name__)


def uuid16(short: int) -> str:
    return f"0000{short:04x}-0000-1000-8000-00805f9b34fb"


JK_SERVICE = uuid16(0xFFE0)
JK_CHAR = uuid16(0xFFE1)
DEVICE_INFO_SERVICE = uuid16(0x180A)
MODEL_NUMBER = uuid16(0x2A24)

ChunkHandler = Callable[[bytes], None]
EndHandler = Callable[[], None]


@dataclass(frozen=True)
class JkChars:
    notify: str
    write: str
    model_number: str | None
    notify_flags: tuple[str, ...]


def _services(objects: ManagedObjects, device_obj: str, uuid: str) -> list[str]:
    return sorted(
        path
        for path, ifaces in objects.items()
        if SERVICE in ifaces
        and is_under(path, device_obj)
        and ifaces[SERVICE].get("UUID", "").lower() == uuid
    )


def _chars(objects: ManagedObjects, service: str, uuid: str) -> list[tuple[str, tuple[str, ...]]]:
    found = []
    for path, ifaces in sorted(objects.items()):
        props = ifaces.get(CHARACTERISTIC)
        if props is None or props.get("Service") != service:
            continue
        if props.get("UUID", "").lower() == uuid:
            found.append((path, tuple(str(f) for f in props.get("Flags", []))))
    return found


def find_jk_chars(objects: ManagedObjects, device_obj: str) -> JkChars:
    """Inside FFE0, the FFE1 with `notify` is the source and the FFE1 with a write flag the sink;
    on the split-layout module they are two objects with the same UUID (docs/protocol.md 1.2).

    Raises:
        StaleCache: no FFE0 service with a notify and a write FFE1 under the device: BlueZ's
            GATT cache is stale (docs/bluez.md fact 7).
    """
    notify: tuple[str, tuple[str, ...]] | None = None
    write: str | None = None
    for service in _services(objects, device_obj, JK_SERVICE):
        for path, flags in _chars(objects, service, JK_CHAR):
            if notify is None and ("notify" in flags or "indicate" in flags):
                notify = (path, flags)
            if write is None and ("write-without-response" in flags or "write" in flags):
                write = path
    if notify is None or write is None:
        raise StaleCache(
            "service FFE0 with notify and write FFE1 characteristics not found", stage="resolve"
        )
    model: str | None = None
    for service in _services(objects, device_obj, DEVICE_INFO_SERVICE):
        for path, flags in _chars(objects, service, MODEL_NUMBER):
            if "read" in flags:
                model = path
                break
    return JkChars(notify=notify[0], write=write, model_number=model, notify_flags=notify[1])


async def read_model_number(bus: BluezBus, path: str, timeout_s: float) -> str | None:
    """0x2A24 as text, or None when the read fails (the split-layout module has no 0x180A).

    Raises:
        LinkLost: the link dropped; every other failure gives None.
    """
    try:
        reply = await bus.call(
            path, CHARACTERISTIC, "ReadValue", "a{sv}", [{}], stage="resolve", timeout_s=timeout_s
        )
    except LinkLost:
        raise
    except JkError as err:
        log.info("model number read failed path=%s error=%s", path, err)
        return None
    raw = bytes(reply.body[0])
    return raw.split(b"\0", 1)[0].decode("ascii", "replace").strip() or None


async def write_command(bus: BluezBus, path: str, data: bytes, timeout_s: float) -> None:
    """One command, as ATT Write Command: JK modules take nothing else (docs/protocol.md 1.4).

    Raises:
        LinkLost: the link dropped (NotConnected, ATT error 0x0e).
        InProgress: a write is acquired by another client (NotPermitted "Write acquired").
        AuthenticationRequired: the module wants pairing (NotAuthorized, "not paired").
        ObjectVanished: the characteristic is gone.
        BusError: any other error reply (stage "write" has no default of its own).
        BusLost, Timeout: as `BluezBus.call`.
    """
    await bus.call(
        path,
        CHARACTERISTIC,
        "WriteValue",
        "aya{sv}",
        [data, {"type": Variant("s", "command")}],
        stage="write",
        timeout_s=timeout_s,
    )


def _hung_up(fd: int) -> bool:
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLHUP)
    return any(event & (select.POLLHUP | select.POLLERR) for _, event in poller.poll(0))


@asynccontextmanager
async def acquired_notify(
    bus: BluezBus, path: str, on_chunk: ChunkHandler, on_end: EndHandler, timeout_s: float
) -> AsyncIterator[int]:
    """AcquireNotify: one SOCK_SEQPACKET datagram per notification. Yields the MTU; the fd is
    closed on exit, which is how BlueZ learns that the session ended (docs/bluez.md 4.5).

    Raises:
        AcquireRefused: AcquireNotify cannot be used here (NotSupported, a StartNotify session
            exists, an old BlueZ without the method): the policy falls back to StartNotify.
        NotifyAcquired: another client holds the notify fd (NotPermitted "Notify acquired").
        AuthenticationRequired: the module wants pairing.
        LinkLost: the link dropped (NotConnected).
        ObjectVanished: the characteristic is gone.
        BusError: any other error reply (the default of stage "subscribe").
        BusLost, Timeout: as `BluezBus.call`.
    """
    reply = await bus.call(
        path, CHARACTERISTIC, "AcquireNotify", "a{sv}", [{}], stage="subscribe", timeout_s=timeout_s
    )
    fds = list(reply.unix_fds)
    index, mtu = int(reply.body[0]), int(reply.body[1])
    fd = fds.pop(index)
    for extra in fds:
        os.close(extra)
    loop = asyncio.get_running_loop()
    ended = False

    def readable() -> None:
        nonlocal ended
        while not ended:
            try:
                # >= 512 bytes: a shorter buffer truncates a datagram (docs/bluez.md 4.5).
                chunk = os.read(fd, 1024)
            except BlockingIOError:
                return
            except OSError as err:
                log.info("notify fd error path=%s error=%s", path, err)
                chunk = b""
                ended = True
            if chunk:
                on_chunk(chunk)
                continue
            # An empty datagram is a valid notification; EOF comes with POLLHUP.
            if ended or _hung_up(fd):
                ended = True
                loop.remove_reader(fd)
                on_end()
            return

    try:
        # Received fds are not close-on-exec (docs/bluez.md 4.5); a forked child would keep
        # "Notify acquired" alive.
        os.set_inheritable(fd, False)
        os.set_blocking(fd, False)
        loop.add_reader(fd, readable)
        log.debug("notify acquired path=%s mtu=%d", path, mtu)
        yield mtu
    finally:
        loop.remove_reader(fd)
        os.close(fd)


@asynccontextmanager
async def started_notify(
    bus: BluezBus, path: str, on_chunk: ChunkHandler, timeout_s: float
) -> AsyncIterator[None]:
    """StartNotify: notifications arrive as PropertiesChanged(Value), one signal per chunk.
    The session belongs to our bus connection and outlives disconnects, so it is always
    stopped explicitly (docs/bluez.md fact 8).

    Raises:
        NotifyAcquired: another client holds the notify fd (NotPermitted "Notify acquired").
        AuthenticationRequired: the module wants pairing ("Failed to register notify
            session" on JK firmware >= 19.30, docs/protocol.md 1.6).
        InProgress: a StartNotify of ours is still pending.
        LinkLost: the link dropped (NotConnected).
        ObjectVanished: the characteristic is gone.
        BusError: a match rule refused, or any other error reply (stage "subscribe").
        BusLost, Timeout: as `BluezBus.call`.
    """

    def on_signal(message: Message) -> None:
        # One call per signal of every notification: header checks, then only the Value
        # variant is looked at (no unpacking of the whole body).
        if message.path != path or message.member != "PropertiesChanged":
            return
        body = message.body
        if message.interface == PROPERTIES and body[0] == CHARACTERISTIC:
            value = body[1].get("Value")
            if value is not None:
                on_chunk(bytes(value.value))

    # The device's namespace rule, kept for the connection's life (shared with watch_device).
    rules = [properties_changed_rule(namespace=device_of(path))]
    async with bus.signals(rules, on_signal, keep=True):
        # Stopped on every exit but a refusal: a StartNotify abandoned on our side (timeout,
        # cancellation) may still start a session in bluetoothd.
        started = True
        try:
            try:
                await bus.call(
                    path, CHARACTERISTIC, "StartNotify", stage="subscribe", timeout_s=timeout_s
                )
            except JkError as err:
                started = err.dbus_error is None
                raise
            yield
        finally:
            if started and bus.connected:
                try:
                    await bus.call(
                        path, CHARACTERISTIC, "StopNotify", stage="cleanup", timeout_s=timeout_s
                    )
                except JkError as err:
                    log.info("StopNotify failed path=%s error=%s", path, err)
