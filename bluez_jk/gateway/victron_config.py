"""Validation of the `victron` and `banks` config sections (docs/config.md, "`victron`",
"`banks[]`"), kept apart from config.py so that the charge-control keys live in one place.

Every problem names its key path and reason, like the rest of the config.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from bluez_jk.gateway.charge_control import (
    ALL_PROBES,
    NUMBER_KEYS,
    TABLE_KEYS,
    ChargeSettings,
    Table,
)


class Checker(Protocol):
    """What this module needs of config.py's problem collector (config.py imports this
    module, so it is described here rather than imported)."""

    def fail(self, key: str, reason: str) -> None: ...

    def obj(self, value: Any, key: str, allowed: tuple[str, ...]) -> dict[str, Any] | None: ...

    def boolean(self, src: Mapping[str, Any], key: str, path: str, default: bool) -> bool: ...

    def text(
        self,
        src: Mapping[str, Any],
        key: str,
        path: str,
        default: str | None,
        *,
        nullable: bool = True,
        check: Callable[[str], str | None] | None = None,
    ) -> str | None: ...


# (low, high) inclusive, for every number of ChargeSettings.
VICTRON_RANGES: dict[str, tuple[float, float]] = {
    "max_charge_current_a": (0.0, 10000.0),
    "max_discharge_current_a": (0.0, 10000.0),
    "cell_voltage_max_v": (1.0, 5.0),
    "cell_voltage_float_v": (1.0, 5.0),
    "cell_voltage_limit_v": (1.0, 5.0),
    "cell_voltage_min_v": (1.0, 5.0),
    "penalty_max_v": (0.0, 20.0),
    "penalty_hysteresis_v": (0.0, 1.0),
    "absorption_time_s": (0.0, 86400.0),
    "float_cell_delta_v": (0.0, 1.0),
    "absorption_tolerance_v": (0.0, 5.0),
    "rebulk_soc_pct": (0.0, 100.0),
    "ramp_a_per_s": (0.01, 10000.0),
    "stale_grace_s": (1.0, 3600.0),
}
# Table x values: cell volts, degrees C or SOC %.
TABLE_X_RANGE = (-100.0, 200.0)
MAX_TABLE_POINTS = 32
VICTRON_KEYS = ("enabled", *NUMBER_KEYS, *TABLE_KEYS, "temperature_probes")
BANK_KEYS = ("name", "members", "victron")


@dataclass(frozen=True)
class VictronConfig:
    """The Victron output of one battery: off unless enabled; its charge-control settings."""

    enabled: bool = False
    settings: ChargeSettings = dataclasses.field(default_factory=ChargeSettings)


@dataclass(frozen=True)
class BankConfig:
    name: str
    members: tuple[str, ...]
    victron: bool = False


def _finite(value: Any) -> bool:
    return (
        not isinstance(value, bool)
        and isinstance(value, int | float)
        and (not isinstance(value, float) or math.isfinite(value))
    )


def _shown(value: float) -> str:
    """A number for a message, short even for a 4,000-digit integer (`:g` would overflow)."""
    if isinstance(value, int) and abs(value) >= 10**15:
        return f"an integer of {len(str(abs(value)))} digits"
    return f"{value:g}"


def _table(value: Any, path: str, fail: Callable[[str, str], None]) -> Table | None:
    shape = "an array of [x, fraction] pairs, x increasing, fraction 0 to 1"
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_TABLE_POINTS:
        fail(path, f"must be {shape} (1 to {MAX_TABLE_POINTS} points)")
        return None
    points: list[tuple[float, float]] = []
    for index, point in enumerate(value):
        if not (isinstance(point, list) and len(point) == 2 and all(map(_finite, point))):
            fail(f"{path}[{index}]", f"must be [x, fraction], two numbers; {shape}")
            return None
        x, y = point
        # Compared before float(): float() of a 400-digit integer raises OverflowError.
        if not TABLE_X_RANGE[0] <= x <= TABLE_X_RANGE[1] or not 0.0 <= y <= 1.0:
            fail(
                f"{path}[{index}]",
                f"x must be {TABLE_X_RANGE[0]:g} to {TABLE_X_RANGE[1]:g}, fraction 0 to 1",
            )
            return None
        if points and x <= points[-1][0]:
            fail(f"{path}[{index}]", "x must be larger than the previous point's")
            return None
        points.append((float(x), float(y)))
    return tuple(points)


def parse_victron(raw: Any, path: str, c: Checker, default: VictronConfig) -> VictronConfig:
    """`victron` at the top level or per device; a per-device key replaces the global one."""
    src = c.obj(raw, path, VICTRON_KEYS)
    if src is None:
        return default
    changes: dict[str, Any] = {}
    for key in NUMBER_KEYS:
        if key not in src:
            continue
        value = src[key]
        low, high = VICTRON_RANGES[key]
        if not _finite(value):
            c.fail(f"{path}.{key}", "must be a finite number")
        elif not low <= value <= high:
            c.fail(f"{path}.{key}", f"must be between {low:g} and {high:g}, got {_shown(value)}")
        else:
            changes[key] = float(value)
    for key in TABLE_KEYS:
        if key in src:
            table = _table(src[key], f"{path}.{key}", c.fail)
            if table is not None:
                changes[key] = table
    if "temperature_probes" in src:
        probes = src["temperature_probes"]
        if (
            not isinstance(probes, list)
            or not all(type(p) is int and 1 <= p <= len(ALL_PROBES) for p in probes)
            or len(set(probes)) != len(probes)
        ):
            c.fail(
                f"{path}.temperature_probes", "must be an array of distinct probe numbers 1 to 5"
            )
        else:
            changes["temperature_probes"] = tuple(probes)
    settings = dataclasses.replace(default.settings, **changes)
    _check_order(settings, path, c.fail)
    return VictronConfig(
        enabled=c.boolean(src, "enabled", path, default.enabled), settings=settings
    )


def _check_order(s: ChargeSettings, path: str, fail: Callable[[str, str], None]) -> None:
    """Voltages that only make sense in one order (float < absorption < limit)."""
    if not s.cell_voltage_min_v < s.cell_voltage_float_v <= s.cell_voltage_max_v:
        fail(
            f"{path}.cell_voltage_float_v",
            "must be above cell_voltage_min_v and at most cell_voltage_max_v",
        )
    if not s.cell_voltage_max_v <= s.cell_voltage_limit_v:
        fail(f"{path}.cell_voltage_limit_v", "must be at least cell_voltage_max_v")


def parse_banks(
    raw: Any, c: Checker, devices: Mapping[str, object], check_name: Callable[[str], str | None]
) -> tuple[BankConfig, ...]:
    """`banks`: each a name not used by a device, members that are devices, each in one bank."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        c.fail("banks", "must be an array of banks")
        return ()
    banks: list[BankConfig] = []
    owner: dict[str, str] = {}
    for index, item in enumerate(raw):
        path = f"banks[{index}]"
        src = c.obj(item, path, BANK_KEYS)
        if src is None:
            continue
        name = c.text(src, "name", path, None, nullable=False, check=check_name)
        if "name" not in src:
            c.fail(f"{path}.name", "is required")
        elif name is not None and (name in devices or any(b.name == name for b in banks)):
            c.fail(f"{path}.name", f"{name!r} is already a device or bank name")
            name = None
        members = _members(src.get("members"), f"{path}.members", c, devices)
        victron = False
        if src.get("victron") is not None:
            vsrc = c.obj(src["victron"], f"{path}.victron", ("enabled",))
            if vsrc is not None:
                victron = c.boolean(vsrc, "enabled", f"{path}.victron", False)
        for member in members:
            if member in owner:
                c.fail(f"{path}.members", f"{member!r} is already in bank {owner[member]!r}")
            elif name is not None:
                owner[member] = name
        if name is not None and members:
            banks.append(BankConfig(name=name, members=members, victron=victron))
    return tuple(banks)


def _members(value: Any, path: str, c: Checker, devices: Mapping[str, object]) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        c.fail(path, "must be a non-empty array of device names")
        return ()
    unknown = [v for v in value if v not in devices]
    for name in unknown:
        c.fail(path, f"{name[:40]!r} is not a device name")
    if len(set(value)) != len(value):
        c.fail(path, "names a device twice")
    return () if unknown else tuple(dict.fromkeys(value))
