"""`--device MAC[,adapter=hciN][,protocol=..][,name=..][,cells=N][,sw=..][,layout=old|new]
[,pairing=none|justworks|passkey:NNNNNN|rejects]`."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Literal, cast

from bluez_jk.protocol.variants import ProtocolName
from bluez_jk.sim.faults import normalize_mac

Layout = Literal["old", "new"]
PairingMode = Literal["none", "justworks", "passkey", "rejects"]
# Modes in which the BMS refuses the CCCD write on a link that is not paired (19.30+ firmware).
PAIRING_REQUIRED: frozenset[str] = frozenset({"justworks", "passkey", "rejects"})
_PASSKEY = re.compile(r"^\d{6}$")
# One line per mode, for `jk-ble-sim --help`.
PAIRING_HELP: dict[str, str] = {
    "none": "never requires pairing (default)",
    "justworks": "refuses subscriptions until paired; pairs without a passkey",
    "passkey:NNNNNN": "the same, but the agent must type this passkey (KeyboardOnly or "
    "KeyboardDisplay); a wrong one fails AuthenticationFailed",
    "rejects": "refuses subscriptions; Pair fails AuthenticationRejected",
}

_ADAPTER = re.compile(r"^hci\d{1,3}$")
_PROTOCOLS: tuple[ProtocolName, ...] = ("JK02_24S", "JK02_32S", "JK04")


@dataclass(frozen=True)
class Profile:
    """What a firmware generation looks like on the air (docs/protocol.md 1.4, 3.4, 9)."""

    vendor_id: str
    hw_rev: str
    sw_rev: str
    max_cells: int
    mtu: int  # ATT MTU the module negotiates
    burst: int  # the module relays UART bursts of this size, each cut at MTU-3
    at_noise: bool  # 14.x+ modules emit "AT\r\n" (only under the junk fault here)
    repeat_device_info: bool  # sw >= 14 answers 0x96 with settings and a repeated 0x03


PROFILES: dict[ProtocolName, Profile] = {
    "JK02_24S": Profile("JK-B2A24S15P", "10.XW", "10.07", 24, 247, 150, False, False),
    "JK02_32S": Profile("JK_PB2A16S20P", "19A", "19.05", 32, 131, 150, True, True),
    "JK04": Profile("JK-B2A16S", "3.0", "3.3.0", 24, 23, 300, False, False),
}


@dataclass(frozen=True)
class DeviceSpec:
    address: str
    adapter: str = "hci0"
    protocol: ProtocolName = "JK02_32S"
    name: str = ""
    cells: int = 16
    sw: str = ""
    layout: Layout = "old"
    pairing: PairingMode = "none"
    # The BMS's fixed passkey (pairing=passkey); a secret: kept out of repr and every message.
    passkey: int | None = field(default=None, repr=False)

    @property
    def profile(self) -> Profile:
        base = PROFILES[self.protocol]
        if self.sw:
            major = int(self.sw.split(".")[0]) if self.sw.split(".")[0].isdigit() else 0
            return replace(base, sw_rev=self.sw, repeat_device_info=major >= 14)
        return base

    @property
    def display_name(self) -> str:
        return self.name or f"JK-{self.address[-5:].replace(':', '')}"


def parse_device(text: str) -> DeviceSpec:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise ValueError("empty --device")
    spec = DeviceSpec(address=normalize_mac(parts[0]))
    for part in parts[1:]:
        key, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"device option must be key=value, got {part!r}")
        if key == "adapter":
            if not _ADAPTER.match(value):
                raise ValueError(f"adapter must be hciN, got {value!r}")
            spec = replace(spec, adapter=value)
        elif key == "protocol":
            if value not in _PROTOCOLS:
                raise ValueError(f"protocol must be one of {', '.join(_PROTOCOLS)}")
            spec = replace(spec, protocol=value)
        elif key == "name":
            spec = replace(spec, name=value)
        elif key == "cells":
            spec = replace(spec, cells=int(value))
        elif key == "sw":
            spec = replace(spec, sw=value)
        elif key == "layout":
            if value not in ("old", "new"):
                raise ValueError("layout must be old or new")
            spec = replace(spec, layout=cast(Layout, value))
        elif key == "pairing":
            spec = _with_pairing(spec, value)
        else:
            raise ValueError(f"unknown device option {key!r}")
    if not 1 <= spec.cells <= spec.profile.max_cells:
        raise ValueError(f"cells must be 1..{spec.profile.max_cells} for {spec.protocol}")
    return spec


def _with_pairing(spec: DeviceSpec, value: str) -> DeviceSpec:
    """`none`, `justworks`, `rejects` or `passkey:NNNNNN`; errors never echo the value."""
    mode, _, passkey = value.partition(":")
    if mode == "passkey":
        if not _PASSKEY.match(passkey):
            raise ValueError("pairing=passkey needs 6 digits: pairing=passkey:NNNNNN")
        return replace(spec, pairing="passkey", passkey=int(passkey))
    if mode in ("none", "justworks", "rejects") and not passkey:
        return replace(spec, pairing=cast(PairingMode, mode), passkey=None)
    raise ValueError("pairing must be none, justworks, passkey:NNNNNN or rejects")
