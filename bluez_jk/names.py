"""Names every room shares, each defined once: the notify modes, the Bluetooth address pattern
and BlueZ's device object path. Imports nothing of the project, so the client (`bluez`,
`reader`), the gateway and the simulator can all use it without an import across rooms
(docs/design.md, "Import rules")."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal

# How a read receives notifications: an AcquireNotify fd, or StartNotify + PropertiesChanged.
NotifyMode = Literal["acquire", "start"]
# The `notify_mode` setting (config file, cmd/config, jk-ble-read --notify-mode): one of the
# modes, or "auto": StartNotify before BlueZ 5.84, AcquireNotify from then (bluez/version.py).
NotifyModeSetting = Literal["auto", NotifyMode]

# A Bluetooth address: six hex pairs joined by colons, either case (ASCII only: no other
# script's letters or ligatures fold into A-F).
MAC_ADDRESS: Final = re.compile(r"[0-9A-F]{2}(?::[0-9A-F]{2}){5}", re.ASCII | re.IGNORECASE)


def device_path(adapter_obj_path: str, mac: str) -> str:
    """BlueZ's object path of a device: the adapter's path, then `dev_` and the address with
    `_` for `:` (docs/bluez.md 1.1). `mac` is upper case, as BlueZ writes it."""
    return f"{adapter_obj_path}/dev_{mac.replace(':', '_')}"


# JK firmware >= 19.30 wants a bonded link: "auto" pairs when the link demands it.
PairingSetting = Literal["auto", "never"]


@dataclass(frozen=True)
class Passkey:
    """A 6-digit BLE passkey. Its repr and str never show the digits."""

    value: int

    def __post_init__(self) -> None:
        if not 0 <= self.value <= 999_999:
            raise ValueError("a passkey has at most 6 digits")

    def __repr__(self) -> str:
        return "Passkey(******)"

    __str__ = __repr__

    @classmethod
    def parse(cls, text: str) -> Passkey:
        digits = text.strip()
        # ASCII only: int() would also take other scripts' digits ("\uff11" is 1).
        if not (digits.isascii() and digits.isdigit()) or len(digits) > 6:
            raise ValueError("a passkey is 1 to 6 digits")
        return cls(int(digits))
