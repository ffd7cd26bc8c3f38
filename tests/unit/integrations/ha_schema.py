"""A JSON Schema for the Home Assistant MQTT discovery payloads we publish.

Built from Home Assistant's documentation of the MQTT sensor / binary sensor platforms and of
sensor device classes (keys, required keys, allowed values, which units each device class
accepts, which state classes it allows). Only the full key names: we never use abbreviations.
Unknown keys are rejected so that a typo cannot silently do nothing in HA.
"""

from __future__ import annotations

from typing import Any

# Sensor device class -> units HA accepts for it (HA sensor docs, "Device class").
SENSOR_DEVICE_CLASS_UNITS: dict[str, list[str]] = {
    "battery": ["%"],
    "current": ["A", "mA"],
    "voltage": ["V", "mV", "µV", "kV", "MV"],
    "power": ["W", "kW", "mW", "MW", "GW", "TW", "BTU/h"],
    "temperature": ["°C", "°F", "K"],
    "duration": ["d", "h", "min", "s", "ms", "µs"],
    "signal_strength": ["dB", "dBm"],
    "energy_storage": ["Wh", "kWh", "MWh", "GWh", "TWh", "J", "kJ", "MJ", "GJ"],
}
# Device class -> state classes HA allows with it (others are flagged as invalid by HA).
SENSOR_DEVICE_CLASS_STATE_CLASSES: dict[str, list[str]] = {
    "battery": ["measurement"],
    "current": ["measurement"],
    "voltage": ["measurement"],
    "power": ["measurement"],
    "temperature": ["measurement"],
    "duration": ["measurement", "total", "total_increasing"],
    "signal_strength": ["measurement"],
    "energy_storage": ["measurement"],
}
STATE_CLASSES = ["measurement", "measurement_angle", "total", "total_increasing"]
BINARY_SENSOR_DEVICE_CLASSES = [
    "battery", "battery_charging", "carbon_monoxide", "cold", "connectivity", "door",
    "garage_door", "gas", "heat", "light", "lock", "moisture", "motion", "moving", "occupancy",
    "opening", "plug", "power", "presence", "problem", "running", "safety", "smoke", "sound",
    "tamper", "update", "vibration", "window",
]  # fmt: skip

_TOPIC = {"type": "string", "minLength": 1, "pattern": "^[^#+]+$"}
_TEMPLATE = {"type": "string", "pattern": r"\{\{|\{%"}

_DEVICE = {
    "type": "object",
    "additionalProperties": False,
    "anyOf": [{"required": ["identifiers"]}, {"required": ["connections"]}],
    "properties": {
        "identifiers": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "connections": {
            "type": "array",
            "items": {
                "type": "array",
                "prefixItems": [
                    {"enum": ["mac", "bluetooth", "zigbee", "upnp"]},
                    {"type": "string"},
                ],
                "minItems": 2,
                "maxItems": 2,
            },
        },
        "name": {"type": "string"},
        "manufacturer": {"type": "string"},
        "model": {"type": "string"},
        "model_id": {"type": "string"},
        "hw_version": {"type": "string"},
        "sw_version": {"type": "string"},
        "serial_number": {"type": "string"},
        "suggested_area": {"type": "string"},
        "configuration_url": {"type": "string"},
        "via_device": {"type": "string"},
    },
}

_ORIGIN = {
    "type": "object",
    "required": ["name"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string"},
        "sw_version": {"type": "string"},
        "support_url": {"type": "string"},
    },
}

_AVAILABILITY = {
    "type": "array",
    "minItems": 1,
    "items": {
        "type": "object",
        "required": ["topic"],
        "additionalProperties": False,
        "properties": {
            "topic": _TOPIC,
            "payload_available": {"type": "string"},
            "payload_not_available": {"type": "string"},
            "value_template": _TEMPLATE,
        },
    },
}

_COMMON: dict[str, Any] = {
    "availability": _AVAILABILITY,
    "availability_mode": {"enum": ["all", "any", "latest"]},
    "availability_template": _TEMPLATE,
    "availability_topic": _TOPIC,
    "default_entity_id": {"type": "string", "pattern": r"^[a-z_]+\.[a-z0-9_]+$"},
    "device": _DEVICE,
    "enabled_by_default": {"type": "boolean"},
    "encoding": {"type": "string"},
    "entity_category": {"enum": ["diagnostic"]},
    "entity_picture": {"type": "string"},
    "expire_after": {"type": "integer", "minimum": 1},
    "force_update": {"type": "boolean"},
    "icon": {"type": "string", "pattern": "^mdi:[a-z0-9-]+$"},
    "json_attributes_template": _TEMPLATE,
    "json_attributes_topic": _TOPIC,
    "name": {"type": ["string", "null"]},
    "origin": _ORIGIN,
    "payload_available": {"type": "string"},
    "payload_not_available": {"type": "string"},
    "qos": {"enum": [0, 1, 2]},
    "state_topic": _TOPIC,
    "unique_id": {"type": "string", "minLength": 1},
    "value_template": _TEMPLATE,
}

SENSOR_SCHEMA: dict[str, Any] = {
    "type": "object",
    # HA links an entity to a device only when it has a unique_id.
    "required": ["state_topic", "unique_id", "device"],
    "additionalProperties": False,
    # availability and availability_topic are mutually exclusive.
    "not": {"required": ["availability", "availability_topic"]},
    "properties": {
        **_COMMON,
        "device_class": {"enum": [*sorted(SENSOR_DEVICE_CLASS_UNITS), "enum", "date"]},
        "state_class": {"enum": STATE_CLASSES},
        "unit_of_measurement": {"type": "string"},
        "suggested_display_precision": {"type": "integer", "minimum": 0},
        "last_reset_value_template": _TEMPLATE,
        "options": {"type": "array", "items": {"type": "string"}},
    },
    "allOf": [
        {
            "if": {"required": ["device_class"], "properties": {"device_class": {"const": dc}}},
            "then": {
                "required": ["unit_of_measurement"],
                "properties": {
                    "unit_of_measurement": {"enum": units},
                    "state_class": {"enum": SENSOR_DEVICE_CLASS_STATE_CLASSES[dc]},
                },
            },
        }
        for dc, units in SENSOR_DEVICE_CLASS_UNITS.items()
    ],
}

BINARY_SENSOR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["state_topic", "unique_id", "device"],
    "additionalProperties": False,
    "not": {"required": ["availability", "availability_topic"]},
    "properties": {
        **_COMMON,
        "device_class": {"enum": BINARY_SENSOR_DEVICE_CLASSES},
        "payload_on": {"type": "string"},
        "payload_off": {"type": "string"},
        "off_delay": {"type": "integer", "minimum": 1},
    },
}

SCHEMAS = {"sensor": SENSOR_SCHEMA, "binary_sensor": BINARY_SENSOR_SCHEMA}

# MQTT switch platform (HA docs, "MQTT Switch"): a command topic is required; `optimistic`
# false makes HA show the reported state only.
SWITCH_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["command_topic", "state_topic", "unique_id", "device"],
    "additionalProperties": False,
    "not": {"required": ["availability", "availability_topic"]},
    "properties": {
        **_COMMON,
        "entity_category": {"enum": ["config", "diagnostic"]},
        "command_topic": _TOPIC,
        "command_template": _TEMPLATE,
        "device_class": {"enum": ["outlet", "switch"]},
        "optimistic": {"type": "boolean"},
        "payload_on": {"type": "string"},
        "payload_off": {"type": "string"},
        "state_on": {"type": "string"},
        "state_off": {"type": "string"},
        "retain": {"type": "boolean"},
    },
}
SCHEMAS["switch"] = SWITCH_SCHEMA
