"""A plain dbus-fast client for the simulator tests: raw calls, every signal recorded."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from dbus_fast import Message, MessageType, Variant, unpack_variants
from dbus_fast.aio import MessageBus

from bluez_jk.protocol import command
from bluez_jk.protocol.stream import StreamDecoder
from tests.fixtures.waits import deadline_s

ADDRESS = "C8:47:80:37:02:E8"
DEV = "/org/bluez/hci0/dev_C8_47_80_37_02_E8"
CHAR = DEV + "/service0010/char0011"
DEVICE1 = "org.bluez.Device1"
CHAR1 = "org.bluez.GattCharacteristic1"
ADAPTER1 = "org.bluez.Adapter1"


class CallError(Exception):
    def __init__(self, name: str, text: str) -> None:
        super().__init__(f"{name}: {text}")
        self.name = name
        self.text = text


@dataclass
class Client:
    bus: MessageBus
    signals: list[Message] = field(default_factory=list)
    _cond: asyncio.Condition = field(default_factory=asyncio.Condition)

    def _on_message(self, msg: Message) -> None:
        if msg.message_type is MessageType.SIGNAL and msg.sender != "org.freedesktop.DBus":
            self.signals.append(msg)
            asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self._cond:
            self._cond.notify_all()

    async def raw(
        self,
        path: str,
        iface: str,
        member: str,
        sig: str = "",
        body: list[Any] | None = None,
        dest: str = "org.bluez",
    ) -> Message:
        msg = Message(
            destination=dest,
            path=path,
            interface=iface,
            member=member,
            signature=sig,
            body=body or [],
        )
        reply = await asyncio.wait_for(self.bus.call(msg), 15)
        assert reply is not None
        return reply

    async def call(
        self, path: str, iface: str, member: str, sig: str = "", body: list[Any] | None = None
    ) -> list[Any]:
        reply = await self.raw(path, iface, member, sig, body)
        if reply.message_type is MessageType.ERROR:
            raise CallError(reply.error_name or "", reply.body[0] if reply.body else "")
        return list(reply.body)

    async def expect_error(
        self, path: str, iface: str, member: str, sig: str = "", body: list[Any] | None = None
    ) -> tuple[str, str]:
        reply = await self.raw(path, iface, member, sig, body)
        assert reply.message_type is MessageType.ERROR, f"{member} succeeded"
        return reply.error_name or "", reply.body[0]

    async def wait_signal(
        self, match: Callable[[Message], bool], timeout_s: float = 10.0, start: int = 0
    ) -> Message:
        async def find() -> Message:
            async with self._cond:
                while True:
                    for msg in self.signals[start:]:
                        if match(msg):
                            return msg
                    await self._cond.wait()

        return await asyncio.wait_for(find(), deadline_s(timeout_s))

    async def wait_prop(
        self, path: str, name: str, value: Any, timeout_s: float = 10.0, start: int = 0
    ) -> Message:
        return await self.wait_signal(lambda m: is_prop(m, path, name, value), timeout_s, start)

    async def props(self, path: str, iface: str) -> dict[str, Any]:
        body = await self.call(path, "org.freedesktop.DBus.Properties", "GetAll", "s", [iface])
        return dict(unpack_variants(body[0]))

    async def managed(self) -> dict[str, Any]:
        body = await self.call("/", "org.freedesktop.DBus.ObjectManager", "GetManagedObjects")
        return dict(unpack_variants(body[0]))

    async def write(self, code: int, path: str = CHAR, kind: str = "command") -> None:
        await self.call(
            path, CHAR1, "WriteValue", "aya{sv}", [command(code), {"type": Variant("s", kind)}]
        )

    async def connect_resolved(self, path: str = DEV) -> None:
        start = len(self.signals)
        await self.call(path, DEVICE1, "Connect")
        if not (await self.props(path, DEVICE1))["ServicesResolved"]:
            await self.wait_prop(path, "ServicesResolved", True, start=start)

    async def read_frames(self, done: Callable[[StreamDecoder], bool]) -> StreamDecoder:
        """The JK handshake over StartNotify: feed every Value chunk to a StreamDecoder until
        `done(decoder)` holds."""
        await self.call(CHAR, CHAR1, "StartNotify")
        await self.write(0x97)
        await self.write(0x96)
        decoder = StreamDecoder()
        fed = 0

        def progressed(_m: object) -> bool:
            nonlocal fed
            for chunk in self.values()[fed:]:
                decoder.feed(chunk)
                fed += 1
            return done(decoder)

        await self.wait_signal(progressed)
        return decoder

    def values(self, path: str = CHAR) -> list[bytes]:
        return [
            bytes(m.body[1]["Value"].value)
            for m in self.signals
            if m.path == path and m.member == "PropertiesChanged" and "Value" in m.body[1]
        ]


def is_prop(msg: Message, path: str, name: str, value: Any) -> bool:
    return (
        msg.member == "PropertiesChanged"
        and msg.path == path
        and name in msg.body[1]
        and msg.body[1][name].value == value
    )


@contextlib.asynccontextmanager
async def client(
    address: str, match: str = "type='signal',sender='org.bluez'"
) -> AsyncIterator[Client]:
    bus = await MessageBus(bus_address=address, negotiate_unix_fd=True).connect()
    c = Client(bus)
    bus.add_message_handler(c._on_message)
    try:
        reply = await c.raw(
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus",
            "AddMatch",
            "s",
            [match],
            dest="org.freedesktop.DBus",
        )
        assert reply.message_type is MessageType.METHOD_RETURN
        yield c
    finally:
        bus.disconnect()
