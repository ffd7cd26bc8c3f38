"""Physical units: the one table that turns raw struct values into published values and back.

A value is `raw / div` for integer fields; a float32 field (JK04) is already in its unit and
is rounded to `digits` decimals, so that the float32 3.352660894 V reads 3.3527 V. Signedness and
width belong to the struct (frames.py). Fields missing here are parsed but never published.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, Final, Literal, NamedTuple

from bluez_jk.protocol.errors import FrameError
from bluez_jk.protocol.frames import Field


class Unit(NamedTuple):
    div: int = 1
    kind: Literal["num", "bool", "str", "probe"] = "num"
    digits: int = 4


NUM: Final = Unit()
BOOL: Final = Unit(kind="bool")
STR: Final = Unit(kind="str")
MILLI: Final = Unit(1000)  # mV, mA, mAh, mOhm -> V, A, Ah, Ohm
DECI: Final = Unit(10)  # 0.1 C, 0.1 h
CENTI: Final = Unit(100)  # 0.01 V
# s16 in 0.1 C; -2000 (-200.0 C) marks an absent probe (docs/protocol.md 5.2) -> None.
PROBE: Final = Unit(10, "probe")
PROBE_ABSENT: Final = -2000

SCALE: Final[dict[str, Unit]] = {
    # device info (docs/protocol.md 5.1)
    "vendor_id": STR,
    "hw_rev": STR,
    "sw_rev": STR,
    "uptime": NUM,
    "power_on_count": NUM,
    "device_name": STR,
    "manufacturing_date": STR,
    "serial_number": STR,
    "user_data": STR,
    "user_data_2": STR,
    "uart1_protocol": NUM,
    "can_protocol": NUM,
    "hardware_option": STR,
    "uart2_protocol": NUM,
    "lcd_buzzer_trigger": NUM,
    "dry1_trigger": NUM,
    "dry2_trigger": NUM,
    "request_charge_voltage_time": DECI,
    "request_float_voltage_time": DECI,
    "emergency_duration": NUM,
    "uart3_protocol": NUM,
    "re_bulk_soc": NUM,
    # cell info (5.2, 5.3)
    "voltages": MILLI,
    "enabled_cells_bitmask": NUM,
    "average_cell_voltage": MILLI,
    "delta_cell_voltage": MILLI,
    "max_voltage_cell": NUM,
    "min_voltage_cell": NUM,
    "resistances": MILLI,
    "temperature_mos": PROBE,
    "wire_resistance_warning_bitmask": NUM,
    "total_voltage": MILLI,
    "current": MILLI,
    "temperature_sensor_1": PROBE,
    "temperature_sensor_2": PROBE,
    "temperature_sensor_3": PROBE,
    "temperature_sensor_4": PROBE,
    "temperature_sensor_5": PROBE,
    "error_bitmask": NUM,
    "balancing_current": Unit(1000, digits=3),
    "balancing_action": NUM,
    "battery_soc": NUM,
    "capacity_remain": MILLI,
    "capacity_nominal": MILLI,
    "cycle_count": NUM,
    "cycle_capacity": MILLI,
    "state_of_health": NUM,
    "precharge": BOOL,
    "total_runtime": NUM,
    "charging_switch_enabled": BOOL,
    "discharging_switch_enabled": BOOL,
    "precharging": BOOL,
    "balancer_working": BOOL,
    "temperature_sensor_present_bitmask": NUM,
    "heating": BOOL,
    "emergency_time_countdown": NUM,
    "pack_voltage_alt": CENTI,
    "heating_current": MILLI,
    "detail_log_entry_count": NUM,
    "smart_sleep_countdown": NUM,
    "battery_type_id": NUM,
    "charge_status_time_elapsed": NUM,
    "charge_status_id": NUM,
    "dry_contact_bitmask": NUM,
    # settings (5.4, 5.5)
    "smart_sleep_voltage": MILLI,
    "cell_uvp": MILLI,
    "cell_uvpr": MILLI,
    "cell_ovp": MILLI,
    "cell_ovpr": MILLI,
    "balance_trigger_voltage": MILLI,
    "soc_100_voltage": MILLI,
    "soc_0_voltage": MILLI,
    "request_charge_voltage": MILLI,
    "request_float_voltage": MILLI,
    "power_off_voltage": MILLI,
    "max_charge_current": MILLI,
    "charge_ocp_delay": NUM,
    "charge_ocp_recovery": NUM,
    "max_discharge_current": MILLI,
    "discharge_ocp_delay": NUM,
    "discharge_ocp_recovery": NUM,
    "scp_recovery": NUM,
    "max_balance_current": MILLI,
    "charge_otp": DECI,
    "charge_otpr": DECI,
    "discharge_otp": DECI,
    "discharge_otpr": DECI,
    "charge_utp": DECI,
    "charge_utpr": DECI,
    "mos_otp": DECI,
    "mos_otpr": DECI,
    "cell_count": NUM,
    "charging_switch": BOOL,
    "discharging_switch": BOOL,
    "balancing_switch": BOOL,
    "nominal_capacity": MILLI,
    "scp_delay": NUM,
    "balance_start_voltage": MILLI,
    "device_address": NUM,
    "precharge_time": NUM,
    "control_bitmask": NUM,
    "heating_start_temperature": NUM,
    "heating_stop_temperature": NUM,
    "smart_sleep_hours": NUM,
    "discharge_utp": NUM,
    "discharge_utpr": NUM,
    "voltage_calibration": MILLI,
    # logbook (5.6)
    "entry_count": NUM,
    "entries": NUM,
}

# Struct fields that are parsed (they document the layout) but not published.
UNPUBLISHED: Final = frozenset({"format_mark", "connection_wire_resistances"})


Convert = Callable[[Any], Any]


def _to_value(unit: Unit, kind: str) -> Convert | None:
    """raw -> published value for one element; None means "publish the raw value as is"."""
    if kind == "bytes":
        return _text
    if kind == "float":
        digits = unit.digits
        return lambda raw: round(raw, digits) if math.isfinite(raw) else None
    if unit.kind == "bool":
        return bool
    div = unit.div
    if unit.kind == "probe":
        return lambda raw: None if raw == PROBE_ABSENT else raw / div
    if div == 1:
        return None
    return lambda raw: raw / div


def _text(raw: bytes) -> str:
    # Fields are NUL-padded, and some firmware leaves bytes after the first NUL (5.1).
    return raw.split(b"\0", 1)[0].decode("ascii", "replace")


def decoder(field: Field, unit: Unit) -> Convert | None:
    """raw -> published value for a whole field (arrays included)."""
    if field.kind == "records":
        return _records
    one = _to_value(unit, field.kind)
    if field.count is None or one is None:
        return one
    div, digits, isfinite = unit.div, unit.digits, math.isfinite
    # Inlined per element: a call per cell was most of the cost of a cell-info frame.
    if field.kind == "float":
        return lambda raw: [round(x, digits) if isfinite(x) else None for x in raw]
    if unit.kind == "num":
        return lambda raw: [x / div for x in raw]
    return lambda raw: [one(x) for x in raw]


def _records(raw: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in entry.items() if not k.startswith("_")} for entry in raw]


def _to_raw(unit: Unit, field: Field) -> Convert:
    """published value -> raw for one element; None (or missing) -> the zero of the field."""
    if field.kind == "bytes":
        size = field.size

        def text(value: Any) -> bytes:
            raw = b"" if value is None else str(value).encode("ascii")
            if len(raw) > size or b"\0" in raw:
                raise FrameError(f"{field.name}: {value!r} does not fit {size} NUL-padded bytes")
            return raw.ljust(size, b"\0")

        return text
    if field.kind == "float":
        return lambda value: 0.0 if value is None else float(value)
    if unit.kind == "bool":
        return lambda value: int(bool(value))
    div = unit.div
    absent = PROBE_ABSENT if unit.kind == "probe" else 0
    return lambda value: absent if value is None else round(value * div)


def encoder(field: Field, unit: Unit) -> Convert:
    """published value -> raw for a whole field; arrays are padded with zeros to full length."""
    if field.kind == "records":
        return lambda value: _pad(field, [dict(e) for e in value or []], {"t": 0, "code": 0})
    one = _to_raw(unit, field)
    if field.count is None:
        return one
    zero = one(0)
    return lambda value: _pad(field, [one(x) for x in value or []], zero)


def _pad(field: Field, items: list[Any], zero: Any) -> list[Any]:
    count = field.count or 0
    if len(items) > count:
        raise FrameError(f"{field.name}: {len(items)} entries, the frame holds {count}")
    return items + [zero] * (count - len(items))
