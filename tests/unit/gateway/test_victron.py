"""The Venus OS driver JSON (victron.py) against the driver's documented keys and our
docs/mqtt.md field table, field by field; the alarm mapping on a table of cases."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from bluez_jk.gateway.charge_control import ChargeController, ChargeSettings, Limits
from bluez_jk.gateway.victron import Modules, to_victron
from tests.unit.gateway.packs import pack_metrics, with_cell

# The reference page docs/mqtt.md, "`<base>/jk/<name>/victron`".
MQTT_DOC = Path(__file__).resolve().parents[3] / "docs" / ("mqtt" + ".md")
SETTINGS = ChargeSettings()

# The keys dbus-mqtt-battery documents (its README "JSON structure", full example) plus the
# extra D-Bus paths its battery_dict lists (HighCellVoltage, InternalFailure, BmsCable,
# ChargeMode, ChargeLimitation, DischargeLimitation). `Voltages.Cell<n>` for every n.
DRIVER_KEYS = frozenset(
    {
        *(f"Dc.{k}" for k in ("Power", "Voltage", "Current", "Temperature")),
        "InstalledCapacity", "ConsumedAmphours", "Capacity", "Soc", "Soh", "TimeToGo",
        "Balancing", "SystemSwitch", "Heating",
        *(f"Alarms.{k}" for k in (
            "LowVoltage", "HighVoltage", "LowSoc", "HighChargeCurrent", "HighDischargeCurrent",
            "HighCurrent", "CellImbalance", "HighChargeTemperature", "LowChargeTemperature",
            "LowCellVoltage", "LowTemperature", "HighTemperature", "FuseBlown",
            "HighCellVoltage", "InternalFailure", "BmsCable", "HighInternalTemperature",
            "StateOfHealth")),
        *(f"Info.{k}" for k in (
            "ChargeRequest", "MaxChargeVoltage", "MaxChargeCurrent", "MaxDischargeCurrent",
            "MaxChargeCellVoltage", "ChargeMode", "ChargeLimitation", "DischargeLimitation")),
        *(f"History.{k}" for k in (
            "ChargeCycles", "MinimumVoltage", "MaximumVoltage", "TotalAhDrawn")),
        *(f"System.{k}" for k in (
            "MinVoltageCellId", "MinCellVoltage", "MaxVoltageCellId", "MaxCellVoltage",
            "MinTemperatureCellId", "MinCellTemperature", "MaxTemperatureCellId",
            "MaxCellTemperature", "MOSTemperature", "NrOfModulesOnline", "NrOfModulesOffline",
            "NrOfCellsPerBattery", "NrOfModulesBlockingCharge", "NrOfModulesBlockingDischarge")),
        "Voltages.Cell<n>",
        *(f"Io.{k}" for k in (
            "AllowToCharge", "AllowToDischarge", "AllowToBalance", "AllowToHeat",
            "ExternalRelay")),
    }
)  # fmt: skip
# What the driver needs to start (README, "Minimum required to start the driver").
DRIVER_REQUIRED = ("Dc.Power", "Dc.Voltage", "Soc")

TYPES: dict[str, tuple[type, ...]] = {
    "number": (int, float),
    "integer": (int,),
    "string": (str,),
}


def documented() -> dict[str, tuple[str, str]]:
    """key -> (unit, type) from the table of docs/mqtt.md's victron section."""
    text = MQTT_DOC.read_text(encoding="utf-8")
    section = text.split("## `<base>/jk/<name>/victron`", 1)[1].split("| alarm |", 1)[0]
    rows = re.findall(r"^\| `([A-Za-z.<>]+)` \|([^|]*)\|([^|]*)\|", section, re.MULTILINE)
    return {key: (unit.strip(), kind.strip()) for key, unit, kind in rows if kind.strip()}


def flatten(payload: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in payload.items():
        if isinstance(value, dict):
            for sub, item in value.items():
                name = re.sub(r"^Cell\d+$", "Cell<n>", sub) if key == "Voltages" else sub
                name = "<name>" if key == "Alarms" else name
                out[f"{key}.{name}"] = item
        else:
            out[key] = value
    return out


def payload_of(metrics: dict[str, float], *, stale: bool = False) -> dict[str, Any]:
    controller = ChargeController(SETTINGS)
    controller.feed(metrics, 0.0)
    limits = controller.tick(1000.0) if stale else controller.feed(metrics, 100.0)
    return to_victron(metrics, {}, limits, SETTINGS)


def test_the_documented_table_names_only_driver_keys() -> None:
    table = documented()
    assert len(table) > 30
    alarm_names = set(re.findall(r"^\| `(\w+)` \| ", _alarm_table(), re.MULTILINE))
    keys = {k for k in table if k != "Alarms.<name>"} | {f"Alarms.{a}" for a in alarm_names}
    assert keys - DRIVER_KEYS == set()


def _alarm_table() -> str:
    text = MQTT_DOC.read_text(encoding="utf-8")
    return text.split("| alarm | 2 (alarm) when |", 1)[1].split("\n\n", 1)[0]


@pytest.mark.parametrize("stale", [False, True])
def test_the_payload_has_exactly_the_documented_keys_with_their_types(stale: bool) -> None:
    table = documented()
    flat = flatten(payload_of(pack_metrics(current=-10.0), stale=stale))
    assert set(flat) == set(table)
    for key, value in flat.items():
        unit, kind = table[key]
        base, _, nullable = kind.partition(" or ")
        if value is None:
            assert nullable == "null", (key, kind)
        else:
            assert isinstance(value, TYPES[base]), (key, value)
            assert not isinstance(value, bool), (key, value)
        if unit == "0/1":
            assert value in (0, 1, None), key


def test_every_alarm_is_documented_and_a_driver_alarm() -> None:
    payload = payload_of(pack_metrics())
    documented_alarms = set(re.findall(r"^\| `(\w+)` \| ", _alarm_table(), re.MULTILINE))
    assert set(payload["Alarms"]) == documented_alarms
    assert {f"Alarms.{a}" for a in documented_alarms} <= DRIVER_KEYS


def test_the_keys_the_driver_needs_to_start_are_numbers_when_fresh() -> None:
    flat = flatten(payload_of(pack_metrics()))
    for key in DRIVER_REQUIRED:
        assert isinstance(flat[key], int | float), key


def test_fresh_values_come_from_the_metrics() -> None:
    metrics = pack_metrics(with_cell(3.25, index=3), soc=67, current=-14.0, temps=(21.0, 24.5))
    p = payload_of(metrics)
    assert p["Dc"] == {
        "Power": metrics["power"],
        "Voltage": metrics["total_voltage"],
        "Current": -14.0,
        "Temperature": 24.5,
    }
    assert (p["Soc"], p["Capacity"], p["InstalledCapacity"]) == (67, 187.6, 280.0)
    assert p["ConsumedAmphours"] == pytest.approx(92.4)
    assert p["TimeToGo"] == round(187.6 / 14.0 * 3600)
    assert p["System"]["MinVoltageCellId"] == "C3"
    assert p["System"]["MinCellVoltage"] == 3.25
    assert (p["System"]["MinTemperatureCellId"], p["System"]["MaxTemperatureCellId"]) == (
        "T1",
        "T2",
    )
    assert p["Voltages"]["Cell3"] == 3.25
    assert len(p["Voltages"]) == 16
    assert p["Io"] == {"AllowToCharge": 1, "AllowToDischarge": 1, "AllowToBalance": 1}
    assert p["Info"]["MaxChargeVoltage"] == 55.2


def test_time_to_go_is_null_unless_discharging() -> None:
    assert payload_of(pack_metrics(current=5.0))["TimeToGo"] is None
    assert payload_of(pack_metrics(current=0.0))["TimeToGo"] is None


def test_stale_data_is_null_never_the_last_numbers_and_blocks() -> None:
    p = payload_of(pack_metrics(current=-10.0), stale=True)
    flat = flatten(p)
    measured = [k for k in flat if not k.startswith(("Io.", "Info.", "Alarms.", "System.Nr"))]
    assert measured
    assert all(flat[k] is None for k in measured), measured
    assert flat["System.NrOfCellsPerBattery"] is None
    assert p["Io"] == {"AllowToCharge": 0, "AllowToDischarge": 0, "AllowToBalance": 0}
    assert (p["Info"]["MaxChargeCurrent"], p["Info"]["MaxDischargeCurrent"]) == (0, 0)
    assert p["Alarms"]["BmsCable"] == 2
    assert sum(p["Alarms"].values()) == 2
    assert p["System"]["NrOfModulesOnline"] == 0
    assert p["System"]["NrOfModulesOffline"] == 1


def test_modules_are_passed_through_for_a_bank() -> None:
    limits = ChargeController(SETTINGS).feed(pack_metrics(), 0.0)
    p = to_victron(pack_metrics(), {}, limits, SETTINGS, modules=Modules(2, 1, 1, 2))
    assert p["System"]["NrOfModulesOnline"] == 2
    assert p["System"]["NrOfModulesBlockingDischarge"] == 2


def fresh_limits(metrics: dict[str, float]) -> Limits:
    return ChargeController(SETTINGS).feed(metrics, 0.0)


# (case, metrics, BMS warnings, {alarm: level}); every alarm not named must be 0.
ALARM_CASES: list[tuple[str, dict[str, float], dict[str, bool], dict[str, int]]] = [
    ("all fine", pack_metrics(), {}, {}),
    (
        "BMS cell overvoltage",
        pack_metrics(),
        {"cell_overvoltage": True},
        {"HighVoltage": 2, "HighCellVoltage": 2},
    ),
    (
        "a cell past the limit",
        pack_metrics(with_cell(3.56, rest=3.50)),
        {},
        {"HighVoltage": 1, "HighCellVoltage": 1},
    ),
    (
        "a low cell",
        pack_metrics(with_cell(2.85, rest=2.92)),
        {},
        {"LowVoltage": 1, "LowCellVoltage": 1},
    ),
    ("BMS pack undervoltage", pack_metrics(), {"pack_undervoltage": True}, {"LowVoltage": 2}),
    ("SOC 8 %", pack_metrics(soc=8), {}, {"LowSoc": 1}),
    ("SOC 4 %", pack_metrics(soc=4), {}, {"LowSoc": 2}),
    (
        "BMS charge overcurrent",
        pack_metrics(),
        {"charge_overcurrent": True},
        {"HighChargeCurrent": 2, "HighCurrent": 2},
    ),
    (
        "discharging beyond the maximum",
        pack_metrics(current=-120.0),
        {},
        {"HighDischargeCurrent": 1, "HighCurrent": 1},
    ),
    (
        "BMS discharge overcurrent II",
        pack_metrics(),
        {"discharge_overcurrent_2": True},
        {"HighDischargeCurrent": 2, "HighCurrent": 2},
    ),
    ("cells 120 mV apart", pack_metrics(with_cell(3.18)), {}, {"CellImbalance": 1}),
    (
        "cells 250 mV apart",
        pack_metrics(with_cell(3.05)),
        {},
        {"CellImbalance": 2},
    ),
    (
        "cold, derating",
        pack_metrics(temps=(3.0,)),
        {},
        {"LowChargeTemperature": 1, "LowTemperature": 1},
    ),
    (
        "hot, derating",
        pack_metrics(temps=(50.0,)),
        {},
        {"HighChargeTemperature": 1, "HighTemperature": 1},
    ),
    (
        "BMS charge undertemp",
        pack_metrics(),
        {"charge_undertemp": True},
        {"LowChargeTemperature": 2},
    ),
    ("BMS MOSFET overtemp", pack_metrics(), {"mosfet_overtemp": True}, {"HighTemperature": 2}),
    (
        "BMS current sensor anomaly",
        pack_metrics(),
        {"current_sensor_anomaly": True},
        {"InternalFailure": 2},
    ),
    ("a warning that is off", pack_metrics(), {"cell_overvoltage": False}, {}),
]


@pytest.mark.parametrize(("case", "metrics", "warnings", "expected"), ALARM_CASES)
def test_alarms(
    case: str, metrics: dict[str, float], warnings: dict[str, bool], expected: dict[str, int]
) -> None:
    p = to_victron(metrics, warnings, fresh_limits(metrics), SETTINGS)
    got = {name: level for name, level in p["Alarms"].items() if level}
    assert got == expected, case
