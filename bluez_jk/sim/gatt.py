"""GATT services, characteristics and descriptors of one device (docs/bluez.md 4, 6.4, 6.5)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from dbus_fast import Variant

from bluez_jk.sim import errors
from bluez_jk.sim.dispatch import Call, DBusObject, Dispatcher, Interface, Method, Reply
from bluez_jk.sim.eventlog import EventLog
from bluez_jk.sim.faults import FaultSet
from bluez_jk.sim.versions import BluezVersion, acquire_failure_wedges

log = logging.getLogger(__name__)

SERVICE_IFACE = "org.bluez.GattService1"
CHAR_IFACE = "org.bluez.GattCharacteristic1"
DESC_IFACE = "org.bluez.GattDescriptor1"
_CCCD = 0x2902
# Services bluetoothd claims for its own profiles are exported read-only (ExportClaimedServices).
_CLAIMED = {0x1800, 0x1801, 0x180A, 0x180F}

LayoutName = Literal["old", "new", "stale"]


_SMP_TIMEOUT_S = 30.0


def uuid128(short: int) -> str:
    return f"0000{short:04x}-0000-1000-8000-00805f9b34fb"


class GattHost(Protocol):
    """What a characteristic needs from its device."""

    address: str
    adapter_name: str
    dispatcher: Dispatcher
    faults: FaultSet
    events: EventLog
    bluez: BluezVersion

    @property
    def link_up(self) -> bool: ...
    @property
    def disconnecting(self) -> bool: ...
    @property
    def mtu(self) -> int: ...
    def on_write(self, data: bytes) -> None: ...
    def on_subscribed(self) -> None: ...
    def pairing_refuses(self) -> bool: ...


@dataclass
class CharSpec:
    uuid: int
    handle: int  # declaration handle; the value handle is handle + 1
    flags: tuple[str, ...]
    value: bytes = b""
    cccd: int | None = None  # descriptor handle of the CCCD


@dataclass
class ServiceSpec:
    uuid: int
    handle: int
    chars: list[CharSpec] = field(default_factory=list)


def layout(name: LayoutName) -> list[ServiceSpec]:
    """Handles as seen by the app and ESPHome (docs/protocol.md 1.2); paths follow them."""
    notify_rw = ("write-without-response", "write", "notify")
    if name == "new":
        return [
            ServiceSpec(
                0xFFE0,
                0x0001,
                [
                    CharSpec(0xFFE1, 0x0002, ("write-without-response", "write")),
                    CharSpec(0xFFE1, 0x0004, ("read", "notify"), cccd=0x0006),
                ],
            )
        ]
    if name == "stale":
        # What a previous firmware's cache might hold: no FFE0 at all (docs/protocol.md 1.7).
        return [ServiceSpec(0x1801, 0x0001, [CharSpec(0x2A05, 0x0002, ("indicate",), cccd=0x0004)])]
    return [
        ServiceSpec(
            0x180A,
            0x0008,
            [
                CharSpec(0x2A24, 0x0009, ("read",), b"BK-BLE-1.0"),
                CharSpec(0x2A25, 0x000B, ("read",), b"1.0.0.0-LE"),
                CharSpec(0x2A27, 0x000D, ("read",), b"1.0.0"),
            ],
        ),
        ServiceSpec(
            0xFFE0,
            0x0010,
            [
                CharSpec(0xFFE1, 0x0011, notify_rw, cccd=0x0013),
                CharSpec(0xFFE2, 0x0014, ("write-without-response",)),
            ],
        ),
    ]


class AcquiredSocket:
    """Our end of an AcquireNotify / AcquireWrite socketpair (docs/bluez.md 4.5, 4.9)."""

    def __init__(self, ours: socket.socket, on_closed: Callable[[str], None]) -> None:
        self.sock = ours
        self._on_closed = on_closed
        self._closed = False
        ours.setblocking(False)
        asyncio.get_running_loop().add_reader(ours.fileno(), self._readable)
        self.on_data: Callable[[bytes], None] | None = None

    def _readable(self) -> None:
        try:
            data = self.sock.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            # BlueZ forwards anything written to the fd as a Write Without Response.
            if self.on_data is not None:
                self.on_data(data)
            return
        self.close("fd_closed")  # EOF: the holder closed its fd

    def send(self, chunk: bytes) -> None:
        if self._closed:
            return
        try:
            self.sock.send(chunk)
        except BlockingIOError:
            pass  # a full socket drops the notification, as notify_io_cb does
        except OSError:
            self.close("fd_closed")  # EPIPE / ECONNRESET: the holder went away

    def shutdown(self, reason: str) -> None:
        """Our side ends it (disconnect, StopNotify): the holder reads EOF with POLLHUP."""
        if not self._closed:
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)
        self.close(reason)

    def close(self, reason: str) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(ValueError, OSError):
            asyncio.get_running_loop().remove_reader(self.sock.fileno())
        self.sock.close()
        self._on_closed(reason)


class Characteristic:
    def __init__(self, host: GattHost, service_path: str, spec: CharSpec, claimed: bool) -> None:
        self.host = host
        self.spec = spec
        self.service_path = service_path
        self.path = f"{service_path}/char{spec.handle:04x}"
        self.claimed = claimed
        self.value = b""
        self.sessions: set[str] = set()  # unique names with a StartNotify session
        self.notifying = False
        self.acquired: AcquiredSocket | None = None
        self.foreign: socket.socket | None = None  # the notify-acquired fault's other end
        self.write_acquired: AcquiredSocket | None = None
        # A failed AcquireNotify on BlueZ < 5.84: "Notify acquired" with no holder, until
        # bluetoothd restarts (docs/bluez.md fact 16).
        self.wedged = False
        self._request_pending = False
        self.descriptor: Descriptor | None = None
        if spec.cccd is not None:
            self.descriptor = Descriptor(self, spec.cccd)

    @property
    def can_notify(self) -> bool:
        return "notify" in self.spec.flags or "indicate" in self.spec.flags

    def dbus_object(self) -> DBusObject:
        types = {
            "UUID": "s",
            "Service": "o",
            "Value": "ay",
            "Flags": "as",
            "Notifying": "b",
            "NotifyAcquired": "b",
            "WriteAcquired": "b",
            "MTU": "q",
            "Handle": "q",
        }
        m = {
            "ReadValue": Method("a{sv}", "ay", self._read_value, ("options",), ("value",)),
            "WriteValue": Method("aya{sv}", "", self._write_value, ("value", "options")),
            "StartNotify": Method("", "", self._start_notify),
            "StopNotify": Method("", "", self._stop_notify),
            "AcquireNotify": Method(
                "a{sv}", "hq", self._acquire_notify, ("options",), ("fd", "mtu")
            ),
            "AcquireWrite": Method("a{sv}", "hq", self._acquire_write, ("options",), ("fd", "mtu")),
        }
        iface = Interface(CHAR_IFACE, types, self._props, m)
        return DBusObject(self.path, {CHAR_IFACE: iface})

    def _props(self) -> dict[str, Any]:
        flags = self.spec.flags
        props: dict[str, Any] = {
            "UUID": uuid128(self.spec.uuid),
            "Service": self.service_path,
            "Value": self.value,
            "Flags": list(flags),
        }
        if self.can_notify:
            props["Notifying"] = self.notifying
        if "notify" in flags:
            props["NotifyAcquired"] = self.held
        if "write-without-response" in flags:
            props["WriteAcquired"] = self.write_acquired is not None
        if self.host.link_up:
            props["MTU"] = self.host.mtu
        props["Handle"] = self.spec.handle + 1
        return props

    def _changed(self, *names: str) -> None:
        self.host.dispatcher.changed(self.path, CHAR_IFACE, *names)

    # ---- methods ------------------------------------------------------------------------

    async def _read_value(self, _call: Call) -> Reply:
        if not self.host.link_up:
            raise errors.read_request_failed()  # 5.66's text (the real-BlueZ probe)
        if "read" not in self.spec.flags:
            raise errors.read_not_permitted()
        self.value = self.spec.value
        self.host.dispatcher.emit_value(self.path, CHAR_IFACE, "ay", self.value)
        return Reply("ay", [self.value])

    async def _write_value(self, call: Call) -> Reply | None:
        data: bytes = call.body[0]
        options: dict[str, Variant] = call.body[1]
        kind = options["type"].value if "type" in options else None
        offset = options["offset"].value if "offset" in options else 0
        if kind not in (None, "command", "request", "reliable") or (kind == "command" and offset):
            raise errors.not_supported()
        if not self.host.link_up:
            raise errors.no_att_transport()  # 5.66's text (the real-BlueZ probe)
        if self.claimed:
            raise errors.not_authorized()
        if self.write_acquired is not None:
            raise errors.write_acquired()
        as_request = kind in ("request", "reliable") or (
            kind is None and "write-without-response" not in self.spec.flags
        )
        if as_request:
            if self._request_pending:
                raise errors.in_progress()
            self._request_pending = True
            try:
                await asyncio.sleep(0.001)  # the ATT Write Response round trip
            finally:
                self._request_pending = False
            if not self.host.link_up:
                raise errors.att_error(0x0E)
        self.host.events.record(
            "write",
            self.host.address,
            self.host.adapter_name,
            size=len(data),
            code=data[4] if len(data) > 4 else None,
            sender=call.sender,
            type=kind or "auto",
        )
        if self.spec.uuid == 0xFFE1:  # the BMS listens on FFE1 only; FFE2 is unused (1.2)
            self.host.on_write(bytes(data))
        return None

    @property
    def held(self) -> bool:
        return self.acquired is not None or self.foreign is not None or self.wedged

    async def _refused_cccd(self) -> bool:
        """The BMS answers the CCCD write with Insufficient Authentication (the auth-required
        fault, or a `pairing` BMS on a link that is not paired). BlueZ then raises the link's
        security, i.e. pairs on its own; without an agent that cannot finish, and the call has
        no answer until SMP gives up (30 s)."""
        if not self.host.link_up:
            return False
        if self.host.pairing_refuses():
            why = "not_paired"
        elif self.host.faults.fire("auth-required", self.host.address):
            why = "fault"
        else:
            return False
        self.host.events.record(
            "cccd_refused", self.host.address, self.host.adapter_name, path=self.path, why=why
        )
        return True

    async def _start_notify(self, call: Call) -> Reply | None:
        if not self.can_notify:
            raise errors.not_supported()
        if self.held:
            raise errors.notify_acquired()
        if self.host.disconnecting:
            raise errors.not_connected()
        if call.sender in self.sessions:
            return None
        if not self.host.link_up:
            # 5.66 on a device without a link (the real-BlueZ probe); sessions started on a
            # link still outlive a disconnect (fact 8).
            raise errors.notify_session_failed()
        if await self._refused_cccd():
            await asyncio.sleep(_SMP_TIMEOUT_S)
            raise errors.att_error(0x05)
        self.sessions.add(call.sender)
        self._log_notify("notify_start", call.sender, "start")
        if self.host.link_up:
            self.arm()
            self.host.on_subscribed()
        return None

    def arm(self) -> None:
        """The CCCD is written: Notifying turns true (first session, or re-armed on reconnect)."""
        if self.sessions and not self.notifying:
            self.notifying = True
            self._changed("Notifying")

    async def _stop_notify(self, call: Call) -> Reply | None:
        if self.wedged and call.sender not in self.sessions:
            raise errors.no_notify_session()
        if self.acquired is not None or self.foreign is not None:
            # BlueZ >= 5.51: any caller's StopNotify releases an acquired notify.
            self.release_acquired(reason="stop_notify")
            return None
        if call.sender not in self.sessions:
            raise errors.no_notify_session()
        self.end_session(call.sender, reason="stop_notify")
        return None

    def end_session(self, sender: str, reason: str) -> None:
        if sender not in self.sessions:
            return
        self.sessions.discard(sender)
        self._log_notify("notify_stop", sender, "start", reason)
        if not self.sessions and self.notifying:
            self.notifying = False
            self._changed("Notifying")

    async def _acquire_notify(self, call: Call) -> Reply:
        if not self.host.link_up:
            raise errors.not_connected_failed()
        if self.held:
            raise errors.notify_acquired()
        if self.sessions:
            raise errors.in_progress()
        if "notify" not in self.spec.flags:
            raise errors.not_supported()
        if await self._refused_cccd():
            if acquire_failure_wedges(self.host.bluez):
                self.wedged = True
                self._changed("NotifyAcquired")
                self._log_notify("notify_wedged", call.sender, "acquire")
                await asyncio.Future()  # never answered
            raise errors.att_error(0x05)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        holder = AcquiredSocket(ours, lambda reason: self._acquired_closed(call.sender, reason))
        holder.on_data = self.host.on_write
        self.acquired = holder
        self._changed("NotifyAcquired")
        self._log_notify("notify_start", call.sender, "acquire")
        self.host.on_subscribed()
        # Our copy of the client's end is closed only once the reply has left (6.5).
        return Reply("hq", [0, self.host.mtu], [theirs.fileno()], on_sent=theirs.close)

    async def _acquire_write(self, call: Call) -> Reply:
        if not self.host.link_up:
            raise errors.not_connected_failed()
        if self.write_acquired is not None:
            raise errors.write_acquired()
        if "write-without-response" not in self.spec.flags:
            raise errors.not_supported()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        holder = AcquiredSocket(ours, self._write_released)
        if self.spec.uuid == 0xFFE1:
            holder.on_data = self.host.on_write  # each datagram is one Write Without Response
        self.write_acquired = holder
        self._changed("WriteAcquired")
        self.host.events.record(
            "write_acquired", self.host.address, self.host.adapter_name,
            path=self.path, sender=call.sender,
        )  # fmt: skip
        return Reply("hq", [0, self.host.mtu], [theirs.fileno()], on_sent=theirs.close)

    def _write_released(self, _reason: str) -> None:
        self.write_acquired = None
        self._changed("WriteAcquired")

    def _acquired_closed(self, sender: str, reason: str) -> None:
        self.acquired = None
        self._changed("NotifyAcquired")
        self._log_notify("notify_stop", sender, "acquire", reason)

    def _log_notify(self, event: str, sender: str, mode: str, reason: str | None = None) -> None:
        """A notify session began or ended: the log tests use to prove cleanup."""
        extra = {} if reason is None else {"reason": reason}
        self.host.events.record(
            event,
            self.host.address,
            self.host.adapter_name,
            path=self.path,
            sender=sender,
            mode=mode,
            **extra,
        )

    def release_acquired(self, reason: str) -> None:
        if self.acquired is not None:
            self.acquired.shutdown(reason)
        if self.foreign is not None:
            self.foreign.close()
            self.foreign = None
            self._changed("NotifyAcquired")
            self._log_notify("notify_stop", "foreign", "acquire", reason)

    def hold_foreign(self) -> None:
        """The notify-acquired fault: another program holds the notify socket."""
        if self.acquired is None and self.foreign is None and "notify" in self.spec.flags:
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            ours.close()
            self.foreign = theirs
            self._changed("NotifyAcquired")
            self._log_notify("notify_start", "foreign", "acquire")

    # ---- data path --------------------------------------------------------------------------

    def notify(self, chunk: bytes) -> None:
        if not self.host.link_up:
            return
        if self.acquired is not None:
            # While acquired, Value and its signal stay untouched (4.5).
            self.acquired.send(chunk)
        elif self.notifying:
            self.value = chunk
            self.host.dispatcher.emit_value(self.path, CHAR_IFACE, "ay", chunk)

    def link_down(self, reason: str = "disconnect") -> None:
        self.release_acquired(reason=reason)
        if self.write_acquired is not None:
            self.write_acquired.shutdown(reason)

    def mtu_changed(self) -> None:
        self._changed("MTU")


class Descriptor:
    def __init__(self, char: Characteristic, handle: int) -> None:
        self.char = char
        self.path = f"{char.path}/desc{handle:04x}"
        self.handle = handle

    def dbus_object(self) -> DBusObject:
        types = {"UUID": "s", "Characteristic": "o", "Value": "ay", "Handle": "q"}
        m = {
            "ReadValue": Method("a{sv}", "ay", self._read_value, ("options",), ("value",)),
            "WriteValue": Method("aya{sv}", "", self._write_value, ("value", "options")),
        }
        return DBusObject(self.path, {DESC_IFACE: Interface(DESC_IFACE, types, self._props, m)})

    def _bits(self) -> bytes:
        on = self.char.notifying or self.char.acquired is not None
        return bytes([1 if on else 0, 0])

    def _props(self) -> dict[str, Any]:
        return {
            "UUID": uuid128(_CCCD),
            "Characteristic": self.char.path,
            "Value": b"",
            "Handle": self.handle,
        }

    async def _read_value(self, _call: Call) -> Reply:
        if not self.char.host.link_up:
            raise errors.not_connected_failed()
        return Reply("ay", [self._bits()])

    async def _write_value(self, _call: Call) -> Reply:
        # The CCCD is driven only through StartNotify/StopNotify/AcquireNotify (4.1).
        raise errors.write_not_permitted()


class Service:
    def __init__(self, host: GattHost, device_path: str, spec: ServiceSpec) -> None:
        self.spec = spec
        self.device_path = device_path
        self.path = f"{device_path}/service{spec.handle:04x}"
        claimed = spec.uuid in _CLAIMED
        self.chars = [Characteristic(host, self.path, c, claimed) for c in spec.chars]

    def dbus_object(self) -> DBusObject:
        types = {"UUID": "s", "Device": "o", "Primary": "b", "Includes": "ao", "Handle": "q"}
        return DBusObject(self.path, {SERVICE_IFACE: Interface(SERVICE_IFACE, types, self._props)})

    def _props(self) -> dict[str, Any]:
        return {
            "UUID": uuid128(self.spec.uuid),
            "Device": self.device_path,
            "Primary": True,
            "Includes": [],
            "Handle": self.spec.handle,
        }


@dataclass(frozen=True)
class NotifyState:
    """The notify characteristics taken together, as the control interface reports them."""

    notifying: bool
    held: bool
    sessions: list[str]


class GattDatabase:
    """The device's GATT objects as BlueZ caches and exports them."""

    def __init__(self, host: GattHost, device_path: str, name: LayoutName) -> None:
        self.name = name
        self.services = [Service(host, device_path, s) for s in layout(name)]
        self.exported = False

    @property
    def characteristics(self) -> list[Characteristic]:
        return [c for s in self.services for c in s.chars]

    def notify_state(self) -> NotifyState:
        notify = [c for c in self.characteristics if "notify" in c.spec.flags]
        return NotifyState(
            notifying=any(c.notifying for c in notify),
            held=any(c.held for c in notify),
            sessions=sorted({s for c in notify for s in c.sessions}),
        )

    def objects(self) -> list[DBusObject]:
        out: list[DBusObject] = []
        for service in self.services:
            out.append(service.dbus_object())
            for char in service.chars:
                out.append(char.dbus_object())
                if char.descriptor is not None:
                    out.append(char.descriptor.dbus_object())
        return out

    def export(self, dispatcher: Dispatcher) -> None:
        if not self.exported:
            self.exported = True
            for obj in self.objects():
                dispatcher.add(obj)

    def unexport(self, dispatcher: Dispatcher) -> None:
        """Children first: descriptors, characteristics, then services (docs/bluez.md 1.2)."""
        if not self.exported:
            return
        self.exported = False
        for char in self.characteristics:
            char.link_down(reason="removed")
        for obj in reversed(self.objects()):
            dispatcher.remove(obj.path)

    def uuids(self) -> list[str]:
        return sorted(uuid128(s.spec.uuid) for s in self.services)
