"""Home Assistant MQTT discovery: the retained config payloads for one BMS (pure, no I/O).

`discovery_configs` returns the complete current set of config topics for one device; the
gateway publishes them retained and clears (empty retained payload) any topic it published
before that is no longer in the set, e.g. when a temperature probe disappears.

Entity object ids are the esphome-jk-bms `jk_bms_ble` names (`total_voltage`,
`cell_voltage_1`, `state_of_charge`, `mosfet_temperature`, ...) so that entity ids come out as
`sensor.<name>_cell_voltage_1`, which is what community JK-BMS dashboard cards expect. Every
numeric entity reads the flat `metrics` payload (one template per key, see `metrics.py`);
only the last error comes from `raw`, which is also published after failed reads.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from bluez_jk import __version__
from bluez_jk.gateway.metrics import to_metrics
from bluez_jk.reading import Reading

Component = Literal["sensor", "binary_sensor", "switch"]
Source = Literal["metrics", "raw"]

MANUFACTURER = "Jikong (JK-BMS)"
# The gateway publishes `true` / `false` on both availability topics (docs/mqtt.md).
PAYLOAD_AVAILABLE = "true"
PAYLOAD_NOT_AVAILABLE = "false"

# Error bitmask bit -> (object id suffix, label), docs/protocol.md 7 (little-endian order, the
# official register map). 24S frames carry bits 0..15, 32S frames bits 0..28.
WARNING_BITS: tuple[tuple[str, str], ...] = (
    ("wire_resistance", "Wire resistance"),
    ("mosfet_overtemperature", "MOSFET overtemperature"),
    ("cell_count_mismatch", "Cell count mismatch"),
    ("current_sensor_anomaly", "Current sensor anomaly"),
    ("cell_overvoltage", "Cell overvoltage"),
    ("pack_overvoltage", "Pack overvoltage"),
    ("charge_overcurrent", "Charge overcurrent"),
    ("charge_short_circuit", "Charge short circuit"),
    ("charge_overtemperature", "Charge overtemperature"),
    ("charge_undertemperature", "Charge undertemperature"),
    ("coprocessor_communication", "Coprocessor communication error"),
    ("cell_undervoltage", "Cell undervoltage"),
    ("pack_undervoltage", "Pack undervoltage"),
    ("discharge_overcurrent", "Discharge overcurrent"),
    ("discharge_short_circuit", "Discharge short circuit"),
    ("discharge_overtemperature", "Discharge overtemperature"),
    ("charge_mosfet_abnormal", "Charge MOSFET abnormal"),
    ("discharge_mosfet_abnormal", "Discharge MOSFET abnormal"),
    ("gps_disconnected", "GPS disconnected"),
    ("modify_password_in_time", "Modify password in time"),
    ("discharge_on_failed", "Discharge on failed"),
    ("battery_overtemperature", "Battery overtemperature"),
    ("temperature_sensor_anomaly", "Temperature sensor anomaly"),
    ("plc_module_anomaly", "PLC module anomaly"),
    ("scp_release_failed", "SCP release failed"),
    ("discharge_overcurrent_2", "Discharge overcurrent II"),
    ("discharge_overcurrent_3", "Discharge overcurrent III"),
    ("discharge_undertemperature", "Discharge undertemperature"),
    ("gps_remote_lock", "GPS remote lock"),
)
WARNING_BITS_24S = 16
# GPS-module and password-reminder bits mean nothing without those accessories: hidden by default.
WARNING_BITS_HIDDEN = frozenset({"gps_disconnected", "modify_password_in_time", "gps_remote_lock"})


@dataclass(frozen=True)
class Entity:
    """One Home Assistant entity; `key` is the metrics key it shows (or the raw field)."""

    component: Component
    object_id: str
    name: str
    key: str
    source: Source = "metrics"
    template: str | None = None
    device_class: str | None = None
    state_class: str | None = None
    unit: str | None = None
    entity_category: Literal["diagnostic"] | None = None
    icon: str | None = None
    precision: int | None = None
    enabled_by_default: bool = True

    def value_template(self) -> str:
        if self.template is not None:
            return self.template
        if self.component == "binary_sensor":
            return f"{{{{ 'ON' if value_json.{self.key} else 'OFF' }}}}"
        return f"{{{{ value_json.{self.key} }}}}"


def _voltage(object_id: str, name: str, key: str) -> Entity:
    return Entity("sensor", object_id, name, key, device_class="voltage",
                  state_class="measurement", unit="V", precision=3)  # fmt: skip


def _temperature(object_id: str, name: str, key: str) -> Entity:
    return Entity("sensor", object_id, name, key, device_class="temperature",
                  state_class="measurement", unit="°C", precision=1)  # fmt: skip


# Pack-level entities in the order Home Assistant lists them; each appears only when its
# metrics key is in the Reading's metrics.
_PACK_ENTITIES: tuple[Entity, ...] = (
    _voltage("total_voltage", "Total voltage", "total_voltage"),
    Entity("sensor", "current", "Current", "current", device_class="current",
           state_class="measurement", unit="A", precision=3),
    Entity("sensor", "power", "Power", "power", device_class="power",
           state_class="measurement", unit="W", precision=1),
    Entity("sensor", "charging_power", "Charging power", "charging_power", device_class="power",
           state_class="measurement", unit="W", precision=1),
    Entity("sensor", "discharging_power", "Discharging power", "discharging_power",
           device_class="power", state_class="measurement", unit="W", precision=1),
    Entity("sensor", "state_of_charge", "State of charge", "soc", device_class="battery",
           state_class="measurement", unit="%", precision=0),
    Entity("sensor", "state_of_health", "State of health", "soh", state_class="measurement",
           unit="%", icon="mdi:heart-pulse", precision=0),
    Entity("sensor", "capacity_remaining", "Capacity remaining", "capacity_remain",
           state_class="measurement", unit="Ah", icon="mdi:battery-50", precision=2),
    Entity("sensor", "full_charge_capacity", "Full charge capacity", "capacity_nominal",
           state_class="measurement", unit="Ah", icon="mdi:battery", precision=2),
    Entity("sensor", "total_battery_capacity_setting", "Total battery capacity setting",
           "nominal_capacity", unit="Ah", icon="mdi:battery", entity_category="diagnostic",
           precision=1),
    Entity("sensor", "charging_cycles", "Charging cycles", "cycles",
           state_class="total_increasing", icon="mdi:battery-sync", precision=0),
    Entity("sensor", "total_charging_cycle_capacity", "Total charging cycle capacity",
           "cycle_capacity", state_class="total_increasing", unit="Ah", icon="mdi:counter",
           precision=1),
    Entity("sensor", "balancing_current", "Balancing current", "balancing_current",
           device_class="current", state_class="measurement", unit="A", precision=3),
    _voltage("min_cell_voltage", "Min cell voltage", "cell_v_min"),
    _voltage("max_cell_voltage", "Max cell voltage", "cell_v_max"),
    _voltage("delta_cell_voltage", "Delta cell voltage", "cell_v_delta"),
    _voltage("average_cell_voltage", "Average cell voltage", "cell_v_avg"),
    Entity("sensor", "min_voltage_cell", "Min voltage cell", "cell_v_min_cell",
           state_class="measurement", icon="mdi:battery-minus-outline", precision=0),
    Entity("sensor", "max_voltage_cell", "Max voltage cell", "cell_v_max_cell",
           state_class="measurement", icon="mdi:battery-plus-outline", precision=0),
    _temperature("mosfet_temperature", "MOSFET temperature", "temp_mos"),
    Entity("sensor", "heating_current", "Heating current", "heating_current",
           device_class="current", state_class="measurement", unit="A", precision=3,
           enabled_by_default=False),
    Entity("sensor", "total_runtime", "Total runtime", "total_runtime", device_class="duration",
           state_class="total_increasing", unit="s", entity_category="diagnostic"),
    Entity("sensor", "emergency_time_countdown", "Emergency time countdown",
           "emergency_time_countdown", device_class="duration", unit="s",
           entity_category="diagnostic", enabled_by_default=False),
    Entity("sensor", "charge_status_id", "Charge status id", "charge_status_id",
           entity_category="diagnostic", enabled_by_default=False),
    Entity("sensor", "battery_type_id", "Battery type id", "battery_type_id",
           entity_category="diagnostic", enabled_by_default=False),
    Entity("sensor", "errors_bitmask", "Errors bitmask", "error_bitmask",
           entity_category="diagnostic", icon="mdi:alert-circle-outline"),
    Entity("sensor", "rssi", "RSSI", "rssi", device_class="signal_strength",
           state_class="measurement", unit="dBm", entity_category="diagnostic"),
    Entity("sensor", "read_duration", "Read duration", "read_duration_s",
           device_class="duration", state_class="measurement", unit="s",
           entity_category="diagnostic", precision=2, enabled_by_default=False),
    Entity("binary_sensor", "charging", "Charging", "charging", icon="mdi:battery-charging"),
    Entity("binary_sensor", "discharging", "Discharging", "discharging", icon="mdi:power-plug"),
    Entity("binary_sensor", "balancing", "Balancing", "balancing",
           icon="mdi:battery-heart-variant"),
    Entity("binary_sensor", "heating", "Heating", "heating", icon="mdi:radiator"),
    Entity("binary_sensor", "precharging", "Precharging", "precharging",
           entity_category="diagnostic", enabled_by_default=False),
    Entity("binary_sensor", "charging_switch", "Charging switch", "charging_switch",
           entity_category="diagnostic", icon="mdi:toggle-switch"),
    Entity("binary_sensor", "discharging_switch", "Discharging switch", "discharging_switch",
           entity_category="diagnostic", icon="mdi:toggle-switch"),
    Entity("binary_sensor", "balancer_switch", "Balancer switch", "balancer_switch",
           entity_category="diagnostic", icon="mdi:toggle-switch"),
)  # fmt: skip


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def _warnings_text_template(bits: int) -> str:
    """Jinja that lists the set bits' labels, like esphome-jk-bms's `errors` text sensor.

    Plain arithmetic instead of HA's `bitwise_and` filter keeps the template valid in any
    Jinja (the tests evaluate it with stock jinja2). HA caps states at 255 characters.
    """
    labels = json.dumps([label for _, label in WARNING_BITS[:bits]])
    return (
        f"{{% set labels = {labels} %}}"
        "{% set ns = namespace(on=[]) %}"
        "{% for label in labels %}"
        "{% if (value_json.error_bitmask // 2 ** loop.index0) % 2 == 1 %}"
        "{% set ns.on = ns.on + [label] %}"
        "{% endif %}{% endfor %}"
        "{{ (ns.on | join(', ') if ns.on else 'none')[:255] }}"
    )


def _warning_entities(bits: int) -> list[Entity]:
    errors_text = Entity(
        "sensor",
        "errors",
        "Errors",
        "error_bitmask",
        template=_warnings_text_template(bits),
        icon="mdi:alert-circle-outline",
    )
    entities = [errors_text]
    for bit, (slug, label) in enumerate(WARNING_BITS[:bits]):
        entities.append(
            Entity(
                "binary_sensor",
                f"warning_{slug}",
                label,
                "error_bitmask",
                template=(
                    f"{{{{ 'ON' if (value_json.error_bitmask // {1 << bit}) % 2 == 1 "
                    "else 'OFF' }}"
                ),
                device_class="problem",
                entity_category="diagnostic",
                enabled_by_default=slug not in WARNING_BITS_HIDDEN,
            )
        )
    return entities


def entities_for(reading: Reading) -> list[Entity]:
    """Every entity this Reading has data for (the current set for its device)."""
    metrics = to_metrics(reading)
    entities = [e for e in _PACK_ENTITIES if e.key in metrics]
    for index in range(1, int(metrics.get("cell_count", 0)) + 1):
        key = f"cell_v_{index:02d}"
        if key in metrics:
            entities.append(_voltage(f"cell_voltage_{index}", f"Cell voltage {index}", key))
    for index in range(1, int(metrics.get("cell_count", 0)) + 1):
        key = f"cell_r_{index:02d}"
        if key in metrics:
            entities.append(
                Entity("sensor", f"cell_resistance_{index}", f"Cell resistance {index}", key,
                       state_class="measurement", unit="Ω", icon="mdi:omega", precision=3)
            )  # fmt: skip
    for probe in range(1, 6):
        key = f"temp_{probe}"
        if key in metrics:
            entities.append(
                _temperature(f"temperature_sensor_{probe}", f"Temperature sensor {probe}", key)
            )
    if "error_bitmask" in metrics:
        bits = WARNING_BITS_24S if reading["protocol"] == "JK02_24S" else len(WARNING_BITS)
        entities.extend(_warning_entities(bits))
    entities.append(
        Entity(
            "sensor",
            "last_error",
            "Last error",
            "error",
            source="raw",
            template="{{ value_json.error.type if value_json.error else 'none' }}",
            icon="mdi:bluetooth-off",
            entity_category="diagnostic",
        )
    )
    return entities


def gateway_identifier(node_id: str) -> str:
    return f"bluez_jk_gateway_{_slug(node_id)}"


def gateway_device(node_id: str, *, version: str = __version__) -> dict[str, Any]:
    """The Home Assistant device block of the gateway itself (every BMS is `via_device` it)."""
    return {
        "identifiers": [gateway_identifier(node_id)],
        "name": f"bluez-jk gateway {node_id}",
        "manufacturer": "bluez-jk",
        "model": "JK-BMS BLE to MQTT gateway",
        "sw_version": version,
    }


def _origin() -> dict[str, str]:
    return {"name": "bluez-jk", "sw_version": __version__}


def _availability(base_topic: str, name: str) -> list[dict[str, str]]:
    return [
        {
            "topic": f"{base_topic}/jk/{name}/online",
            "payload_available": PAYLOAD_AVAILABLE,
            "payload_not_available": PAYLOAD_NOT_AVAILABLE,
        },
        {
            "topic": f"{base_topic}/gateway/online",
            "payload_available": PAYLOAD_AVAILABLE,
            "payload_not_available": PAYLOAD_NOT_AVAILABLE,
        },
    ]


def gateway_discovery_configs(
    *, base_topic: str, prefix: str, node_id: str, version: str = __version__
) -> dict[str, str]:
    """A connectivity binary sensor for the gateway's own device, on `B/gateway/online`."""
    node = _slug(node_id)
    config = {
        "name": "Online",
        "unique_id": f"{gateway_identifier(node_id)}_online",
        "default_entity_id": f"binary_sensor.bluez_jk_gateway_{node}_online",
        "state_topic": f"{base_topic}/gateway/online",
        "payload_on": PAYLOAD_AVAILABLE,
        "payload_off": PAYLOAD_NOT_AVAILABLE,
        "device_class": "connectivity",
        "entity_category": "diagnostic",
        "device": gateway_device(node_id, version=version),
        "origin": _origin(),
    }
    topic = f"{prefix}/binary_sensor/{node}/gateway_online/config"
    return {topic: json.dumps(config, ensure_ascii=False, separators=(",", ":"))}


def device_identifier(reading: Reading, *, by_address: bool = False) -> str:
    """The BMS's own serial number when known, else its MAC (before device info arrived, or
    `by_address` when another BMS of this gateway already reported the same serial)."""
    serial = reading["status"]["device_info"].get("serial_number")
    slug = _slug(serial) if isinstance(serial, str) and not by_address else ""
    return f"bluez_jk_{slug or _slug(reading['address'])}"


def bms_device(
    name: str, reading: Reading, *, node_id: str, by_address: bool = False
) -> dict[str, Any]:
    info = reading["status"]["device_info"]
    device: dict[str, Any] = {
        "identifiers": [device_identifier(reading, by_address=by_address)],
        # The BLE address ties the serial-based device to the MAC-based one HA may already know.
        "connections": [["bluetooth", reading["address"].upper()]],
        "name": name,
        "manufacturer": MANUFACTURER,
        "via_device": gateway_identifier(node_id),
    }
    model = info.get("vendor_id") or reading.get("model_nbr")
    if model:
        device["model"] = str(model)
    if reading.get("model_nbr"):
        device["model_id"] = str(reading["model_nbr"])
    if info.get("hw_rev"):
        device["hw_version"] = str(info["hw_rev"])
    if info.get("sw_rev"):
        device["sw_version"] = str(info["sw_rev"])
    if info.get("serial_number"):
        device["serial_number"] = str(info["serial_number"])
    return device


def entity_config(
    entity: Entity, name: str, device: dict[str, Any], *, base_topic: str
) -> dict[str, Any]:
    ident = device["identifiers"][0]
    config: dict[str, Any] = {
        "name": entity.name,
        "unique_id": f"{ident}_{entity.object_id}",
        "default_entity_id": f"{entity.component}.{_slug(name)}_{entity.object_id}",
        "state_topic": f"{base_topic}/jk/{name}/{entity.source}",
        "value_template": entity.value_template(),
        "availability": _availability(base_topic, name),
        "availability_mode": "all",
        "device": device,
        "origin": _origin(),
    }
    if entity.component == "binary_sensor":
        config["payload_on"] = "ON"
        config["payload_off"] = "OFF"
    optional = {
        "device_class": entity.device_class,
        "state_class": entity.state_class,
        "unit_of_measurement": entity.unit,
        "entity_category": entity.entity_category,
        "icon": entity.icon,
        "suggested_display_precision": entity.precision,
    }
    config.update({k: v for k, v in optional.items() if v is not None})
    if not entity.enabled_by_default:
        config["enabled_by_default"] = False
    return config


# cmd/set switch name -> (metrics key of its state from the settings frame, label, icon).
SWITCH_ENTITIES: dict[str, tuple[str, str, str]] = {
    "charging": ("charging_switch", "Charging", "mdi:battery-charging"),
    "discharging": ("discharging_switch", "Discharging", "mdi:power-plug"),
    "balancing": ("balancer_switch", "Balancing", "mdi:battery-heart-variant"),
}


def switch_configs(
    name: str,
    reading: Reading,
    device: dict[str, Any],
    *,
    base_topic: str,
    prefix: str,
    node_id: str,
    switches: Collection[str],
) -> dict[str, str]:
    """A `switch` per allowed control switch whose state the settings frame has shown.

    Not optimistic: Home Assistant shows what the BMS reports (the metrics after the verified
    write), never what it asked for."""
    metrics = to_metrics(reading)
    node = _slug(node_id)
    out: dict[str, str] = {}
    for switch in switches:
        key, label, icon = SWITCH_ENTITIES[switch]
        if key not in metrics:
            continue
        entity = Entity("switch", f"{switch}_control", label, key, icon=icon,
                        template=f"{{{{ 'ON' if value_json.{key} else 'OFF' }}}}")  # fmt: skip
        config = entity_config(entity, name, device, base_topic=base_topic)
        config.update(
            {
                "command_topic": f"{base_topic}/jk/{name}/cmd/set",
                "payload_on": json.dumps({switch: True}, separators=(",", ":")),
                "payload_off": json.dumps({switch: False}, separators=(",", ":")),
                "state_on": "ON",
                "state_off": "OFF",
                "optimistic": False,
                "entity_category": "config",
            }
        )
        topic = f"{prefix}/switch/{node}/{_slug(name)}_{entity.object_id}/config"
        out[topic] = json.dumps(config, ensure_ascii=False, separators=(",", ":"))
    return out


def discovery_key(
    reading: Reading,
    metrics: Mapping[str, object],
    *,
    switches: Collection[str] = (),
    by_address: bool = False,
) -> tuple[object, ...]:
    """Everything of a Reading that `discovery_configs` depends on: its metric names (which
    entities and switches exist), protocol, address and identity. Equal keys give equal
    configs, so a gateway builds the ~100 configs (about 1 ms) only when the key changes,
    instead of on every read."""
    info = reading["status"]["device_info"]
    return (
        tuple(metrics),
        reading["protocol"],
        reading["address"],
        reading.get("model_nbr"),
        tuple(info.get(k) for k in ("vendor_id", "hw_rev", "sw_rev", "serial_number")),
        tuple(switches),
        by_address,
    )


def discovery_configs(
    name: str,
    reading: Reading,
    *,
    base_topic: str,
    prefix: str,
    node_id: str,
    switches: Collection[str] = (),
    by_address: bool = False,
) -> dict[str, str]:
    """Config topic -> retained JSON payload for every entity of BMS `name` (the current set).

    `switches`: the control switches to offer (only those enabled and allowed for writing);
    `by_address`: identify the device by its MAC (its serial collides with another BMS's)."""
    device = bms_device(name, reading, node_id=node_id, by_address=by_address)
    node = _slug(node_id)
    out: dict[str, str] = {}
    for entity in entities_for(reading):
        topic = f"{prefix}/{entity.component}/{node}/{_slug(name)}_{entity.object_id}/config"
        config = entity_config(entity, name, device, base_topic=base_topic)
        out[topic] = json.dumps(config, ensure_ascii=False, separators=(",", ":"))
    out.update(
        switch_configs(
            name,
            reading,
            device,
            base_topic=base_topic,
            prefix=prefix,
            node_id=node_id,
            switches=switches,
        )
    )
    return out


# A bank's own entities (docs/mqtt.md, "Banks"), besides the pack entities its metrics share.
_BANK_ENTITIES: tuple[Entity, ...] = (
    _temperature("min_temperature", "Min temperature", "temp_min"),
    _temperature("max_temperature", "Max temperature", "temp_max"),
    Entity("sensor", "members_online", "Members online", "members_online",
           state_class="measurement", icon="mdi:battery-sync"),
    Entity("sensor", "members_charging", "Members able to charge", "members_charging",
           state_class="measurement", icon="mdi:battery-charging"),
    Entity("sensor", "members_discharging", "Members able to discharge",
           "members_discharging", state_class="measurement", icon="mdi:power-plug"),
    Entity("sensor", "charge_voltage_limit", "Charge voltage limit", "cvl",
           device_class="voltage", state_class="measurement", unit="V", precision=2),
    Entity("sensor", "charge_current_limit", "Charge current limit", "ccl",
           device_class="current", state_class="measurement", unit="A", precision=1),
    Entity("sensor", "discharge_current_limit", "Discharge current limit", "dcl",
           device_class="current", state_class="measurement", unit="A", precision=1),
)  # fmt: skip


def bank_identifier(name: str, node_id: str) -> str:
    """A bank has no serial number: it is this gateway's bank of that name."""
    return f"bluez_jk_bank_{_slug(node_id)}_{_slug(name)}"


def bank_discovery_configs(
    name: str,
    metrics: Collection[str],
    *,
    members: Collection[str],
    base_topic: str,
    prefix: str,
    node_id: str,
) -> dict[str, str]:
    """Config topic -> retained JSON payload for every entity of bank `name` whose key is in
    `metrics` (the bank's metrics keys); availability is the bank's own `online`."""
    device = {
        "identifiers": [bank_identifier(name, node_id)],
        "name": name,
        "manufacturer": "bluez-jk",
        "model": f"Bank of {len(members)} parallel packs ({', '.join(members)})",
        "via_device": gateway_identifier(node_id),
    }
    node = _slug(node_id)
    out: dict[str, str] = {}
    for entity in (*_PACK_ENTITIES, *_BANK_ENTITIES):
        if entity.key not in metrics:
            continue
        topic = f"{prefix}/{entity.component}/{node}/{_slug(name)}_{entity.object_id}/config"
        config = entity_config(entity, name, device, base_topic=base_topic)
        out[topic] = json.dumps(config, ensure_ascii=False, separators=(",", ":"))
    return out
