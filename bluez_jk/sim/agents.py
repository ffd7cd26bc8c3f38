"""org.bluez.AgentManager1 at /org/bluez, and the calls bluetoothd makes to a client's Agent1.

BlueZ 5.66 src/agent.c: one agent per bus connection; the first one registered becomes the
default, later ones queue behind it and the next takes over when the default goes; an agent
ends with UnregisterAgent or when its owner leaves the bus. Pair uses the caller's agent,
else the default one, else none (NoInputNoOutput).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from dbus_fast import DBusError, Message, MessageFlag, MessageType

from bluez_jk.sim import errors
from bluez_jk.sim.dispatch import Call, DBusObject, Dispatcher, Interface, Method
from bluez_jk.sim.eventlog import EventLog

AGENT_MANAGER_IFACE = "org.bluez.AgentManager1"
AGENT_IFACE = "org.bluez.Agent1"
AGENT_MANAGER_PATH = "/org/bluez"
CAPABILITIES = ("DisplayOnly", "DisplayYesNo", "KeyboardOnly", "NoInputNoOutput", "KeyboardDisplay")
# Capabilities that can type a passkey the peer shows (SMP's passkey-entry association).
PASSKEY_ENTRY = frozenset({"KeyboardOnly", "KeyboardDisplay"})


@dataclass(frozen=True)
class Agent:
    owner: str  # unique bus name of the connection that registered it
    path: str
    capability: str


class AgentFailed(Exception):
    """The agent answered with an error (or left the bus): the pairing fails."""


class AgentTimeout(Exception):
    """The agent did not answer in time."""


class AgentManager:
    def __init__(self, dispatcher: Dispatcher, events: EventLog) -> None:
        self.dispatcher = dispatcher
        self.events = events
        self.agents: dict[str, Agent] = {}  # owner -> agent
        self._defaults: list[Agent] = []  # head = the default agent

    def dbus_object(self) -> DBusObject:
        m = {
            "RegisterAgent": Method("os", "", self._register, ("agent", "capability")),
            "UnregisterAgent": Method("o", "", self._unregister, ("agent",)),
            "RequestDefaultAgent": Method("o", "", self._request_default, ("agent",)),
        }
        iface = Interface(AGENT_MANAGER_IFACE, {}, dict, m)
        return DBusObject(AGENT_MANAGER_PATH, {AGENT_MANAGER_IFACE: iface})

    @property
    def default(self) -> Agent | None:
        return self._defaults[0] if self._defaults else None

    def agent_for(self, sender: str) -> Agent | None:
        """The agent a Pair from `sender` uses: its own, else the default, else none."""
        return self.agents.get(sender) or self.default

    # ---- AgentManager1 ----------------------------------------------------------------------

    async def _register(self, call: Call) -> None:
        path, capability = call.body
        if call.sender in self.agents:
            raise errors.already_exists()
        if capability == "":
            capability = "KeyboardDisplay"
        if capability not in CAPABILITIES:
            raise errors.invalid_arguments()
        agent = Agent(call.sender, path, capability)
        self.agents[call.sender] = agent
        self._defaults.append(agent)  # the first one becomes the default at once
        self.events.record("agent_registered", sender=call.sender, path=path, capability=capability)

    def _own(self, call: Call) -> Agent:
        agent = self.agents.get(call.sender)
        if agent is None or agent.path != call.body[0]:
            raise errors.does_not_exist()
        return agent

    async def _unregister(self, call: Call) -> None:
        self._drop(self._own(call), "unregister")

    async def _request_default(self, call: Call) -> None:
        agent = self._own(call)
        self._defaults.remove(agent)
        self._defaults.insert(0, agent)
        self.events.record("agent_default", sender=agent.owner, path=agent.path)

    def _drop(self, agent: Agent, reason: str) -> None:
        # No Release here: bluetoothd removes its owner watch first, so Release is only sent
        # when bluetoothd itself shuts down (see release_all).
        self.agents.pop(agent.owner, None)
        if agent in self._defaults:
            self._defaults.remove(agent)
        self.events.record("agent_unregistered", sender=agent.owner, reason=reason)

    def client_left(self, unique_name: str) -> None:
        agent = self.agents.get(unique_name)
        if agent is not None:
            self._drop(agent, "bus_left")

    def release_all(self) -> None:
        """bluetoothd shutting down: every agent gets Release."""
        for agent in list(self.agents.values()):
            self._send(agent, "Release")
        self.agents.clear()
        self._defaults.clear()

    # ---- calls to an Agent1 ---------------------------------------------------------------------

    def _send(self, agent: Agent, member: str) -> None:
        self.dispatcher.send(
            Message(
                destination=agent.owner,
                path=agent.path,
                interface=AGENT_IFACE,
                member=member,
                flags=MessageFlag.NO_REPLY_EXPECTED,
            )
        )

    async def request_passkey(self, agent: Agent, device_path: str, timeout_s: float) -> int:
        """Agent1.RequestPasskey(device) -> u. The answer is a secret: never logged."""
        reply = await self._ask(agent, "RequestPasskey", "o", [device_path], timeout_s)
        if reply.signature != "u":
            raise AgentFailed("RequestPasskey answered with the wrong signature")
        return int(reply.body[0])

    async def _ask(
        self, agent: Agent, member: str, signature: str, body: list[object], timeout_s: float
    ) -> Message:
        self.events.record("agent_request", sender=agent.owner, method=member)
        msg = Message(
            destination=agent.owner,
            path=agent.path,
            interface=AGENT_IFACE,
            member=member,
            signature=signature,
            body=body,
        )
        try:
            reply = await asyncio.wait_for(self.dispatcher.call(msg), timeout_s)
        except asyncio.CancelledError:
            self._send(agent, "Cancel")  # agent_cancel: the pending request is withdrawn
            raise
        except TimeoutError:
            self._send(agent, "Cancel")
            self.events.record("agent_reply", sender=agent.owner, method=member, result="timeout")
            raise AgentTimeout(member) from None
        except (DBusError, OSError, EOFError) as err:
            raise AgentFailed(member) from err
        if reply is None or reply.message_type is MessageType.ERROR:
            name = reply.error_name if reply is not None else "no reply"
            self.events.record("agent_reply", sender=agent.owner, method=member, result=name)
            raise AgentFailed(f"{member}: {name}")
        self.events.record("agent_reply", sender=agent.owner, method=member, result="ok")
        return reply
