"""When the gateway power-cycles an adapter (`adapter_recovery`, docs/config.md): a pure policy.

A controller can wedge so that every Connect on it times out until it is switched off and on
(a USB dongle after a brown-out, a kernel driver that lost its state). One failing BMS says
nothing about its adapter, so the policy waits until *every* device on the adapter has failed
`after_failures` reads in a row, and cycles at most once per `min_interval_s`. A read that
says the adapter is gone or off (`AdapterNotFound`) is not the adapter's wedge: nothing to
cycle there, and the gateway never powers an adapter on by itself (docs/bluez.md 2.6).

No I/O and no clock of its own: the scheduler feeds it outcomes and the time, and carries out
its verdict (scheduler.py), so every decision is a table test (tests/unit/gateway).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from bluez_jk.reading import Reading

AdapterKey = str | None  # "hciN", None = the default adapter (as a device configures it)
Outcome = Literal["ok", "failed", "absent", "neutral"]
Decision = Literal["cycle", "healthy", "absent", "busy", "too_soon", "disabled"]

# Errors that say nothing about the adapter's radio: another process holds the lock, the
# device is paused, the read was cancelled, a setting is wrong.
_NEUTRAL = frozenset({"Busy", "Paused", "Interrupted", "ConfigError", "MqttError"})


def outcome(reading: Reading) -> Outcome:
    error = reading.get("error")
    if error is None:
        return "ok"
    if error["type"] == "AdapterNotFound":
        return "absent"
    if error["type"] in _NEUTRAL:
        return "neutral"
    return "failed"


@dataclass(frozen=True)
class Verdict:
    decision: Decision
    reason: str
    devices: tuple[str, ...] = ()  # the devices on the adapter


@dataclass
class _Adapter:
    last_cycle: float | None = None  # clock time of the last attempt, successful or not
    cycles: int = 0
    absent: bool = False


@dataclass
class AdapterHealth:
    """Consecutive failures per device, grouped by adapter, and each adapter's last cycle."""

    after_failures: int
    min_interval_s: float
    enabled: bool = True
    adapters: dict[str, AdapterKey] = field(default_factory=dict)  # device -> adapter
    failures: dict[str, int] = field(default_factory=dict)
    _state: dict[AdapterKey, _Adapter] = field(default_factory=dict)

    @classmethod
    def for_devices(
        cls, devices: Mapping[str, AdapterKey], *, after_failures: int, min_interval_s: float,
        enabled: bool = True,
    ) -> AdapterHealth:  # fmt: skip
        health = cls(after_failures, min_interval_s, enabled)
        for name, adapter in devices.items():
            health.place(name, adapter)
        return health

    def place(self, device: str, adapter: AdapterKey) -> None:
        """A device is (now) on `adapter`; a move starts its count afresh."""
        if device in self.adapters and self.adapters[device] == adapter:
            return
        self.adapters[device] = adapter
        self.failures[device] = 0

    def devices_on(self, adapter: AdapterKey) -> tuple[str, ...]:
        return tuple(sorted(d for d, a in self.adapters.items() if a == adapter))

    def cycles(self, adapter: AdapterKey) -> int:
        return self._adapter(adapter).cycles

    def _adapter(self, adapter: AdapterKey) -> _Adapter:
        return self._state.setdefault(adapter, _Adapter())

    def record(self, device: str, result: Outcome) -> None:
        adapter = self._adapter(self.adapters[device])
        if result == "neutral":
            return
        adapter.absent = result == "absent"
        self.failures[device] = self.failures[device] + 1 if result == "failed" else 0

    def verdict(self, adapter: AdapterKey, now: float, *, busy: bool = False) -> Verdict:
        """Whether to power-cycle `adapter` now. `busy`: a read or kept session runs on it."""
        devices = self.devices_on(adapter)
        state = self._adapter(adapter)
        if not self.enabled:
            return Verdict("disabled", "adapter_recovery is off", devices)
        if not devices:
            return Verdict("healthy", "no device uses it", devices)
        if state.absent:
            return Verdict("absent", "the adapter is gone or powered off", devices)
        short = [d for d in devices if self.failures[d] < self.after_failures]
        if short:
            return Verdict(
                "healthy", f"{', '.join(short)} failed fewer than {self.after_failures} in a row",
                devices,
            )  # fmt: skip
        if busy:
            return Verdict("busy", "a read on the adapter is in progress", devices)
        if state.last_cycle is not None and now - state.last_cycle < self.min_interval_s:
            left = self.min_interval_s - (now - state.last_cycle)
            return Verdict(
                "too_soon", f"cycled {now - state.last_cycle:.0f} s ago, next in {left:.0f} s",
                devices,
            )  # fmt: skip
        return Verdict(
            "cycle",
            f"all {len(devices)} device(s) failed {self.after_failures}+ reads in a row",
            devices,
        )

    def cycled(self, adapter: AdapterKey, now: float, *, ok: bool) -> None:
        """A cycle was attempted at `now`. A successful one starts every count afresh; a failed
        one leaves them, so the next attempt follows after `min_interval_s`."""
        state = self._adapter(adapter)
        state.last_cycle = now
        if ok:
            state.cycles += 1
            for device in self.devices_on(adapter):
                self.failures[device] = 0
