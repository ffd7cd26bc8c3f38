"""The flat `B/jk/N/metrics` payload: numbers only, stable keys (docs/mqtt.md, "metrics").

Consumers such as Telegraf's `json` parser keep only numeric values and turn every key into a
field, so the keys here are a public schema: Grafana panels, Home Assistant value templates and
the Node-RED flow all name them. Add keys, never rename them.

Rules: booleans become 0/1, absent probes (None) and unknown values are left out (never null,
never strings), cell-indexed keys are zero-padded to two digits so that they sort.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

from bluez_jk.reading import Reading

Number = int | float

# (metrics key, status.cell_info key, decimals). Decimals strip float noise from scaling
# (53.059000000000004) at the resolution the BMS actually reports (docs/protocol.md 5.2).
_CELL_INFO_FIELDS: tuple[tuple[str, str, int | None], ...] = (
    ("soc", "battery_soc", None),
    ("soh", "state_of_health", None),
    ("capacity_remain", "capacity_remain", 3),
    ("capacity_nominal", "capacity_nominal", 3),
    ("cycle_capacity", "cycle_capacity", 3),
    ("cycles", "cycle_count", None),
    ("balancing_current", "balancing_current", 3),
    ("balancing_action", "balancing_action", None),
    ("error_bitmask", "error_bitmask", None),
    ("wire_resistance_warning_bitmask", "wire_resistance_warning_bitmask", None),
    ("charging", "charging_switch_enabled", None),
    ("discharging", "discharging_switch_enabled", None),
    ("precharging", "precharging", None),
    ("heating", "heating", None),
    ("heating_current", "heating_current", 3),
    ("total_runtime", "total_runtime", None),
    ("emergency_time_countdown", "emergency_time_countdown", None),
    ("charge_status_id", "charge_status_id", None),
    ("battery_type_id", "battery_type_id", None),
)

# The settings frame arrives less often; its switches are the configured state, while
# `charging`/`discharging` above are the MOSFETs' actual state.
_SETTINGS_FIELDS: tuple[tuple[str, str, int | None], ...] = (
    ("charging_switch", "charging_switch", None),
    ("discharging_switch", "discharging_switch", None),
    ("balancer_switch", "balancing_switch", None),
    ("nominal_capacity", "nominal_capacity", 3),
)

_DEVICE_INFO_FIELDS: tuple[tuple[str, str, int | None], ...] = (
    ("uptime", "uptime", None),
    ("power_on_count", "power_on_count", None),
)

# cell_v_01.. and cell_r_01..: built once, not per reading (a frame carries at most 32 cells).
MAX_CELLS = 32
_CELL_V_KEYS = tuple(f"cell_v_{index:02d}" for index in range(1, MAX_CELLS + 1))
_CELL_R_KEYS = tuple(f"cell_r_{index:02d}" for index in range(1, MAX_CELLS + 1))


def _cell_key(keys: tuple[str, ...], prefix: str, index: int) -> str:
    """The key of the cell at 0-based `index` (1-based, two digits, in the key)."""
    return keys[index] if index < len(keys) else f"{prefix}_{index + 1:02d}"


# temperature_sensor_1..5 -> temp_1..temp_5; the MOSFET probe is temp_mos.
MAX_TEMPERATURE_SENSORS = 5


def _number(value: Any, decimals: int | None = None) -> Number | None:
    """A JSON-safe number, or None for anything that is not one (None, strings, NaN)."""
    kind = type(value)
    if kind is float:  # the common case first: ~70 values per reading
        number: float = value
        if not math.isfinite(number):
            return None
        return round(number, decimals) if decimals is not None else number
    if kind is int:
        whole: int = value
        return whole
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return round(value, decimals) if decimals is not None else value
    return None


def cell_count(reading: Reading) -> int:
    """How many cells the pack has, from the best source available.

    The 32S cell-info frame always carries 32 slots; the settings frame's `cell_count` is
    authoritative, then the enabled-cells mask, then the last non-zero voltage
    (docs/protocol.md 5.2 "Derived quantities").
    """
    status = reading["status"]
    voltages = status["cell_info"].get("voltages") or []
    configured = status["settings"].get("cell_count")
    if isinstance(configured, int) and not isinstance(configured, bool) and configured > 0:
        return min(configured, len(voltages)) if voltages else configured
    mask = status["cell_info"].get("enabled_cells_bitmask")
    if isinstance(mask, int) and mask > 0:
        return min(mask.bit_count(), len(voltages)) if voltages else mask.bit_count()
    last = 0
    for index, voltage in enumerate(voltages):
        if isinstance(voltage, int | float) and voltage > 0:
            last = index + 1
    return last


def _cells(reading: Reading, key: str) -> list[float]:
    values = reading["status"]["cell_info"].get(key) or []
    # A value that is not a finite number reads as 0, the frame's own "absent cell" value.
    return [float(_number(v) or 0) for v in values[: cell_count(reading)]]


def cell_voltages(reading: Reading) -> list[float]:
    """The voltages of the pack's cells, trimmed to `cell_count`."""
    return _cells(reading, "voltages")


def cell_resistances(reading: Reading) -> list[float]:
    return _cells(reading, "resistances")


def _copy(
    out: dict[str, Number],
    source: Mapping[str, Any],
    table: tuple[tuple[str, str, int | None], ...],
) -> None:
    for key, field, decimals in table:
        value = _number(source.get(field), decimals)
        if value is not None:
            out[key] = value


def to_metrics(reading: Reading) -> dict[str, Number]:
    """The `metrics` payload of a successful read (pure; the caller serialises it as JSON)."""
    status = reading["status"]
    info = status["cell_info"]
    out: dict[str, Number] = {}

    # Telegraf takes the point's time from `ts`; a Reading always has last_update after a
    # successful read, the clock is only a fallback for hand-made Readings.
    last_update = _number(status.get("last_update"), 3)
    out["ts"] = last_update if last_update is not None else round(time.time(), 3)

    voltages = cell_voltages(reading)
    total_voltage = _number(info.get("total_voltage"), 3)
    if total_voltage is None and voltages:
        # JK04 units are balancers without a pack-voltage field: the pack is the sum of cells.
        total_voltage = _number(sum(voltages), 3)
    if total_voltage is not None:
        out["total_voltage"] = total_voltage
    current = _number(info.get("current"), 3)
    if current is not None:
        out["current"] = current
    power = _number(info.get("power"), 3)
    if power is None and total_voltage is not None and current is not None:
        # The frame's power field is an unsigned magnitude (docs/protocol.md 5.2): derive the sign.
        power = _number(total_voltage * current, 3)
    if power is not None:
        out["power"] = power
        out["charging_power"] = round(max(0.0, power), 3)
        out["discharging_power"] = round(max(0.0, -power), 3)

    _copy(out, info, _CELL_INFO_FIELDS)
    _copy(out, status["settings"], _SETTINGS_FIELDS)
    _copy(out, status["device_info"], _DEVICE_INFO_FIELDS)
    if "balancing_action" in out:
        # The frame's own "balancing active" byte is meaningless (docs/protocol.md 8).
        out["balancing"] = int(out["balancing_action"] != 0)

    if voltages:
        out["cell_count"] = len(voltages)
        for index, voltage in enumerate(voltages):
            out[_cell_key(_CELL_V_KEYS, "cell_v", index)] = round(voltage, 3)
        present = [v for v in voltages if v > 0]
        if present:
            low, high = min(present), max(present)
            out["cell_v_min"] = round(low, 3)
            out["cell_v_max"] = round(high, 3)
            for key, value in (
                ("cell_v_delta", high - low),
                ("cell_v_avg", sum(present) / len(present)),
            ):
                finite = _number(value, 3)
                if finite is not None:
                    out[key] = finite
            # 1-based like the app and esphome (the frame's own indices are 0-based).
            out["cell_v_min_cell"] = voltages.index(low) + 1
            out["cell_v_max_cell"] = voltages.index(high) + 1
    for index, resistance in enumerate(cell_resistances(reading)):
        out[_cell_key(_CELL_R_KEYS, "cell_r", index)] = round(resistance, 4)

    for probe in range(1, MAX_TEMPERATURE_SENSORS + 1):
        temperature = _number(info.get(f"temperature_sensor_{probe}"), 1)
        if temperature is not None:
            out[f"temp_{probe}"] = temperature
    temp_mos = _number(info.get("temperature_mos"), 1)
    if temp_mos is not None:
        out["temp_mos"] = temp_mos

    rssi = _number(dict(reading).get("rssi"))
    if rssi is not None:
        out["rssi"] = rssi
    duration = _number(reading.get("duration_s"), 3)
    if duration is not None:
        out["read_duration_s"] = duration
    return out
