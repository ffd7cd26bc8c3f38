"""Fault specifications `NAME[:N][@MAC]` and the set of faults that are currently armed."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol, TypeGuard, get_args

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
FAULT_NAMES: tuple[FaultName, ...] = get_args(FaultName)


class ArmTarget(Protocol):
    """What arming a fault at run time may do to a device (`Device` is one)."""

    def force_link_soon(self) -> None: ...
    def hold_notify_foreign(self) -> None: ...
    def use_stale_cache(self) -> None: ...
    def forget(self) -> None: ...
    def on_subscribed(self) -> None: ...


@dataclass(frozen=True)
class FaultKind:
    """One fault: its `--help` line and, for a fault that describes a present state, what
    arming it at run time does to each device it aims at. Where a fault acts on a call, the
    code there asks `FaultSet.active` / `FaultSet.fire` with the fault's (typed) name."""

    help: str
    # Where the simulator asks about the fault: `Class.method`s, space-separated (a test
    # keeps this true).
    acts_in: str
    on_arm: Callable[[ArmTarget], None] | None = None


# The table of faults; a test keeps it and `FaultName` the same set.
FAULTS: dict[FaultName, FaultKind] = {
    "not-advertising": FaultKind(
        "no device object; discovery never finds it",
        "Device.start Device.advertising Device.scan_ended Device._establish",
    ),
    "uncached": FaultKind(
        "no device object until discovery has run about 1 s",
        "Device.start Device.advertise",
        on_arm=lambda d: d.forget(),
    ),
    "in-progress": FaultKind("Connect answers org.bluez.Error.InProgress", "Device._connect"),
    "connect-abort": FaultKind(
        "Connect answers Failed le-connection-abort-by-local", "Device._establish"
    ),
    "no-services": FaultKind("connects, ServicesResolved never turns true", "Device._resolve"),
    "notify-acquired": FaultKind(
        "another client holds notifications (NotPermitted 'Notify acquired') "
        "until the device disconnects",
        "Device.hold_notify_foreign",
        on_arm=lambda d: d.hold_notify_foreign(),
    ),
    "drop-mid-frame": FaultKind(
        "the link drops halfway through a cell-info frame", "JkBms._send_loop"
    ),
    "bad-crc": FaultKind("frames with a wrong checksum", "JkBms._send_frame"),
    "junk": FaultKind(
        "AT noise, acks glued to frames, frames split across chunks",
        "JkBms.subscribed JkBms._send_loop",
        on_arm=lambda d: d.on_subscribed(),  # the AT noise starts
    ),
    "silent": FaultKind("connects and accepts writes, never notifies", "JkBms.on_write"),
    "slow": FaultKind("a long gap between chunks (0.2 s with --timing real)", "JkBms._pace"),
    "auth-required": FaultKind(
        "the BMS refuses the CCCD write: StartNotify unanswered while BlueZ "
        "tries to pair; on --bluez 5.66 AcquireNotify never answers and wedges the notify",
        "Characteristic._refused_cccd",
    ),
    "stale-cache": FaultKind(
        "the GATT cache holds a previous firmware's objects until RemoveDevice",
        "Device._new_gatt Device._resolve Device.remove",
        on_arm=lambda d: d.use_stale_cache(),
    ),
    "left-connected": FaultKind(
        "a link left up by a previous process (Connected=true at start)",
        "Device.start",
        on_arm=lambda d: d.force_link_soon(),
    ),
    "stop-discovery-rejected": FaultKind(
        "StopDiscovery answers InProgress", "Adapter._stop_discovery"
    ),
    "ignore-writes": FaultKind(
        "register writes are acknowledged but not applied", "JkBms._apply_register"
    ),
    "no-logbook": FaultKind(
        "0xA1 is acknowledged but never answered with a logbook frame", "JkBms.on_write"
    ),
}

# One line per fault, for `jk-ble-sim --help`.
FAULT_HELP: dict[str, str] = {name: kind.help for name, kind in FAULTS.items()}


def is_fault_name(text: str) -> TypeGuard[FaultName]:
    return text in FAULT_NAMES


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

    def matches(self, name: FaultName, address: str | None) -> bool:
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
    if not is_fault_name(name):
        raise ValueError(f"unknown fault {name!r}; known: {', '.join(FAULT_NAMES)}")
    n = None if count is None or count == "" else int(count)
    if n is not None and n < 1:
        raise ValueError(f"fault count must be at least 1, got {n}")
    mac = normalize_mac(address) if address else None
    return Fault(name, n, mac)


class FaultSet:
    """Armed faults. `active` only looks; `fire` looks and uses up one count."""

    def __init__(self, faults: list[Fault] | None = None) -> None:
        self._faults: list[Fault] = list(faults or [])

    def add(self, fault: Fault) -> None:
        self._faults.append(fault)

    def clear(self, name: FaultName | None = None, address: str | None = None) -> int:
        keep = [
            f
            for f in self._faults
            if not ((name is None or f.name == name) and (address is None or f.address == address))
        ]
        removed = len(self._faults) - len(keep)
        self._faults = keep
        return removed

    def _find(self, name: FaultName, address: str | None) -> Fault | None:
        # A fault aimed at this device wins over a fault for every device.
        targeted = [f for f in self._faults if f.matches(name, address) and f.address]
        found = targeted or [f for f in self._faults if f.matches(name, address)]
        return found[0] if found else None

    def active(self, name: FaultName, address: str | None) -> bool:
        return self._find(name, address) is not None

    def fire(self, name: FaultName, address: str | None) -> bool:
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
