"""One low-level D-Bus dispatcher owning the whole object table (docs/bluez.md 6.8).

It answers method calls, Properties Get/GetAll/Set, GetManagedObjects and Introspect itself, so
that the signals and errors look like BlueZ's gdbus layer rather than dbus-fast's services:
InterfacesAdded/Removed from `/` with every interface of an object in one signal,
PropertiesChanged merged per object until idle and flushed before any reply, UnknownObject for
unknown paths, and the caller's unique name available to every method.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from xml.sax.saxutils import quoteattr

from dbus_fast import DBusError, Message, MessageFlag, MessageType, Variant

from bluez_jk.sim import errors
from bluez_jk.sim.outbox import Outbox

log = logging.getLogger(__name__)

PROPERTIES = "org.freedesktop.DBus.Properties"
INTROSPECTABLE = "org.freedesktop.DBus.Introspectable"
OBJECT_MANAGER = "org.freedesktop.DBus.ObjectManager"
PEER = "org.freedesktop.DBus.Peer"
_STANDARD = (INTROSPECTABLE, PROPERTIES)


@dataclass(frozen=True)
class Call:
    sender: str
    path: str
    body: list[Any]
    unix_fds: list[int]
    # Sends the empty method return at once (queued signals first), as bluetoothd does when
    # it answers in the middle of a state change; the dispatcher then sends nothing more.
    answer: Callable[[], None] = field(default=lambda: None, repr=False)


@dataclass
class Reply:
    signature: str = ""
    body: list[Any] = field(default_factory=list)
    unix_fds: list[int] = field(default_factory=list)
    on_sent: Callable[[], None] | None = None  # e.g. close our copy of a passed fd


class _EarlyAnswer:
    """`Call.answer`: the empty method return sent at once, at most once."""

    def __init__(self, msg: Message, send: Callable[[Message, Message, None], None]) -> None:
        self._msg = msg
        self._send = send
        self.sent = False

    def __call__(self) -> None:
        if not self.sent:
            self.sent = True
            self._send(self._msg, Message.new_method_return(self._msg), None)


Handler = Callable[[Call], Awaitable[Reply | None]]


@dataclass(frozen=True)
class Method:
    in_sig: str
    out_sig: str
    handler: Handler
    in_args: tuple[str, ...] = ()
    out_args: tuple[str, ...] = ()


@dataclass
class Interface:
    name: str
    property_types: dict[str, str]  # every property the interface can have -> signature
    values: Callable[[], dict[str, Any]]  # the properties present now, plain values
    methods: dict[str, Method] = field(default_factory=dict)
    signals: dict[str, str] = field(default_factory=dict)
    writable: frozenset[str] = frozenset()
    setter: Callable[[str, Any], Awaitable[None]] | None = None

    def variants(self) -> dict[str, Variant]:
        return {k: Variant(self.property_types[k], v) for k, v in self.values().items()}


@dataclass
class DBusObject:
    path: str
    interfaces: dict[str, Interface]
    managed: bool = True  # listed by ObjectManager (org.bluez objects; not our control object)


def _read_machine_id() -> str:
    machine = Path("/etc/machine-id")
    try:
        return machine.read_text().strip() or "0" * 32
    except OSError:
        return "0" * 32


# Read at import, before any event loop runs: answering GetMachineId must not block the loop.
_MACHINE_ID: Final = _read_machine_id()


class Dispatcher:
    def __init__(self, outbox: Outbox) -> None:
        self.objects: dict[str, DBusObject] = {}
        self._outbox = outbox
        self._pending: dict[tuple[str, str], set[str]] = {}
        self._flush_scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()
        self.name_lost: list[Callable[[str], None]] = []
        root = Interface(OBJECT_MANAGER, {}, dict, signals={"InterfacesAdded": "oa{sa{sv}}"})
        root.methods["GetManagedObjects"] = Method("", "a{oa{sa{sv}}}", self._managed_objects)
        self.objects["/"] = DBusObject("/", {OBJECT_MANAGER: root}, managed=False)

    # ---- object table -------------------------------------------------------------------

    def add(self, obj: DBusObject) -> None:
        self.objects[obj.path] = obj
        if obj.managed:
            self.flush()
            body = {**{i: {} for i in _STANDARD}, **self._interface_dicts(obj)}
            self._signal("/", OBJECT_MANAGER, "InterfacesAdded", "oa{sa{sv}}", [obj.path, body])

    def remove(self, path: str) -> None:
        obj = self.objects.pop(path, None)
        if obj is None:
            return
        for key in [k for k in self._pending if k[0] == path]:
            del self._pending[key]
        if obj.managed:
            self.flush()
            names = [*_STANDARD, *obj.interfaces]
            self._signal("/", OBJECT_MANAGER, "InterfacesRemoved", "oas", [path, names])

    # ---- signals --------------------------------------------------------------------------

    def changed(self, path: str, interface: str, *names: str) -> None:
        """Queue a PropertiesChanged; merged per object until the loop is idle (gdbus)."""
        if path not in self.objects:
            return
        self._pending.setdefault((path, interface), set()).update(names)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self._flush_scheduled = False
        pending, self._pending = self._pending, {}
        for (path, interface), names in pending.items():
            obj = self.objects.get(path)
            if obj is None or interface not in obj.interfaces:
                continue
            iface = obj.interfaces[interface]
            present = iface.variants()
            values = {n: present[n] for n in sorted(names) if n in present}
            gone = sorted(n for n in names if n not in present)
            self._signal(
                path, PROPERTIES, "PropertiesChanged", "sa{sv}as", [interface, values, gone]
            )

    def emit_value(self, path: str, interface: str, signature: str, value: Any) -> None:
        """One PropertiesChanged per notification, never merged (BlueZ's FLUSH flag)."""
        self.flush()
        body = [interface, {"Value": Variant(signature, value)}, []]
        self._signal(path, PROPERTIES, "PropertiesChanged", "sa{sv}as", body)

    def emit(self, path: str, interface: str, member: str, signature: str, body: list[Any]) -> None:
        self.flush()
        self._signal(path, interface, member, signature, body)

    async def call(self, msg: Message) -> Message | None:
        """Call a client's object (an agent) and wait for its reply; queued signals go first."""
        self.flush()
        return await self._outbox.call(msg)

    def send(self, msg: Message) -> None:
        """A message of ours that expects no reply (Agent1.Cancel, Agent1.Release)."""
        self.flush()
        self._outbox.send(msg)

    def _signal(self, path: str, interface: str, member: str, sig: str, body: list[Any]) -> None:
        self._outbox.send(Message.new_signal(path, interface, member, sig, body))

    # ---- incoming messages ----------------------------------------------------------------

    def handle(self, msg: Message) -> bool | None:
        """The bus's message handler: take every method call; watch clients leaving."""
        if msg.message_type is MessageType.SIGNAL:
            if (
                msg.member == "NameOwnerChanged"
                and msg.sender == "org.freedesktop.DBus"
                and len(msg.body) == 3
                and msg.body[0].startswith(":")
                and not msg.body[2]
            ):
                for callback in list(self.name_lost):
                    callback(msg.body[0])
            return None
        if msg.message_type is not MessageType.METHOD_CALL:
            return None
        task = asyncio.get_running_loop().create_task(self._dispatch(msg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _dispatch(self, msg: Message) -> None:
        early = _EarlyAnswer(msg, self._send_reply)
        on_sent: Callable[[], None] | None = None
        try:
            reply = await self._route(msg, early) or Reply()
        except DBusError as err:
            out = Message.new_error(msg, err.type, err.text)
        except asyncio.CancelledError:
            raise
        except Exception as err:  # a simulator bug must still answer the caller
            log.exception("sim: %s.%s on %s failed", msg.interface, msg.member, msg.path)
            out = Message.new_error(msg, "org.freedesktop.DBus.Error.Failed", repr(err))
        else:
            out = Message.new_method_return(msg, reply.signature, reply.body, reply.unix_fds)
            on_sent = reply.on_sent
        if not early.sent:
            self._send_reply(msg, out, on_sent)

    def _send_reply(
        self, call: Message, reply: Message, on_sent: Callable[[], None] | None
    ) -> None:
        # gdbus flushes every queued signal before any reply (g_dbus_send_message).
        self.flush()
        if call.flags & MessageFlag.NO_REPLY_EXPECTED:
            if on_sent is not None:
                on_sent()
            return
        self._outbox.send(reply, on_sent)

    async def _route(self, msg: Message, early: _EarlyAnswer) -> Reply | None:
        path = msg.path or "/"
        interface = msg.interface or ""
        member = msg.member or ""
        signature = msg.signature or ""
        if interface == INTROSPECTABLE and member == "Introspect" and self._is_node(path):
            return Reply("s", [self.introspect(path)])
        if interface == PEER:
            return self._peer(msg)
        obj = self.objects.get(path)
        if obj is None:
            raise errors.unknown("UnknownObject", member, signature, interface)
        call = Call(
            msg.sender or "",
            path,
            list(msg.body),
            list(msg.unix_fds),
            answer=early,
        )
        if interface == PROPERTIES:
            return await self._properties(obj, member, signature, call)
        candidates = [obj.interfaces[interface]] if interface in obj.interfaces else []
        if not interface:
            candidates = [i for i in obj.interfaces.values() if member in i.methods]
        for iface in candidates:
            method = iface.methods.get(member)
            if method is not None and method.in_sig == signature:
                return await method.handler(call)
        raise errors.unknown("UnknownMethod", member, signature, interface)

    def _peer(self, msg: Message) -> Reply:
        if msg.member == "Ping" and not msg.signature:
            return Reply()
        if msg.member == "GetMachineId" and not msg.signature:
            return Reply("s", [_MACHINE_ID])
        raise errors.unknown("UnknownMethod", msg.member or "", msg.signature or "", PEER)

    async def _properties(self, obj: DBusObject, member: str, sig: str, call: Call) -> Reply:
        if member == "GetAll" and sig == "s":
            iface = self._interface(obj, call.body[0])
            return Reply("a{sv}", [iface.variants()])
        if member == "Get" and sig == "ss":
            iface = self._interface(obj, call.body[0])
            present = iface.variants()
            if call.body[1] not in present:
                raise DBusError(
                    "org.freedesktop.DBus.Error.InvalidArgs", f"No such property '{call.body[1]}'"
                )
            return Reply("v", [present[call.body[1]]])
        if member == "Set" and sig == "ssv":
            iface = self._interface(obj, call.body[0])
            name, value = call.body[1], call.body[2]
            if name not in iface.property_types:
                raise DBusError(
                    "org.freedesktop.DBus.Error.InvalidArgs", f"No such property '{name}'"
                )
            if name not in iface.writable or iface.setter is None:
                raise DBusError(
                    "org.freedesktop.DBus.Error.PropertyReadOnly",
                    f"Property '{name}' is not writable",
                )
            if value.signature != iface.property_types[name]:
                raise DBusError(
                    "org.freedesktop.DBus.Error.InvalidArgs",
                    "Invalid argument type: '" + value.signature + "'",
                )
            await iface.setter(name, value.value)
            return Reply()
        raise errors.unknown("UnknownMethod", member, sig, PROPERTIES)

    @staticmethod
    def _interface(obj: DBusObject, name: str) -> Interface:
        if name not in obj.interfaces:
            raise DBusError("org.freedesktop.DBus.Error.InvalidArgs", f"No such interface '{name}'")
        return obj.interfaces[name]

    @staticmethod
    def _interface_dicts(obj: DBusObject) -> dict[str, dict[str, Variant]]:
        return {name: iface.variants() for name, iface in obj.interfaces.items()}

    async def _managed_objects(self, _call: Call) -> Reply:
        body = {
            path: {**{i: {} for i in _STANDARD}, **self._interface_dicts(obj)}
            for path, obj in self.objects.items()
            if obj.managed
        }
        return Reply("a{oa{sa{sv}}}", [body])

    # ---- introspection ----------------------------------------------------------------------

    def _is_node(self, path: str) -> bool:
        prefix = path.rstrip("/") + "/"
        return path in self.objects or any(p.startswith(prefix) for p in self.objects)

    def _children(self, path: str) -> list[str]:
        prefix = "/" if path == "/" else path + "/"
        names = {p[len(prefix) :].split("/")[0] for p in self.objects if p.startswith(prefix)}
        return sorted(n for n in names if n)

    def introspect(self, path: str) -> str:
        parts = [
            '<!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN"\n'
            '"http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">\n<node>',
            '<interface name="org.freedesktop.DBus.Introspectable"><method name="Introspect">'
            '<arg name="xml" type="s" direction="out"/></method></interface>',
        ]
        obj = self.objects.get(path)
        if obj is not None:
            parts.append(_PROPERTIES_XML)
            parts.extend(_interface_xml(iface) for iface in obj.interfaces.values())
        parts.extend(f"<node name={quoteattr(child)}/>" for child in self._children(path))
        parts.append("</node>")
        return "\n".join(parts)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


_PROPERTIES_XML = (
    '<interface name="org.freedesktop.DBus.Properties">'
    '<method name="Get"><arg name="interface" type="s" direction="in"/>'
    '<arg name="name" type="s" direction="in"/>'
    '<arg name="value" type="v" direction="out"/></method>'
    '<method name="Set"><arg name="interface" type="s" direction="in"/>'
    '<arg name="name" type="s" direction="in"/><arg name="value" type="v" direction="in"/></method>'
    '<method name="GetAll"><arg name="interface" type="s" direction="in"/>'
    '<arg name="properties" type="a{sv}" direction="out"/></method>'
    '<signal name="PropertiesChanged"><arg name="interface" type="s"/>'
    '<arg name="changed_properties" type="a{sv}"/>'
    '<arg name="invalidated_properties" type="as"/></signal></interface>'
)


def _split_signature(signature: str) -> list[str]:
    """Complete types of a signature, e.g. 'aya{sv}' -> ['ay', 'a{sv}']."""
    out: list[str] = []
    i = 0
    while i < len(signature):
        start = i
        while signature[i] == "a":
            i += 1
        if signature[i] in "({":
            depth = 0
            while True:
                depth += signature[i] in "({"
                depth -= signature[i] in ")}"
                i += 1
                if depth == 0:
                    break
        else:
            i += 1
        out.append(signature[start:i])
    return out


def _args_xml(signature: str, names: tuple[str, ...], direction: str | None) -> str:
    types = _split_signature(signature)
    labels = list(names) + [f"arg{n}" for n in range(len(names), len(types))]
    way = f' direction="{direction}"' if direction else ""
    return "".join(f'<arg name="{n}" type="{t}"{way}/>' for n, t in zip(labels, types, strict=True))


def _interface_xml(iface: Interface) -> str:
    parts = [f"<interface name={quoteattr(iface.name)}>"]
    for name, m in iface.methods.items():
        args = _args_xml(m.in_sig, m.in_args, "in") + _args_xml(m.out_sig, m.out_args, "out")
        parts.append(f'<method name="{name}">{args}</method>')
    for name, sig in iface.signals.items():
        parts.append(f'<signal name="{name}">{_args_xml(sig, (), None)}</signal>')
    for name, sig in iface.property_types.items():
        access = "readwrite" if name in iface.writable else "read"
        parts.append(f'<property name="{name}" type="{sig}" access="{access}"/>')
    parts.append("</interface>")
    return "".join(parts)
