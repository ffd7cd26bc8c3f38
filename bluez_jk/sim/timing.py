"""How long the simulated radio and BlueZ take for each step, per timing profile."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

TimingName = Literal["real", "fast", "zero"]


@dataclass(frozen=True)
class Timing:
    name: TimingName
    connect_s: float  # Connect call to HCI link up (Connected=true)
    att_s: float  # link up to ATT channel ready (the Connect reply)
    resolve_s: float  # Connect reply to ServicesResolved=true (GATT discovery or cache check)
    disconnect_grace_s: float  # BlueZ's DISCONNECT_TIMER before the link is dropped
    connect_timeout_s: float  # kernel LE create-connection timeout for a silent device
    advert_s: float  # first advertisement after StartDiscovery, and the interval after it
    uncached_s: float  # discovery time before an uncached device object appears
    reply_s: float  # command write to the first notification of the reply
    chunk_s: float  # between two notifications of one reply
    cell_period_s: float  # the BMS's cell-info stream period
    at_noise_s: float  # period of the module's "AT\r\n" noise under the junk fault
    pair_s: float  # Pair: the SMP exchange once the link is up (agent time not included)
    agent_timeout_s: float  # an agent that never answers: the pairing gives up
    temporary_s: float  # a failed pairing's untrusted device is removed after this
    slow_chunk_s: float = 0.2  # the `slow` fault


TIMINGS: dict[TimingName, Timing] = {
    # BlueZ and JK figures: docs/bluez.md 3.1/3.3 (2 s DISCONNECT_TIMER, 20 s kernel connect
    # timeout) and docs/protocol.md 3.2 (40-170 ms reply latency, ~0.5 s cell-info period).
    # Pairing: SMP's 30 s timeout and bluetoothd's 30 s TemporaryTimeout (main.conf).
    "real": Timing(
        "real", 0.15, 0.05, 0.4, 2.0, 40.0, 0.3, 1.0, 0.08, 0.006, 0.5, 0.2, 0.3, 30.0, 30.0
    ),
    "fast": Timing(
        "fast", 0.01, 0.005, 0.02, 0.05, 0.3, 0.03, 0.3, 0.01, 0.001, 0.15, 0.05, 0.01, 2.0, 0.0
    ),
    # No artificial delays; the outbox still paces writes by the socket's fill level.
    "zero": Timing(
        "zero", 0.0, 0.0, 0.0, 0.0, 0.05, 0.0, 0.05, 0.0, 0.0, 0.05, 0.05, 0.0, 1.0, 0.0, 0.0
    ),
}


def describe_timing(timing: Timing) -> str:
    """The figures a user of the simulator notices, for `jk-ble-sim --help`."""
    return (
        f"connect {timing.connect_s + timing.att_s:g} s, services {timing.resolve_s:g} s, "
        f"reply {timing.reply_s:g} s, cell info every {timing.cell_period_s:g} s, "
        f"disconnect grace {timing.disconnect_grace_s:g} s, "
        f"silent-device connect timeout {timing.connect_timeout_s:g} s, "
        f"gap under the slow fault {timing.slow_chunk_s:g} s"
    )
