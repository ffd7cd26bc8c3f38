"""BlueZ and D-Bus error replies -> the project's typed errors, in exactly one table.

BlueZ reuses error names with different meanings (docs/bluez.md fact 1, 3.2, 4.5), so a rule may
narrow a name by the method that answered and by words of the message. Message texts changed
in 5.62 (`le-connection-abort-by-local` was `Software caused connection abort`); both spellings
are listed. The subclasses below keep the payload `type` of their parent, they only let the
recovery policy tell a transient case from a final one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bluez_jk.errors import (
    AdapterNotFound,
    AuthenticationRequired,
    BusError,
    ConnectFailed,
    DeviceNotFound,
    Disconnected,
    InProgress,
    JkError,
    NotifyAcquired,
    PairingFailed,
    ServicesNotResolved,
    Stage,
    Timeout,
)


class BusLost(BusError):
    """The bus connection could not be opened or broke: open a new one (policy table)."""


class BluetoothdGone(BusError):
    """bluetoothd left the bus while it connected a bonded BMS: what BlueZ 5.66 does when
    the BMS has forgotten the bond (docs/bluez.md fact 19). Final for this read; the next
    read of that BMS removes the stale bond and pairs again."""


class ConnectAborted(ConnectFailed):
    """A transient LE connect failure: BlueZ reports every link failure the same way
    (docs/bluez.md fact 3)."""


class ObjectVanished(DeviceNotFound):
    """The device object disappeared (temporary object expired, RemoveDevice): rediscover."""


class LinkLost(Disconnected):
    """The link dropped under a running operation (NotConnected, ATT error 0x0e, EOF on fd)."""


class AcquireRefused(BusError):
    """AcquireNotify cannot be used here (unsupported, or a StartNotify session exists):
    fall back to StartNotify. Never reaches a Reading on its own."""


class StaleCache(ServicesNotResolved):
    """Services resolved but FFE0/FFE1 are missing: BlueZ's GATT cache is stale
    (docs/bluez.md fact 7)."""


@dataclass(frozen=True)
class Rule:
    name: str
    error: type[JkError]
    member: str | None = None  # the D-Bus method that answered; None = any
    words: tuple[str, ...] = ()  # any of these in the message (lower case); () = any message


_E = "org.bluez.Error."
_D = "org.freedesktop.DBus.Error."

# First match wins: narrow rules before broad ones.
RULES: tuple[Rule, ...] = (
    # Device1.Pair: every refusal is the pairing's own failure, with BlueZ's reason.
    Rule(_E + "AuthenticationFailed", PairingFailed, member="Pair"),
    Rule(_E + "AuthenticationCanceled", PairingFailed, member="Pair"),
    Rule(_E + "AuthenticationRejected", PairingFailed, member="Pair"),
    Rule(_E + "AuthenticationTimeout", PairingFailed, member="Pair"),
    Rule(_E + "ConnectionAttemptFailed", PairingFailed, member="Pair"),
    Rule(_E + "Failed", PairingFailed, member="Pair"),
    Rule(_E + "NotPermitted", NotifyAcquired, words=("notify acquired",)),
    Rule(_E + "NotPermitted", InProgress, words=("write acquired",)),
    Rule(_E + "NotPermitted", AuthenticationRequired, words=("not paired",)),
    Rule(_E + "NotAuthorized", AuthenticationRequired),
    Rule(_E + "AuthenticationFailed", AuthenticationRequired),
    Rule(_E + "AuthenticationCanceled", AuthenticationRequired),
    Rule(_E + "AuthenticationRejected", AuthenticationRequired),
    Rule(_E + "AuthenticationTimeout", AuthenticationRequired),
    # JK fw >= 19.30 without pairing (docs/protocol.md 1.6).
    Rule(_E + "Failed", AuthenticationRequired, words=("failed to register notify session",)),
    Rule(_E + "InProgress", AcquireRefused, member="AcquireNotify"),
    Rule(_E + "NotSupported", AcquireRefused, member="AcquireNotify"),
    Rule(_D + "UnknownMethod", AcquireRefused, member="AcquireNotify"),
    Rule(_E + "InProgress", InProgress),
    # A bonded BMS that lost its half of the bond: the encrypted connect is refused
    # (docs/bluez.md fact 19); re-pairing cures it.
    Rule(
        _E + "Failed",
        AuthenticationRequired,
        member="Connect",
        words=("permission denied", "key missing", "authentication failure"),
    ),
    Rule(
        _E + "Failed",
        ConnectAborted,
        member="Connect",
        words=(
            "le-connection-abort-by-local",
            "software caused connection abort",
            "br-connection-canceled",
            "cancelled",
            "operation already in progress",
            "input/output error",
        ),
    ),
    # A link gone under a GATT call; 5.66's texts seen on the real-BlueZ probe.
    Rule(
        _E + "Failed",
        LinkLost,
        words=("not connected", "att error: 0x0e", "no att transport", "failed to send read"),
    ),
    Rule(_E + "NotConnected", LinkLost),
    Rule(_E + "Failed", ConnectFailed, member="Connect"),
    Rule(_E + "NotReady", AdapterNotFound),
    Rule(_E + "DoesNotExist", ObjectVanished),
    Rule(_D + "UnknownObject", ObjectVanished),
    Rule(_D + "ServiceUnknown", BusError),
    Rule(_D + "NameHasNoOwner", BusError),
    Rule(_D + "AccessDenied", BusError),
    Rule(_D + "NoReply", Timeout),
    Rule(_D + "Timeout", Timeout),
    Rule(_D + "TimedOut", Timeout),
)

_HINTS: dict[str, str] = {
    _D + "AccessDenied": "D-Bus policy denies org.bluez (run as root or in group bluetooth)",
    _D + "ServiceUnknown": "bluetoothd is not running on this bus",
    _D + "NameHasNoOwner": "bluetoothd is not running on this bus",
}

# What a user checks when a BMS does not take the connection (BlueZ says the same for each).
CONNECT_HINT = (
    "the BMS is out of range, powered off, or another central such as the phone app is "
    "connected to it"
)

# Errors that end a stage without a rule of their own.
_STAGE_DEFAULT: dict[str, type[JkError]] = {
    "connect": ConnectFailed,
    "resolve": ServicesNotResolved,
    "subscribe": BusError,
}

# Group 1 names the adapter; group 2 is None when the path is the adapter object itself.
_ADAPTER = re.compile(r"^/org/bluez/(hci[0-9]+)(/.*)?$")


def map_dbus_error(name: str, text: str, *, member: str, path: str, stage: Stage) -> JkError:
    """The typed error for one D-Bus error reply."""
    lowered = text.lower()
    cls: type[JkError] | None = None
    for rule in RULES:
        if rule.name != name or (rule.member is not None and rule.member != member):
            continue
        if rule.words and not any(word in lowered for word in rule.words):
            continue
        cls = rule.error
        break
    adapter = _ADAPTER.match(path)
    on_adapter = adapter is not None and adapter.group(2) is None
    if on_adapter and (cls is ObjectVanished or name == _D + "UnknownMethod"):
        # The object or its Adapter1 interface left the bus between two calls: a pulled dongle.
        cls = AdapterNotFound
    if cls is None:
        cls = _STAGE_DEFAULT.get(stage, BusError)
    message = f"{member}: {text}" if text else member
    if cls is AdapterNotFound:
        # Lead with the adapter and the next step: the raw D-Bus text ("Method ... doesn't
        # exist") does not say that a dongle was pulled or that the adapter is powered off.
        which = adapter.group(1) if adapter else "the adapter"
        if name == _E + "NotReady":
            message = f"adapter {which} is not powered ({message}); bluetoothctl power on"
        else:
            message = (
                f"adapter {which} is gone ({message}); plug it back in or check `bluetoothctl list`"
            )
        return cls(message, stage=stage, dbus_error=name)
    hint = _HINTS.get(name)
    if hint is None and issubclass(cls, ConnectFailed):
        hint = CONNECT_HINT
    if hint:
        message = f"{message} ({hint})"
    return cls(message, stage=stage, dbus_error=name)
