"""Addresses and BlueZ object paths, derived in one place (docs/design.md, "House rules")."""

from __future__ import annotations

import re

from bluez_jk.errors import ConfigError
from bluez_jk.names import MAC_ADDRESS

# The client's code and tests import it from here, with the other path helpers.
from bluez_jk.names import device_path as device_path  # noqa: PLC0414 - re-export

BLUEZ = "org.bluez"
BLUEZ_ROOT = "/org/bluez"

_ADAPTER = re.compile(r"^hci[0-9]{1,3}$")


def normalize_mac(text: str) -> str:
    """Upper case with colons; `-` and `_` separators are accepted, anything else is refused.

    Raises:
        ConfigError: not six hex pairs (key "address").
    """
    candidate = text.strip().upper().replace("-", ":").replace("_", ":")
    if not MAC_ADDRESS.fullmatch(candidate):
        raise ConfigError(f"not a Bluetooth address: {text!r}", key="address")
    return candidate


def validate_adapter(name: str | None) -> str | None:
    """`hciN`, or None for the default adapter (an empty string also means default).

    Raises:
        ConfigError: not `hci` and a number (key "adapter").
    """
    if name is None or name == "":
        return None
    if not _ADAPTER.fullmatch(name):
        raise ConfigError(f"adapter must look like hci0, got {name!r}", key="adapter")
    return name


def adapter_path(adapter: str) -> str:
    return f"{BLUEZ_ROOT}/{adapter}"


def adapter_name(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def is_under(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent + "/")


def device_of(path: str) -> str:
    """The device object a GATT object belongs to (/org/bluez/hciN/dev_XX_..._XX/...)."""
    return "/".join(path.split("/", 5)[:5])
