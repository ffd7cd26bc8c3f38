"""The BlueZ interfaces and properties the client reads, typed (docs/bluez.md 1), so that a
misspelt interface or property name is a mypy error instead of a `.get` that is always None.

The dicts come from dbus-fast's `unpack_variants`, so values are plain Python. Every TypedDict
is total=False: BlueZ leaves out what it does not know (no Name before an advert carried one,
no RSSI outside discovery, no MTU while disconnected). Only the properties this project reads
are listed; the others pass through untyped at run time.
"""

from __future__ import annotations

from typing import Final, TypedDict

ADAPTER: Final = "org.bluez.Adapter1"
DEVICE: Final = "org.bluez.Device1"
SERVICE: Final = "org.bluez.GattService1"
CHARACTERISTIC: Final = "org.bluez.GattCharacteristic1"


class Adapter1(TypedDict, total=False):
    Address: str
    Powered: bool
    Discovering: bool
    Roles: list[str]  # BlueZ >= 5.50; "central" when it can connect out


class Device1(TypedDict, total=False):
    Address: str
    Name: str
    RSSI: int
    Connected: bool
    ServicesResolved: bool
    UUIDs: list[str]
    ManufacturerData: dict[int, bytes]


class GattService1(TypedDict, total=False):
    UUID: str
    Device: str


class GattCharacteristic1(TypedDict, total=False):
    UUID: str
    Service: str
    Flags: list[str]
    Value: bytes


Interfaces = TypedDict(
    "Interfaces",
    {
        "org.bluez.Adapter1": Adapter1,
        "org.bluez.Device1": Device1,
        "org.bluez.GattService1": GattService1,
        "org.bluez.GattCharacteristic1": GattCharacteristic1,
    },
    total=False,
)

# GetManagedObjects: object path -> interface -> properties.
ManagedObjects = dict[str, Interfaces]
