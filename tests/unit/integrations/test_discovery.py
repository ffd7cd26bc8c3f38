"""Home Assistant discovery payloads: schema, templates evaluated for real, availability."""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jinja2 import StrictUndefined
from jinja2.sandbox import SandboxedEnvironment

from bluez_jk.errors import Timeout
from bluez_jk.gateway.discovery import (
    WARNING_BITS,
    discovery_configs,
    gateway_device,
    gateway_discovery_configs,
    gateway_identifier,
)
from bluez_jk.gateway.metrics import to_metrics
from bluez_jk.reading import Reading, error_reading, new_reading
from tests.unit.integrations.ha_schema import SCHEMAS
from tests.unit.integrations.readings import VECTOR_SETS, vector_reading, with_cell_info

BASE = "bms"
PREFIX = "homeassistant"
NODE = "pi-garage"

# The jk_bms_ble entity names of syssi/esphome-jk-bms (sensor, binary_sensor, text_sensor);
# where we publish the same quantity we use the same object id.
ESPHOME_NAMES = {
    "min_cell_voltage", "max_cell_voltage", "min_voltage_cell", "max_voltage_cell",
    "delta_cell_voltage", "average_cell_voltage", "total_voltage", "current", "power",
    "charging_power", "discharging_power", "temperature_sensor_1", "temperature_sensor_2",
    "temperature_sensor_3", "temperature_sensor_4", "temperature_sensor_5",
    "mosfet_temperature", "state_of_charge", "state_of_health", "capacity_remaining",
    "full_charge_capacity", "total_battery_capacity_setting", "charging_cycles",
    "total_charging_cycle_capacity", "total_runtime", "balancing_current",
    "emergency_time_countdown", "heating_current", "charge_status_id", "battery_type_id",
    "charging", "discharging", "balancing", "heating", "errors", "errors_bitmask",
}  # fmt: skip
OUR_EXTRAS = re.compile(
    r"^(cell_voltage_\d+|cell_resistance_\d+|warning_[a-z0-9_]+|rssi|last_error|read_duration"
    r"|precharging|charging_switch|discharging_switch|balancer_switch)$"
)

_JINJA = SandboxedEnvironment(undefined=StrictUndefined)
# Checked once: jsonschema.validate() would re-check the schema itself for every payload.
VALIDATORS = {name: jsonschema.Draft202012Validator(schema) for name, schema in SCHEMAS.items()}
for _schema in SCHEMAS.values():
    jsonschema.Draft202012Validator.check_schema(_schema)


def render(template: str, payload: str) -> str:
    """Render a value_template the way HA does: `value` is the payload, `value_json` its JSON."""
    return _JINJA.from_string(template).render(value=payload, value_json=json.loads(payload))


def configs(reading: Reading, name: str = "jk1") -> dict[str, dict[str, Any]]:
    raw = discovery_configs(name, reading, base_topic=BASE, prefix=PREFIX, node_id=NODE)
    return {topic: json.loads(payload) for topic, payload in raw.items()}


def state_payloads(reading: Reading, name: str = "jk1") -> dict[str, str]:
    """What the gateway publishes for this Reading, by topic."""
    return {
        f"{BASE}/jk/{name}/metrics": json.dumps(to_metrics(reading)),
        f"{BASE}/jk/{name}/raw": json.dumps(reading),
    }


def is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


@pytest.mark.parametrize("set_name", sorted(VECTOR_SETS))
def test_payloads_validate_against_ha_schema(set_name: str) -> None:
    for topic, config in configs(vector_reading(set_name)).items():
        component = topic.split("/")[1]
        VALIDATORS[component].validate(config)


@pytest.mark.parametrize("set_name", sorted(VECTOR_SETS))
def test_every_template_resolves_on_a_real_reading(set_name: str) -> None:
    reading = vector_reading(set_name)
    payloads = state_payloads(reading)
    for topic, config in configs(reading).items():
        state = render(config["value_template"], payloads[config["state_topic"]])
        assert state, topic
        assert state.strip() == state, (topic, state)
        if topic.startswith(f"{PREFIX}/binary_sensor/"):
            assert state in (config["payload_on"], config["payload_off"]), (topic, state)
        elif "unit_of_measurement" in config or "state_class" in config:
            assert is_number(state), (topic, state)
        else:
            assert len(state) <= 255, topic


def test_values_match_the_reading() -> None:
    reading = vector_reading("jk02_32s_v19_27")
    payloads = state_payloads(reading)
    by_entity = {c["default_entity_id"]: c for c in configs(reading).values()}

    def state(entity_id: str) -> str:
        config = by_entity[entity_id]
        return render(config["value_template"], payloads[config["state_topic"]])

    assert float(state("sensor.jk1_total_voltage")) == 54.028
    assert float(state("sensor.jk1_current")) == -0.727
    assert float(state("sensor.jk1_power")) == pytest.approx(-39.28, abs=0.01)
    assert float(state("sensor.jk1_state_of_charge")) == 100
    assert float(state("sensor.jk1_charging_cycles")) == 5
    assert float(state("sensor.jk1_mosfet_temperature")) == 12.8
    voltages = reading["status"]["cell_info"]["voltages"][:16]
    assert float(state("sensor.jk1_cell_voltage_1")) == voltages[0]
    assert float(state("sensor.jk1_cell_voltage_16")) == voltages[15]
    assert "sensor.jk1_cell_voltage_17" not in by_entity
    assert float(state("sensor.jk1_delta_cell_voltage")) == round(max(voltages) - min(voltages), 3)
    assert state("binary_sensor.jk1_charging") == "ON"
    assert state("binary_sensor.jk1_balancing") == "OFF"
    assert state("sensor.jk1_errors") == "none"
    assert state("sensor.jk1_last_error") == "none"


def test_named_warnings_follow_the_error_bitmask() -> None:
    # bit 4 cell OVP, bit 8 charge OTP, bit 19 "modify password in time" (set in the 11.50 sample)
    reading = with_cell_info(
        vector_reading("jk02_32s_v19_05"), error_bitmask=(1 << 4) | (1 << 8) | (1 << 19)
    )
    payloads = state_payloads(reading)
    on = set()
    for config in configs(reading).values():
        if config["default_entity_id"].startswith("binary_sensor.jk1_warning_"):
            if render(config["value_template"], payloads[config["state_topic"]]) == "ON":
                on.add(config["default_entity_id"].removeprefix("binary_sensor.jk1_warning_"))
            assert config["device_class"] == "problem"
    assert on == {"cell_overvoltage", "charge_overtemperature", "modify_password_in_time"}
    errors = next(
        c for c in configs(reading).values() if c["default_entity_id"] == "sensor.jk1_errors"
    )
    assert render(errors["value_template"], payloads[errors["state_topic"]]) == (
        "Cell overvoltage, Charge overtemperature, Modify password in time"
    )


def test_24s_has_16_warning_bits_and_jk04_none() -> None:
    warnings_24s = [t for t in configs(vector_reading("jk02_24s_v10_07")) if "_warning_" in t]
    assert len(warnings_24s) == 16
    assert not [t for t in configs(vector_reading("jk04_v3_3_0")) if "_warning_" in t]
    assert len([t for t in configs(vector_reading("jk02_32s_v19_05")) if "_warning_" in t]) == len(
        WARNING_BITS
    )


def test_last_error_reads_raw_and_survives_failed_reads() -> None:
    good = vector_reading()
    config = next(
        c for c in configs(good).values() if c["default_entity_id"].endswith("_last_error")
    )
    assert config["state_topic"] == f"{BASE}/jk/jk1/raw"
    failed = error_reading("jk1", good["address"], "hci0", Timeout("no answer", stage="collect"))
    assert render(config["value_template"], json.dumps(failed)) == "Timeout"


@pytest.mark.parametrize("set_name", sorted(VECTOR_SETS))
def test_availability_follows_device_and_gateway(set_name: str) -> None:
    for config in configs(vector_reading(set_name)).values():
        assert config["availability_mode"] == "all"
        assert config["availability"] == [
            {
                "topic": f"{BASE}/jk/jk1/online",
                "payload_available": "true",
                "payload_not_available": "false",
            },
            {
                "topic": f"{BASE}/gateway/online",
                "payload_available": "true",
                "payload_not_available": "false",
            },
        ]


def test_one_device_per_bms_via_the_gateway() -> None:
    reading = vector_reading("jk02_32s_v19_05")
    devices = {json.dumps(c["device"], sort_keys=True) for c in configs(reading).values()}
    assert len(devices) == 1
    device = json.loads(devices.pop())
    assert device["identifiers"] == ["bluez_jk_503013s49410180"]
    assert device["serial_number"] == "503013S49410180"
    assert device["model"] == "JK_PB2A16S20P"
    assert (device["hw_version"], device["sw_version"]) == ("19H", "19.05")
    assert device["via_device"] == gateway_identifier(NODE)
    assert device["connections"] == [["bluetooth", "C8:47:80:37:02:E8"]]
    assert gateway_device(NODE)["identifiers"] == [gateway_identifier(NODE)]


def test_two_bms_do_not_collide() -> None:
    first = configs(vector_reading("jk02_32s_v19_05", name="jk1"), "jk1")
    second = configs(
        vector_reading("jk02_32s_v19_27", name="jk2", address="C8:47:80:00:00:02"), "jk2"
    )
    assert not set(first) & set(second)
    ids = [c["unique_id"] for c in [*first.values(), *second.values()]]
    assert len(ids) == len(set(ids))


def test_object_ids_match_esphome_names() -> None:
    for topic, config in configs(vector_reading("jk02_32s_v19_05")).items():
        component, node, object_id, _ = topic.split("/")[1:]
        assert node == "pi_garage"
        entity = object_id.removeprefix("jk1_")
        assert entity in ESPHOME_NAMES or OUR_EXTRAS.match(entity), entity
        assert config["default_entity_id"] == f"{component}.jk1_{entity}"
        assert config["unique_id"].endswith(f"_{entity}")


def test_absent_probe_drops_its_entity() -> None:
    reading = vector_reading("jk02_32s_v19_05")
    before = configs(reading)
    after = configs(with_cell_info(reading, temperature_sensor_2=None))
    gone = set(before) - set(after)
    assert gone == {f"{PREFIX}/sensor/pi_garage/jk1_temperature_sensor_2/config"}


def test_device_without_serial_uses_the_address() -> None:
    reading = vector_reading()
    reading["status"]["device_info"] = {}
    device = next(iter(configs(reading).values()))["device"]
    assert device["identifiers"] == ["bluez_jk_c8_47_80_37_02_e8"]


def test_gateway_device_config() -> None:
    ((topic, payload),) = gateway_discovery_configs(
        base_topic=BASE, prefix=PREFIX, node_id=NODE
    ).items()
    config = json.loads(payload)
    VALIDATORS["binary_sensor"].validate(config)
    assert topic == f"{PREFIX}/binary_sensor/pi_garage/gateway_online/config"
    assert config["state_topic"] == f"{BASE}/gateway/online"
    assert render("{{ value }}", "true") == config["payload_on"]


@pytest.mark.parametrize(
    "change",
    [
        {"unit_of_measurement": "A"},  # voltage measured in amperes
        {"state_class": "total_increasing"},  # not allowed for voltage
        {"entity_category": "config"},  # sensors cannot be config entities
        {"availability_topic": "bms/gateway/online"},  # exclusive with availability
        {"unique_id": None},
        {"stat_t": "bms/jk/jk1/metrics"},  # abbreviations are not used, typos are caught
    ],
)
def test_schema_rejects_what_ha_rejects(change: dict[str, Any]) -> None:
    config = next(
        c
        for c in configs(vector_reading()).values()
        if c["default_entity_id"] == "sensor.jk1_total_voltage"
    )
    VALIDATORS["sensor"].validate(config)
    config.update(change)
    config = {k: v for k, v in config.items() if v is not None}
    with pytest.raises(jsonschema.ValidationError):
        VALIDATORS["sensor"].validate(config)


@settings(max_examples=50, deadline=None)
@given(
    cell_info=st.dictionaries(
        st.sampled_from(
            [
                "total_voltage",
                "current",
                "battery_soc",
                "temperature_sensor_1",
                "temperature_sensor_3",
                "temperature_mos",
                "error_bitmask",
                "charging_switch_enabled",
                "balancing_action",
                "cycle_count",
                "state_of_health",
            ]
        ),
        st.one_of(st.none(), st.booleans(), st.integers(0, 2**32 - 1), st.floats(-50, 100)),
    ),
    cells=st.integers(0, 32),
    protocol=st.sampled_from(["JK02_24S", "JK02_32S", "JK04"]),
    serial=st.one_of(st.none(), st.text(min_size=1, max_size=16)),
)
def test_any_reading_gives_valid_payloads_whose_templates_resolve(
    cell_info: dict[str, Any], cells: int, protocol: str, serial: str | None
) -> None:
    reading = new_reading("jk-2", "C8:47:80:37:02:E8", None)
    reading["protocol"] = protocol  # type: ignore[typeddict-item]
    reading["status"]["cell_info"] = {
        **cell_info,
        "voltages": [3.3] * cells,
        "resistances": [0.08] * cells,
    }
    if serial is not None:
        reading["status"]["device_info"]["serial_number"] = serial
    payloads = state_payloads(reading, "jk-2")
    result = configs(reading, "jk-2")
    assert len({c["unique_id"] for c in result.values()}) == len(result)
    for topic, config in result.items():
        VALIDATORS[topic.split("/")[1]].validate(config)
        assert render(config["value_template"], payloads[config["state_topic"]])
        assert re.fullmatch(r"bluez_jk_[a-z0-9_]+", config["device"]["identifiers"][0])
