"""The exact key set of every decoded frame kind, per protocol: these keys are published in
`raw` (docs/mqtt.md) and read by every consumer, so an added, lost or renamed key must show up
here as a deliberate change, never pass unnoticed (tests/unit/protocol/test_key_sets.py)."""

from __future__ import annotations

# Device info reads the same on every layout (docs/protocol.md 5.1).
DEVICE_INFO = frozenset(
    {
        "can_protocol",
        "device_name",
        "dry1_trigger",
        "dry2_trigger",
        "emergency_duration",
        "hardware_option",
        "hw_rev",
        "lcd_buzzer_trigger",
        "manufacturing_date",
        "power_on_count",
        "production",
        "re_bulk_soc",
        "request_charge_voltage_time",
        "request_float_voltage_time",
        "serial_number",
        "sw_rev",
        "uart1_protocol",
        "uart2_protocol",
        "uart3_protocol",
        "uptime",
        "user_data",
        "user_data_2",
        "vendor_id",
    }
)

JK02_24S_CELL_INFO = frozenset(
    {
        "average_cell_voltage",
        "balancing_action",
        "balancing_current",
        "battery_soc",
        "capacity_nominal",
        "capacity_remain",
        "charging_switch_enabled",
        "current",
        "cycle_capacity",
        "cycle_count",
        "delta_cell_voltage",
        "discharging_switch_enabled",
        "emergency_time_countdown",
        "enabled_cells_bitmask",
        "error_bitmask",
        "heating",
        "heating_current",
        "max_voltage_cell",
        "min_voltage_cell",
        "power",
        "precharge",
        "resistances",
        "state_of_health",
        "temperature_mos",
        "temperature_sensor_1",
        "temperature_sensor_2",
        "temperature_sensor_present_bitmask",
        "total_runtime",
        "total_voltage",
        "voltages",
        "wire_resistance_warning_bitmask",
    }
)

# JK02_32S: more cells, three more temperature probes and a few fields of its own.
JK02_32S_CELL_INFO = JK02_24S_CELL_INFO | frozenset(
    {
        "balancer_working",
        "battery_type_id",
        "charge_status_id",
        "charge_status_time_elapsed",
        "detail_log_entry_count",
        "dry_contact_bitmask",
        "pack_voltage_alt",
        "precharging",
        "smart_sleep_countdown",
        "temperature_sensor_3",
        "temperature_sensor_4",
        "temperature_sensor_5",
    }
)

JK02_24S_SETTINGS = frozenset(
    {
        "balance_start_voltage",
        "balance_trigger_voltage",
        "balancing_switch",
        "cell_count",
        "cell_ovp",
        "cell_ovpr",
        "cell_uvp",
        "cell_uvpr",
        "charge_ocp_delay",
        "charge_ocp_recovery",
        "charge_otp",
        "charge_otpr",
        "charge_utp",
        "charge_utpr",
        "charging_switch",
        "discharge_ocp_delay",
        "discharge_ocp_recovery",
        "discharge_otp",
        "discharge_otpr",
        "discharging_switch",
        "max_balance_current",
        "max_charge_current",
        "max_discharge_current",
        "mos_otp",
        "mos_otpr",
        "nominal_capacity",
        "power_off_voltage",
        "request_charge_voltage",
        "request_float_voltage",
        "scp_delay",
        "scp_recovery",
        "smart_sleep_voltage",
        "soc_0_voltage",
        "soc_100_voltage",
    }
)

JK02_32S_SETTINGS = JK02_24S_SETTINGS | frozenset(
    {
        "control_bitmask",
        "device_address",
        "discharge_utp",
        "discharge_utpr",
        "heating_start_temperature",
        "heating_stop_temperature",
        "precharge_time",
        "smart_sleep_hours",
    }
)

JK02_32S_LOGBOOK = frozenset(
    {
        "entries",
        "entry_count",
    }
)

JK04_CELL_INFO = frozenset(
    {
        "average_cell_voltage",
        "balancing_action",
        "balancing_current",
        "delta_cell_voltage",
        "resistances",
        "total_runtime",
        "total_voltage",
        "voltages",
    }
)

FRAME_KEYS: dict[tuple[str, str], frozenset[str]] = {
    ("JK02_24S", "cell_info"): JK02_24S_CELL_INFO,
    ("JK02_24S", "device_info"): DEVICE_INFO,
    ("JK02_24S", "settings"): JK02_24S_SETTINGS,
    ("JK02_32S", "cell_info"): JK02_32S_CELL_INFO,
    ("JK02_32S", "device_info"): DEVICE_INFO,
    ("JK02_32S", "logbook"): JK02_32S_LOGBOOK,
    ("JK02_32S", "settings"): JK02_32S_SETTINGS,
    ("JK04", "cell_info"): JK04_CELL_INFO,
    ("JK04", "device_info"): DEVICE_INFO,
}
