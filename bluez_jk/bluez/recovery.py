"""The BlueZ recovery policy (docs/design.md, "Recovery policy") in one place: given the error
an attempt ended with and what has been tried so far in this read, what to do next. Pure; the
reader executes it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from bluez_jk.bluez.errors import (
    AcquireRefused,
    BusLost,
    ConnectAborted,
    ObjectVanished,
    StaleCache,
)
from bluez_jk.errors import (
    AuthenticationRequired,
    Disconnected,
    InProgress,
    JkError,
    NotifyAcquired,
    ServicesNotResolved,
)

Action = Literal[
    "retry",  # same steps again after `delay_s`
    "rediscover",  # the object is gone: discover it again, then connect
    "reset_cache",  # disconnect, RemoveDevice, rediscover, connect once more
    "reset_link",  # disconnect (ends every notify session on the link), reconnect
    "reconnect_bus",  # open a new bus connection, then retry
    "start_notify",  # AcquireNotify refused: use StartNotify from now on for this device
    "pair",  # the link demands pairing: Pair through our agent, then subscribe again
    "repair",  # paired, yet the link demands pairing: the BMS lost the bond; remove, pair again
    "give_up",
]


@dataclass(frozen=True)
class Limits:
    connect_failures: int = 4  # le-connection-abort-by-local in a row -> ConnectFailed
    cache_resets: int = 1
    link_resets: int = 1
    link_drops: int = 5
    pairings: int = 1  # per read: a second refusal after pairing is not cured by pairing again
    bus_reconnects: int = 3
    rediscoveries: int = 2
    backoff_s: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0)


@dataclass
class Tried:
    """What this read has already done about each kind of trouble."""

    connect_failures: int = 0
    in_progress: int = 0
    cache_resets: int = 0
    link_resets: int = 0
    link_drops: int = 0
    pairings: int = 0
    may_pair: bool = False  # the read's `pairing` setting allows it
    paired: bool = False  # the device holds a bond (Device1.Paired) as the error came
    bus_reconnects: int = 0
    rediscoveries: int = 0
    history: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Decision:
    action: Action
    delay_s: float = 0.0


def _backoff(limits: Limits, n: int) -> float:
    return limits.backoff_s[min(max(n - 1, 0), len(limits.backoff_s) - 1)]


def decide(err: JkError, tried: Tried, time_left_s: float, limits: Limits = Limits()) -> Decision:
    """The next step after `err`; updates the counters in `tried`."""
    tried.history.append(type(err).__name__)
    decision = _decide(err, tried, limits)
    if decision.action != "give_up" and decision.delay_s >= time_left_s:
        return Decision("give_up")
    return decision


def _decide(err: JkError, tried: Tried, limits: Limits) -> Decision:
    if isinstance(err, AcquireRefused):
        return Decision("start_notify")
    if isinstance(err, AuthenticationRequired) and tried.may_pair:
        tried.pairings += 1
        if tried.pairings > limits.pairings:
            return Decision("give_up")
        return Decision("repair" if tried.paired else "pair")
    if isinstance(err, ObjectVanished):
        tried.rediscoveries += 1
        if tried.rediscoveries > limits.rediscoveries:
            return Decision("give_up")
        return Decision("rediscover")
    if isinstance(err, InProgress):
        # Someone's Connect (or our abandoned one) is in flight; it ends within ~20 s.
        tried.in_progress += 1
        return Decision("retry", _backoff(limits, tried.in_progress))
    if isinstance(err, ConnectAborted):
        tried.connect_failures += 1
        if tried.connect_failures >= limits.connect_failures:
            return Decision("give_up")
        return Decision("retry", _backoff(limits, tried.connect_failures))
    if isinstance(err, StaleCache | ServicesNotResolved):
        tried.cache_resets += 1
        if tried.cache_resets > limits.cache_resets:
            return Decision("give_up")
        return Decision("reset_cache")
    if isinstance(err, NotifyAcquired):
        tried.link_resets += 1
        if tried.link_resets > limits.link_resets:
            return Decision("give_up")
        return Decision("reset_link")
    if isinstance(err, Disconnected):
        tried.link_drops += 1
        if tried.link_drops > limits.link_drops:
            return Decision("give_up")
        return Decision("retry", _backoff(limits, tried.link_drops))
    if isinstance(err, BusLost):
        tried.bus_reconnects += 1
        if tried.bus_reconnects > limits.bus_reconnects:
            return Decision("give_up")
        return Decision("reconnect_bus", _backoff(limits, tried.bus_reconnects))
    # DeviceNotFound after discovery, AdapterNotFound, AuthenticationRequired, Timeout,
    # ProtocolError, ConnectFailed (non-transient), Busy, a BlueZ failure without a rule of
    # its own (plain BusError, e.g. bluetoothd not on the bus): retrying cannot help.
    return Decision("give_up")
