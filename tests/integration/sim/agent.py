"""A test org.bluez.Agent1 exported on a test client's own bus connection, the way a reader
exports one: it answers RequestPasskey as told and records every call bluetoothd makes."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from dbus_fast import Message, MessageType

from tests.integration.sim.client import Client

AGENT1 = "org.bluez.Agent1"
AGENT_MANAGER1 = "org.bluez.AgentManager1"
AGENT_PATH = "/test/agent"


@dataclass
class FakeAgent:
    client: Client
    capability: str = "KeyboardOnly"
    passkey: int = 0
    error: str | None = None  # answer RequestPasskey with this error name
    hold: bool = False  # never answer RequestPasskey
    path: str = AGENT_PATH
    calls: list[tuple[str, list[Any]]] = field(default_factory=list)
    _called: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.client.bus.add_message_handler(self._on_message)

    def _on_message(self, msg: Message) -> Message | bool | None:
        if msg.message_type is not MessageType.METHOD_CALL or msg.path != self.path:
            return None
        self.calls.append((msg.member or "", list(msg.body)))
        self._called.set()
        if msg.member == "RequestPasskey":
            if self.hold:
                return True  # taken, never answered
            if self.error is not None:
                return Message.new_error(msg, self.error, "the test agent refuses")
            return Message.new_method_return(msg, "u", [self.passkey])
        return Message.new_method_return(msg)

    async def register(self, default: bool = False) -> None:
        await self.client.call(
            "/org/bluez", AGENT_MANAGER1, "RegisterAgent", "os", [self.path, self.capability]
        )
        if default:
            await self.client.call(
                "/org/bluez", AGENT_MANAGER1, "RequestDefaultAgent", "o", [self.path]
            )

    def members(self) -> list[str]:
        return [member for member, _body in self.calls]

    async def wait_call(self, member: str, timeout_s: float = 10.0) -> list[Any]:
        async def find() -> list[Any]:
            while True:
                for name, body in self.calls:
                    if name == member:
                        return body
                self._called.clear()
                await self._called.wait()

        return await asyncio.wait_for(find(), timeout_s)
