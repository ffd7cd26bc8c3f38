"""Pairing with a BMS: an org.bluez.Agent1 on the reader's own bus connection, and Pair.

BlueZ asks the agent of whoever called `Device1.Pair` (falling back to the default agent, and
to "just works" without one), so the reader registers its own agent for the time of the call
and never touches the system's default agent. The agent answers only for the device being
paired; its passkey (JK firmware >= 19.30 can be set to require one) never reaches a log.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from dbus_fast import Message, MessageType

from bluez_jk.bluez.bus import BluezBus
from bluez_jk.bluez.paths import BLUEZ
from bluez_jk.bluez.properties import DEVICE
from bluez_jk.errors import JkError, PairingFailed
from bluez_jk.names import Passkey

log = logging.getLogger(__name__)

AGENT = "org.bluez.Agent1"
AGENT_MANAGER = "org.bluez.AgentManager1"
# A display-less BMS pairs "just works"; one set up with a fixed passkey makes the central
# type it (RequestPasskey). KeyboardDisplay lets BlueZ choose either.
CAPABILITY = "KeyboardDisplay"
_serial = itertools.count(1)


class _Agent:
    def __init__(self, path: str, device: str, passkey: Passkey | None) -> None:
        self.path = path
        self.device = device
        self.passkey = passkey
        self.asked: list[str] = []  # which agent methods BlueZ called (for tests and logs)

    def handle(self, msg: Message) -> Message | None:
        if msg.message_type != MessageType.METHOD_CALL or msg.path != self.path:
            return None
        if msg.interface not in (AGENT, None):
            return None
        member = msg.member or ""
        self.asked.append(member)
        device = str(msg.body[0]) if msg.body and member != "Release" else ""
        if device and device != self.device:
            return _rejected(msg, "not the device this reader pairs")
        if member == "RequestPasskey":
            if self.passkey is None:
                return _rejected(msg, "no passkey configured (set `passkey` or `passkey_file`)")
            log.info("agent: passkey requested device=%s", device)
            return Message.new_method_return(msg, "u", [self.passkey.value])
        if member == "RequestPinCode":
            if self.passkey is None:
                return _rejected(msg, "no passkey configured")
            return Message.new_method_return(msg, "s", [f"{self.passkey.value:06d}"])
        if member in ("RequestConfirmation", "RequestAuthorization", "AuthorizeService"):
            # The BMS has no display to compare a number with: accepting is "just works".
            log.info("agent: %s accepted device=%s", member, device)
            return Message.new_method_return(msg)
        if member in ("DisplayPasskey", "DisplayPinCode", "Cancel", "Release"):
            log.info("agent: %s device=%s", member, device or "-")
            return Message.new_method_return(msg)
        return Message.new_error(msg, "org.bluez.Error.Rejected", f"unknown method {member}")


def _rejected(msg: Message, why: str) -> Message:
    log.info("agent: %s rejected: %s", msg.member, why)
    return Message.new_error(msg, "org.bluez.Error.Rejected", why)


@asynccontextmanager
async def pairing_agent(
    bus: BluezBus, device: str, passkey: Passkey | None, timeout_s: float
) -> AsyncIterator[_Agent]:
    """Our Agent1, registered with AgentManager1 while the block runs, then unregistered.

    Raises:
        JkError: RegisterAgent failed (BusError, Timeout, ...).
    """
    path = f"/org/bluezjk/agent{next(_serial)}"
    agent = _Agent(path, device, passkey)
    bus.add_handler(agent.handle)
    try:
        await bus.call(
            "/org/bluez",
            AGENT_MANAGER,
            "RegisterAgent",
            "os",
            [path, CAPABILITY],
            stage="pair",
            timeout_s=timeout_s,
            destination=BLUEZ,
        )
        try:
            yield agent
        finally:
            try:
                await bus.call(
                    "/org/bluez",
                    AGENT_MANAGER,
                    "UnregisterAgent",
                    "o",
                    [path],
                    stage="cleanup",
                    timeout_s=2.0,
                )
            except JkError as err:
                log.info("agent: unregister failed (bluetoothd drops it with us): %s", err)
    finally:
        bus.remove_handler(agent.handle)


_REMOVE = "remove the old bond with `bluetoothctl remove {mac}` and pair again"
_HINTS = {
    "AuthenticationFailed": "wrong passkey, or the BMS is bonded to another host: check the "
    "passkey set in the JK app; " + _REMOVE,
    "AuthenticationRejected": "the BMS refused to pair, usually because it keeps a bond with "
    "another host (a phone, an earlier install): " + _REMOVE,
    "AuthenticationCanceled": "the pairing was cancelled (by the BMS or a desktop agent); "
    "if it repeats, " + _REMOVE,
    "AuthenticationTimeout": "no answer while pairing: the BMS is out of range or busy with "
    "another central (the phone app?)",
}


async def pair_device(
    bus: BluezBus, device_path: str, address: str, passkey: Passkey | None, timeout_s: float
) -> list[str]:
    """Device1.Pair through our own agent; "AlreadyExists" (paired meanwhile) is success.
    Returns the agent methods BlueZ called. A pending Pair is never cancelled: CancelPairing
    deletes the bond as well.

    Raises:
        PairingFailed: BlueZ's reason (Failed/Canceled/Rejected/Timeout), with what to try.
        JkError: the agent could not be registered, or the call itself failed otherwise.
    """
    async with pairing_agent(bus, device_path, passkey, min(timeout_s, 5.0)) as agent:
        try:
            await bus.call(device_path, DEVICE, "Pair", stage="pair", timeout_s=timeout_s)
        except PairingFailed as err:
            reason = (err.dbus_error or "").rsplit(".", 1)[-1]
            hint = _HINTS.get(reason, _REMOVE).format(mac=address)
            raise PairingFailed(
                f"Pair: {reason or err.message}: {hint}", stage="pair", dbus_error=err.dbus_error
            ) from err
        except JkError as err:
            if err.dbus_error != "org.bluez.Error.AlreadyExists":
                raise
        log.info("paired path=%s agent_calls=%s", device_path, ",".join(agent.asked) or "-")
        return list(agent.asked)
