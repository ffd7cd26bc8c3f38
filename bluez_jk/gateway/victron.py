"""The JSON of Venus OS's MQTT battery driver (`dbus-mqtt-battery`) from metrics (pure).

The driver (github.com/mr-manuel/venus-os_dbus-mqtt-battery, README "JSON structure") turns
each message on its topic into the D-Bus paths of a `com.victronenergy.battery` service:
`{"Dc": {"Voltage": ..}}` becomes `/Dc/0/Voltage`. It keeps a path's last value when a key is
missing and accepts `null` for "unknown", so a stale battery sends `null` for every measured
value instead of leaving the last numbers standing (docs/mqtt.md, "`<base>/jk/<name>/victron`").
`Dc`, `Dc.Power`, `Dc.Voltage` and `Soc` are what the driver needs to start.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from bluez_jk.gateway.charge_control import (
    ChargeSettings,
    Limits,
    Number,
    cell_values,
    interpolate,
    temperatures,
)

# Alarm levels of the driver: 0 ok, 1 warning, 2 alarm.
OK, WARNING, ALARM = 0, 1, 2
# Warnings of our own (the BMS's own bits are alarms): the SOC and cell delta thresholds.
LOW_SOC_WARNING_PCT = 10.0
LOW_SOC_ALARM_PCT = 5.0
CELL_IMBALANCE_WARNING_V = 0.1
CELL_IMBALANCE_ALARM_V = 0.2

# Driver alarm -> the BMS warnings (status.warnings, docs/protocol.md 7) that raise it to 2.
BMS_ALARMS: dict[str, tuple[str, ...]] = {
    "LowVoltage": ("pack_undervoltage", "cell_undervoltage"),
    "HighVoltage": ("pack_overvoltage", "cell_overvoltage"),
    "LowCellVoltage": ("cell_undervoltage",),
    "HighCellVoltage": ("cell_overvoltage",),
    "LowSoc": (),
    "HighChargeCurrent": ("charge_overcurrent", "charge_short_circuit"),
    "HighDischargeCurrent": (
        "discharge_overcurrent",
        "discharge_overcurrent_2",
        "discharge_overcurrent_3",
        "discharge_short_circuit",
    ),
    "HighCurrent": (),  # the worse of the two above
    "CellImbalance": (),
    "HighChargeTemperature": ("charge_overtemp",),
    "LowChargeTemperature": ("charge_undertemp",),
    "HighTemperature": ("discharge_overtemp", "battery_overtemp", "mosfet_overtemp"),
    "LowTemperature": ("discharge_undertemp",),
    "InternalFailure": (
        "current_sensor_anomaly",
        "cell_count_wrong",
        "coprocessor_communication",
        "charge_mosfet_abnormal",
        "discharge_mosfet_abnormal",
        "discharge_on_failed",
        "temperature_sensor_anomaly",
        "scp_release_failed",
    ),
    "BmsCable": (),  # no fresh data from the BMS
}


@dataclass(frozen=True)
class Modules:
    """How many packs a message stands for (1 for a battery, the members for a bank)."""

    online: int = 1
    offline: int = 0
    blocking_charge: int = 0
    blocking_discharge: int = 0


@dataclass(frozen=True)
class Extremes:
    """Where the lowest/highest cell voltage and temperature are (driver ids, e.g. `C3`)."""

    min_cell: str | None = None
    max_cell: str | None = None
    min_temp: str | None = None
    max_temp: str | None = None
    min_temp_c: float | None = None
    max_temp_c: float | None = None


def battery_extremes(metrics: Mapping[str, Number], settings: ChargeSettings) -> Extremes:
    probes = temperatures(metrics, settings.temperature_probes)
    low = min(probes, key=lambda p: p[1], default=None)
    high = max(probes, key=lambda p: p[1], default=None)
    return Extremes(
        min_cell=f"C{int(metrics['cell_v_min_cell'])}" if "cell_v_min_cell" in metrics else None,
        max_cell=f"C{int(metrics['cell_v_max_cell'])}" if "cell_v_max_cell" in metrics else None,
        min_temp=low[0] if low else None,
        max_temp=high[0] if high else None,
        min_temp_c=low[1] if low else None,
        max_temp_c=high[1] if high else None,
    )


def _level(alarm: bool, warning: bool) -> int:
    return ALARM if alarm else WARNING if warning else OK


def _side_warning(table: Iterable[tuple[float, float]], temps: list[float], high: bool) -> bool:
    """A temperature on the `high` (or low) side of a derating table where it limits (< 1)."""
    points = list(table)
    full = [x for x, y in points if y >= 1.0]
    if not full or not temps:
        return False
    edge = max(full) if high else min(full)
    return any(
        (t > edge if high else t < edge) and interpolate(tuple(points), t) < 1 for t in temps
    )


def alarms(
    metrics: Mapping[str, Number],
    warnings: Mapping[str, bool],
    settings: ChargeSettings,
    *,
    stale: bool,
) -> dict[str, int]:
    """The driver's `Alarms`: 2 where the BMS reports the fault, 1 where our limits bite."""
    bms = {key: any(warnings.get(w) for w in names) for key, names in BMS_ALARMS.items()}
    low = metrics.get("cell_v_min")
    high = metrics.get("cell_v_max")
    temps = [t for _, t in temperatures(metrics, settings.temperature_probes)]
    soc = metrics.get("soc")
    current = float(metrics.get("current", 0.0))
    delta = metrics.get("cell_v_delta")
    s = settings
    out = {
        "LowVoltage": _level(bms["LowVoltage"], low is not None and low < s.cell_voltage_min_v),
        "HighVoltage": _level(
            bms["HighVoltage"], high is not None and high >= s.cell_voltage_limit_v
        ),
        "LowCellVoltage": _level(
            bms["LowCellVoltage"], low is not None and low < s.cell_voltage_min_v
        ),
        "HighCellVoltage": _level(
            bms["HighCellVoltage"], high is not None and high >= s.cell_voltage_limit_v
        ),
        "LowSoc": _level(
            soc is not None and soc <= LOW_SOC_ALARM_PCT,
            soc is not None and soc <= LOW_SOC_WARNING_PCT,
        ),
        "HighChargeCurrent": _level(bms["HighChargeCurrent"], current > s.max_charge_current_a),
        "HighDischargeCurrent": _level(
            bms["HighDischargeCurrent"], -current > s.max_discharge_current_a
        ),
        "CellImbalance": _level(
            delta is not None and delta >= CELL_IMBALANCE_ALARM_V,
            delta is not None and delta >= CELL_IMBALANCE_WARNING_V,
        ),
        "HighChargeTemperature": _level(
            bms["HighChargeTemperature"],
            _side_warning(s.charge_temperature_table, temps, high=True),
        ),
        "LowChargeTemperature": _level(
            bms["LowChargeTemperature"],
            _side_warning(s.charge_temperature_table, temps, high=False),
        ),
        "HighTemperature": _level(
            bms["HighTemperature"],
            _side_warning(s.discharge_temperature_table, temps, high=True),
        ),
        "LowTemperature": _level(
            bms["LowTemperature"],
            _side_warning(s.discharge_temperature_table, temps, high=False),
        ),
        "InternalFailure": _level(bms["InternalFailure"], False),
        "BmsCable": _level(stale, False),
    }
    out["HighCurrent"] = max(out["HighChargeCurrent"], out["HighDischargeCurrent"])
    if stale:
        # Levels computed from old numbers are no better than the numbers themselves.
        return {key: (ALARM if key == "BmsCable" else OK) for key in BMS_ALARMS}
    return {key: out[key] for key in BMS_ALARMS}


def _get(metrics: Mapping[str, Number], key: str, stale: bool) -> Number | None:
    return None if stale else metrics.get(key)


def to_victron(
    metrics: Mapping[str, Number],
    warnings: Mapping[str, bool],
    limits: Limits,
    settings: ChargeSettings,
    *,
    modules: Modules | None = None,
    extremes: Extremes | None = None,
) -> dict[str, Any]:
    """The driver's JSON. Stale data (`limits.mode` stale/no_data) gives nulls, never numbers."""
    stale = limits.mode in ("stale", "no_data")
    if modules is None:
        modules = Modules(0, 1, 1, 1) if stale else Modules()
    where = extremes or battery_extremes(metrics, settings)

    def get(key: str) -> Number | None:
        return _get(metrics, key, stale)

    current = get("current")
    remain = get("capacity_remain")
    installed = get("capacity_nominal")
    consumed = (
        round(max(0.0, installed - remain), 3)
        if installed is not None and remain is not None
        else None
    )
    time_to_go: int | None = None
    if current is not None and remain is not None and current < 0:
        # Seconds until empty at the present discharge current; the GUI shows "infinite"
        # for null, which is right while charging or idle.
        time_to_go = round(remain / -current * 3600)
    # The driver keeps a cell's last value when its key is missing: a stale one gets null.
    cells: list[float | None] = [None if stale else v for v in cell_values(metrics)]
    temp = None if stale else where.max_temp_c
    payload: dict[str, Any] = {
        "Dc": {
            "Power": get("power"),
            "Voltage": get("total_voltage"),
            "Current": current,
            "Temperature": temp,
        },
        "Soc": get("soc"),
        "Soh": get("soh"),
        "Capacity": remain,
        "InstalledCapacity": installed,
        "ConsumedAmphours": consumed,
        "TimeToGo": time_to_go,
        "Balancing": get("balancing"),
        "History": {"ChargeCycles": get("cycles")},
        "System": {
            "MinCellVoltage": get("cell_v_min"),
            "MaxCellVoltage": get("cell_v_max"),
            "MinVoltageCellId": None if stale else where.min_cell,
            "MaxVoltageCellId": None if stale else where.max_cell,
            "MinCellTemperature": None if stale else where.min_temp_c,
            "MaxCellTemperature": temp,
            "MinTemperatureCellId": None if stale else where.min_temp,
            "MaxTemperatureCellId": None if stale else where.max_temp,
            "MOSTemperature": get("temp_mos"),
            "NrOfCellsPerBattery": get("cell_count"),
            "NrOfModulesOnline": modules.online,
            "NrOfModulesOffline": modules.offline,
            "NrOfModulesBlockingCharge": modules.blocking_charge,
            "NrOfModulesBlockingDischarge": modules.blocking_discharge,
        },
        "Io": {
            "AllowToCharge": int(limits.allow_charge),
            "AllowToDischarge": int(limits.allow_discharge),
            "AllowToBalance": 0 if stale else int(metrics.get("balancer_switch", 1) != 0),
        },
        "Alarms": alarms(metrics, warnings, settings, stale=stale),
        "Info": {
            "MaxChargeVoltage": limits.cvl_v,
            "MaxChargeCurrent": limits.ccl_a,
            "MaxDischargeCurrent": limits.dcl_a,
            "MaxChargeCellVoltage": settings.cell_voltage_max_v,
            "ChargeMode": limits.mode,
            "ChargeLimitation": limits.charge_limited_by,
            "DischargeLimitation": limits.discharge_limited_by,
        },
        "Voltages": {
            f"Cell{index}": None if v is None else round(v, 3)
            for index, v in enumerate(cells, start=1)
        },
    }
    return payload
