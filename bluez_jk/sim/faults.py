"""Fault specifications `NAME[:N][@MAC]` and the set of faults that are currently armed."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, get_args

from bluez_jk.names import MAC_ADDRESS

FaultName = Literal[
    "not-advertising",
    "uncached",
    "in-progress",
    "connect-abort",
    "no-services",
    "notify-acquired",
    "drop-mid-frame",
    "bad-crc",
    "junk",
    "silent",
    "slow",
    "auth-required",
    "stale-cache",
    "left-connected",
    "stop-discovery-rejected",
    "ignore-writes",
    "no-logbook",
]
FAULT_NAMES: tuple[str, ...] = get_args(FaultName)

# One line per fault, for `jk-ble-sim --help` (and a test keeps it complete).
FAULT_HELP: dict[str, str] = {
    "not-advertising": "no device object; discovery never finds it",
    "uncached": "no device object until discovery has run about 1 s",
    "in-progress": "Connect answers org.bluez.Error.InProgress",
    "connect-abort": "Connect answers Failed le-connection-abort-by-local",
    "no-services": "connects, ServicesResolved never turns true",
    "notify-acquired": "another client holds notifications (NotPermitted 'Notify acquired') "
    "until the device disconnects",
    "drop-mid-frame": "the link drops halfway through a cell-info frame",
    "bad-crc": "frames with a wrong checksum",
    "junk": "AT noise, acks glued to frames, frames split across chunks",
    "silent": "connects and accepts writes, never notifies",
    "slow": "a long gap between chunks (0.2 s with --timing real)",
    "auth-required": "the BMS refuses the CCCD write: StartNotify unanswered while BlueZ "
    "tries to pair; on --bluez 5.66 AcquireNotify never answers and wedges the notify",
    "stale-cache": "the GATT cache holds a previous firmware's objects until RemoveDevice",
    "left-connected": "a link left up by a previous process (Connected=true at start)",
    "stop-discovery-rejected": "StopDiscovery answers InProgress",
    "ignore-writes": "register writes are acknowledged but not applied",
    "no-logbook": "0xA1 is acknowledged but never answered with a logbook frame",
}


_SPEC = re.compile(r"^(?P<name>[a-z-]+)(?::(?P<count>\d+))?(?:@(?P<mac>[0-9A-Fa-f:]+))?$")


def normalize_mac(text: str) -> str:
    mac = text.strip().upper().replace("-", ":").replace("_", ":")
    if not MAC_ADDRESS.fullmatch(mac):
        raise ValueError(f"not a MAC address: {text!r}")
    return mac


@dataclass
class Fault:
    name: FaultName
    count: int | None = None  # None: persistent; N: fires N more times, then clears
    address: str | None = None  # None: every device

    def matches(self, name: str, address: str | None) -> bool:
        """Does this fault apply to `address` (None: a fault of the whole simulator)?"""
        return self.name == name and (self.address is None or self.address == address)

    def describe(self) -> str:
        text: str = self.name
        if self.count is not None:
            text += f":{self.count}"
        if self.address is not None:
            text += f"@{self.address}"
        return text


def parse_fault(text: str) -> Fault:
    match = _SPEC.match(text.strip())
    if match is None:
        raise ValueError(f"fault must look like NAME[:N][@MAC], got {text!r}")
    return make_fault(match["name"], match["count"], match["mac"])


def make_fault(name: str, count: int | str | None, address: str | None) -> Fault:
    if name not in FAULT_NAMES:
        raise ValueError(f"unknown fault {name!r}; known: {', '.join(FAULT_NAMES)}")
    n = None if count is None or count == "" else int(count)
    if n is not None and n < 1:
        raise ValueError(f"fault count must be at least 1, got {n}")
    mac = normalize_mac(address) if address else None
    return Fault(name, n, mac)  # type: ignore[arg-type]


class FaultSet:
    """Armed faults. `active` only looks; `fire` looks and uses up one count."""

    def __init__(self, faults: list[Fault] | None = None) -> None:
        self._faults: list[Fault] = list(faults or [])

    def add(self, fault: Fault) -> None:
        self._faults.append(fault)

    def clear(self, name: str | None = None, address: str | None = None) -> int:
        keep = [
            f
            for f in self._faults
            if not ((name is None or f.name == name) and (address is None or f.address == address))
        ]
        removed = len(self._faults) - len(keep)
        self._faults = keep
        return removed

    def _find(self, name: str, address: str | None) -> Fault | None:
        # A fault aimed at this device wins over a fault for every device.
        targeted = [f for f in self._faults if f.matches(name, address) and f.address]
        found = targeted or [f for f in self._faults if f.matches(name, address)]
        return found[0] if found else None

    def active(self, name: str, address: str | None) -> bool:
        return self._find(name, address) is not None

    def fire(self, name: str, address: str | None) -> bool:
        fault = self._find(name, address)
        if fault is None:
            return False
        if fault.count is not None:
            fault.count -= 1
            if fault.count <= 0:
                self._faults.remove(fault)
        return True

    def describe(self) -> list[str]:
        return [f.describe() for f in self._faults]
