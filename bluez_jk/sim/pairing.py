"""The SMP exchange between the adapter and an emulated BMS, as Device1.Pair sees it.

What the BMS's `pairing` option means on the air, and which agent call each case makes:
- `none`, `justworks`: Just Works, no agent call (the kernel accepts it for the initiator);
- `passkey`: the BMS shows a fixed passkey and wants MITM protection, so the initiator has to
  type it: only an agent that can (KeyboardOnly, KeyboardDisplay) gets RequestPasskey; any
  other capability, or no agent, cannot meet MITM and the pairing fails;
- `rejects`: the BMS answers Pairing Failed (already bonded to another host, pairing off).

Errors are the ones bluetoothd's new_authentication_return gives (src/device.c).
"""

from __future__ import annotations

import asyncio

from bluez_jk.sim import errors
from bluez_jk.sim.agents import PASSKEY_ENTRY, Agent, AgentFailed, AgentManager, AgentTimeout
from bluez_jk.sim.devices import DeviceSpec
from bluez_jk.sim.timing import Timing


async def exchange(
    spec: DeviceSpec, agents: AgentManager, agent: Agent | None, device_path: str, timing: Timing
) -> None:
    """Run SMP to completion; a DBusError with BlueZ's name when the pairing fails."""
    await asyncio.sleep(timing.pair_s)
    if spec.pairing == "rejects":
        raise errors.authentication_rejected()
    if spec.pairing != "passkey":
        return
    if agent is None or agent.capability not in PASSKEY_ENTRY:
        raise errors.authentication_failed()
    try:
        typed = await agents.request_passkey(agent, device_path, timing.agent_timeout_s)
    except AgentTimeout:
        raise errors.authentication_timeout() from None
    except AgentFailed:
        # passkey_cb: an error answer becomes an invalid passkey, SMP fails.
        raise errors.authentication_failed() from None
    if typed != spec.passkey:
        raise errors.authentication_failed()  # SMP "Confirm Value Failed"
