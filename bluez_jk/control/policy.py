"""What a `cmd/set` (or `jk-ble-write`) may write, and the checks it must pass first.

Pure: no I/O, no clock. The gateway and the CLI feed it the request, the device's control
settings, the layout and the age of the device's data; it answers with the checks passed or a
`Refused` naming the reason. The safety model is in README.md ("Control (off by default)").

Each writable value has two ranges. `bms_range` is what the BMS itself accepts (the limits the
app's input fields enforce; a value outside is ignored by the firmware, docs/protocol.md 2.4).
`safe_range` is ours, tighter and fixed in code: a typo such as 35 instead of 3.5 must not reach
a BMS that would accept it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Final, Literal

from construct import Float32l

from bluez_jk.protocol.commands import REGISTERS, write_command
from bluez_jk.protocol.errors import FrameError
from bluez_jk.protocol.variants import ProtocolName

Kind = Literal["switch", "number"]
RefusalCode = Literal[
    "invalid_request",
    "control_disabled",
    "not_allowed",
    "out_of_bms_range",
    "out_of_safety_bounds",
    "unsupported",
    "no_data",
    "stale_data",
    "busy",
]

MAX_PAYLOAD_BYTES: Final = 1024


@dataclass(frozen=True)
class Writable:
    name: str  # the request key: "charging", "balance_trigger_voltage"
    key: str  # the settings key it reads back under and the register it writes (protocol 2.3)
    kind: Kind
    unit: str
    bms_range: tuple[float, float] = (0, 1)
    safe_range: tuple[float, float] = (0, 1)


def _number(name: str, unit: str, bms: tuple[float, float], safe: tuple[float, float]) -> Writable:
    return Writable(name, name, "number", unit, bms, safe)


WRITABLES: Final[dict[str, Writable]] = {
    w.name: w
    for w in (
        Writable("charging", "charging_switch", "switch", ""),
        Writable("discharging", "discharging_switch", "switch", ""),
        Writable("balancing", "balancing_switch", "switch", ""),
        # BMS ranges: the limits of the official app's input fields as other projects record
        # them (esphome-jk-bms number entities); safety bounds: ours.
        _number("balance_trigger_voltage", "V", (0.003, 1.0), (0.005, 0.05)),
        _number("balance_start_voltage", "V", (1.2, 4.25), (3.0, 4.1)),
        _number("max_balance_current", "A", (0.3, 5.0), (0.3, 2.0)),
        _number("max_charge_current", "A", (1.0, 200.0), (1.0, 100.0)),
        _number("max_discharge_current", "A", (1.0, 200.0), (1.0, 150.0)),
    )
}
SWITCHES: Final[tuple[str, ...]] = tuple(n for n, w in WRITABLES.items() if w.kind == "switch")
# What the emulated BMS (and the firmware) accepts per settings key.
BMS_RANGES: Final[dict[str, tuple[float, float]]] = {w.key: w.bms_range for w in WRITABLES.values()}


class Refused(Exception):
    """A request that must not be written; `code` is machine-readable, `message` says why."""

    def __init__(self, code: RefusalCode, message: str) -> None:
        super().__init__(message)
        self.code: RefusalCode = code
        self.message = message


@dataclass(frozen=True)
class SetRequest:
    name: str
    value: bool | float
    dry_run: bool = False

    @property
    def writable(self) -> Writable:
        return WRITABLES[self.name]

    def as_dict(self) -> dict[str, Any]:
        return {self.name: self.value, "dry_run": self.dry_run}


def _known() -> str:
    return ", ".join(WRITABLES)


def parse_set_request(payload: bytes) -> SetRequest:
    """One `cmd/set` payload: a JSON object with exactly one writable key and an optional
    `dry_run` boolean. Raises Refused("invalid_request") with what is wrong."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise Refused("invalid_request", f"payload larger than {MAX_PAYLOAD_BYTES} bytes")
    try:
        raw = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise Refused("invalid_request", 'not valid JSON; send e.g. {"charging": false}') from None
    return request_from(raw)


def request_from(raw: Any) -> SetRequest:
    if not isinstance(raw, dict):
        raise Refused("invalid_request", 'must be a JSON object like {"charging": false}')
    dry_run = raw.get("dry_run", False)
    if not isinstance(dry_run, bool):
        raise Refused("invalid_request", "dry_run must be true or false")
    names = [k for k in raw if k != "dry_run"]
    unknown = [k for k in names if k not in WRITABLES]
    if unknown:
        shown = json.dumps(str(unknown[0])[:40])
        raise Refused("invalid_request", f"unknown setting {shown}; known: {_known()}")
    if len(names) != 1:
        raise Refused("invalid_request", f"name exactly one setting per request ({_known()})")
    name = names[0]
    value = raw[name]
    writable = WRITABLES[name]
    if writable.kind == "switch":
        if not isinstance(value, bool):
            raise Refused("invalid_request", f"{name} must be true or false")
        return SetRequest(name, value, dry_run)
    number = _finite(value)
    if number is None:
        raise Refused("invalid_request", f"{name} must be a finite number in {writable.unit}")
    return SetRequest(name, number, dry_run)


def _finite(value: Any) -> float | None:
    """The value as a finite float; None for anything else (an int of 400 digits included)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def require_enabled(enabled: bool) -> None:
    if not enabled:
        raise Refused(
            "control_disabled",
            "control is disabled for this device; set control.enabled: true and list the "
            "setting in control.allow in the config file to allow writes",
        )


def check(
    request: SetRequest,
    *,
    enabled: bool,
    allow: Collection[str],
    protocol: ProtocolName | None,
    age_s: float | None,
    max_age_s: float,
    require_data: bool = True,
) -> list[str]:
    """The checks `request` passed, in order; raises Refused at the first that fails.

    `require_data=False` (jk-ble-write without --dry-run) leaves the layout and freshness
    checks to the write session itself, which reads the BMS before it writes."""
    name = request.name
    writable = request.writable
    passed: list[str] = []
    require_enabled(enabled)
    passed.append("control_enabled")
    if name not in allow:
        raise Refused("not_allowed", f"{name} is not in control.allow for this device")
    passed.append("allowed")
    if writable.kind == "number":
        value = float(request.value)
        low, high = writable.bms_range
        if not low <= value <= high:
            raise Refused(
                "out_of_bms_range",
                f"{name} {value:g} {writable.unit} is outside what the BMS accepts "
                f"({low:g} to {high:g})",
            )
        passed.append("bms_range")
        low, high = writable.safe_range
        if not low <= value <= high:
            raise Refused(
                "out_of_safety_bounds",
                f"{name} {value:g} {writable.unit} is outside the safety bounds "
                f"{low:g} to {high:g} {writable.unit}",
            )
        passed.append("safety_bounds")
    if not require_data:
        return passed
    if protocol is None or age_s is None:
        raise Refused("no_data", "no successful read of this device yet; try again after one")
    if writable.key not in REGISTERS[protocol]:
        raise Refused("unsupported", f"{protocol} has no register for {name}")
    passed.append("register")
    if age_s > max_age_s:
        raise Refused(
            "stale_data",
            f"the last successful read is {age_s:.0f} s old (limit {max_age_s:g} s); "
            "writes need a BMS that answers now",
        )
    passed.append("fresh_data")
    return passed


def register_value(writable: Writable, value: bool | float) -> float:
    """The value in the register's published unit (a switch is 1 or 0)."""
    if writable.kind == "switch":
        return 1 if value else 0
    return float(value)


def frame_for(protocol: ProtocolName, request: SetRequest) -> bytes:
    """The 20-byte register frame (docs/protocol.md 2.1); raises Refused when it cannot be built."""
    writable = request.writable
    try:
        return write_command(protocol, writable.key, register_value(writable, request.value))
    except FrameError as err:
        raise Refused("unsupported", str(err)) from err


def same_value(protocol: ProtocolName, key: str, target: float, read_back: Any) -> bool:
    """Does the value read back from the settings frame equal what was written, at the
    register's resolution (3.4 V written as 3400 mV reads back as 3.4)?"""
    if isinstance(read_back, bool):
        read_back = int(read_back)
    if not isinstance(read_back, int | float) or not math.isfinite(read_back):
        return False
    register = REGISTERS[protocol][key]
    if register.encoding is Float32l:
        return abs(float(read_back) - target) <= 1e-4 * max(1.0, abs(target))
    return round(float(read_back) * register.div) == round(target * register.div)
