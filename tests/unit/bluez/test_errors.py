"""The BlueZ error table: each documented (name, method, message) lands on its typed error,
in both message spellings (docs/bluez.md 3.2, 4.5, 4.6, 5)."""

from __future__ import annotations

import pytest

from bluez_jk.bluez.errors import (
    AcquireRefused,
    ConnectAborted,
    LinkLost,
    ObjectVanished,
    map_dbus_error,
)
from bluez_jk.errors import (
    AdapterNotFound,
    AuthenticationRequired,
    BusError,
    ConnectFailed,
    InProgress,
    JkError,
    NotifyAcquired,
    ServicesNotResolved,
    Timeout,
)

E = "org.bluez.Error."
D = "org.freedesktop.DBus.Error."
DEV = "/org/bluez/hci0/dev_C8_47_80_37_02_E8"
CHAR = DEV + "/service0010/char0011"

CASES: list[tuple[str, str, str, str, type[JkError], str]] = [
    # name, member, path, message, expected class, payload type
    (E + "InProgress", "Connect", DEV, "In Progress", InProgress, "InProgress"),
    (
        E + "InProgress",
        "StartDiscovery",
        "/org/bluez/hci0",
        "Operation already in progress",
        InProgress,
        "InProgress",
    ),
    (E + "Failed", "Connect", DEV, "le-connection-abort-by-local", ConnectAborted, "ConnectFailed"),
    (
        E + "Failed",
        "Connect",
        DEV,
        "Software caused connection abort",
        ConnectAborted,
        "ConnectFailed",
    ),
    (E + "Failed", "Connect", DEV, "br-connection-canceled", ConnectAborted, "ConnectFailed"),
    (E + "Failed", "Connect", DEV, "Cancelled", ConnectAborted, "ConnectFailed"),
    (
        E + "Failed",
        "Connect",
        DEV,
        "Operation already in progress",
        ConnectAborted,
        "ConnectFailed",
    ),
    (E + "Failed", "Connect", DEV, "br-connection-key-missing", ConnectFailed, "ConnectFailed"),
    (E + "NotPermitted", "StartNotify", CHAR, "Notify acquired", NotifyAcquired, "NotifyAcquired"),
    (
        E + "NotPermitted",
        "AcquireNotify",
        CHAR,
        "Notify acquired",
        NotifyAcquired,
        "NotifyAcquired",
    ),
    (E + "InProgress", "AcquireNotify", CHAR, "In Progress", AcquireRefused, "BusError"),
    (
        E + "NotSupported",
        "AcquireNotify",
        CHAR,
        "Operation is not supported",
        AcquireRefused,
        "BusError",
    ),
    (D + "UnknownMethod", "AcquireNotify", CHAR, "no such method", AcquireRefused, "BusError"),
    (
        E + "NotAuthorized",
        "WriteValue",
        CHAR,
        "Operation Not Authorized",
        AuthenticationRequired,
        "AuthenticationRequired",
    ),
    (
        E + "NotPermitted",
        "StartNotify",
        CHAR,
        "Not paired",
        AuthenticationRequired,
        "AuthenticationRequired",
    ),
    (
        E + "Failed",
        "StartNotify",
        CHAR,
        "Failed to register notify session",
        AuthenticationRequired,
        "AuthenticationRequired",
    ),
    (E + "Failed", "WriteValue", CHAR, "Not connected", LinkLost, "Disconnected"),
    (
        E + "Failed",
        "ReadValue",
        CHAR,
        "Operation failed with ATT error: 0x0e",
        LinkLost,
        "Disconnected",
    ),
    (E + "NotConnected", "StartNotify", CHAR, "Not Connected", LinkLost, "Disconnected"),
    (
        D + "UnknownObject",
        "Connect",
        DEV,
        'Method "Connect" with signature "" on interface "org.bluez.Device1" doesn\'t exist\n',
        ObjectVanished,
        "DeviceNotFound",
    ),
    (
        D + "UnknownObject",
        "StartDiscovery",
        "/org/bluez/hci7",
        "doesn't exist",
        AdapterNotFound,
        "AdapterNotFound",
    ),
    (
        E + "NotReady",
        "StartDiscovery",
        "/org/bluez/hci0",
        "Resource Not Ready",
        AdapterNotFound,
        "AdapterNotFound",
    ),
    (D + "AccessDenied", "GetManagedObjects", "/", "Rejected send message", BusError, "BusError"),
    (
        D + "ServiceUnknown",
        "GetManagedObjects",
        "/",
        "The name is not activatable",
        BusError,
        "BusError",
    ),
    (D + "NoReply", "Disconnect", DEV, "Did not receive a reply", Timeout, "Timeout"),
]


@pytest.mark.parametrize(("name", "member", "path", "text", "cls", "type_name"), CASES)
def test_table(
    name: str, member: str, path: str, text: str, cls: type[JkError], type_name: str
) -> None:
    err = map_dbus_error(name, text, member=member, path=path, stage="connect")
    assert type(err) is cls
    assert err.type == type_name
    assert err.dbus_error == name
    assert err.stage == "connect"
    assert member in err.message


def test_unlisted_failure_takes_the_stage_default() -> None:
    err = map_dbus_error(
        E + "Failed", "Operation failed", member="Connect", path=DEV, stage="connect"
    )
    assert type(err) is ConnectFailed
    err = map_dbus_error(E + "Weird", "x", member="ReadValue", path=CHAR, stage="resolve")
    assert type(err) is ServicesNotResolved
    err = map_dbus_error(E + "Weird", "x", member="WriteValue", path=CHAR, stage="write")
    assert type(err) is BusError


def test_hint_is_added_for_policy_denials() -> None:
    err = map_dbus_error(
        D + "AccessDenied", "denied", member="GetManagedObjects", path="/", stage="adapter"
    )
    assert "group bluetooth" in err.message


@pytest.mark.parametrize(
    ("name", "member", "path", "adapter", "next_step"),
    [
        # The dongle pulled between resolving the adapter and the next call on it (CI saw
        # "SetDiscoveryFilter: Method ... doesn't exist" with no adapter named).
        (D + "UnknownObject", "SetDiscoveryFilter", "/org/bluez/hci0", "hci0", "plug it back"),
        (D + "UnknownMethod", "SetDiscoveryFilter", "/org/bluez/hci3", "hci3", "plug it back"),
        (E + "NotReady", "StartDiscovery", "/org/bluez/hci1", "hci1", "is not powered"),
        (E + "NotReady", "Connect", DEV, "hci0", "is not powered"),
    ],
)
def test_an_adapter_error_names_the_adapter_and_the_next_step(
    name: str, member: str, path: str, adapter: str, next_step: str
) -> None:
    text = f'Method "{member}" on interface "org.bluez.Adapter1" doesn\'t exist'
    err = map_dbus_error(name, text, member=member, path=path, stage="discover")
    assert type(err) is AdapterNotFound
    assert f"adapter {adapter} " in err.message
    assert next_step in err.message
    if next_step == "is not powered":
        assert err.message.endswith("; bluetoothctl power on")
        assert err.message.count("power") == 2  # the state and the command, no second hint
