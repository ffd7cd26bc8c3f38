"""Logbook event codes as names (docs/protocol.md appendix B), for the `event` of an entry."""

from __future__ import annotations

from typing import Final

# Pairs of a condition and its end take consecutive codes: (first code, condition, its end).
_PAIRS: Final[tuple[tuple[int, str, str], ...]] = (
    (0x03, "charge_off_by_app", "charge_on_by_app"),
    (0x05, "discharge_off_by_app", "discharge_on_by_app"),
    (0x07, "remote_charge_off", "remote_charge_on"),
    (0x09, "remote_discharge_off", "remote_discharge_on"),
    (0x0B, "mosfet_overtemp", "mosfet_overtemp_released"),
    (0x0D, "current_sensor_fault", "current_sensor_fault_released"),
    (0x0F, "coprocessor_communication_fault", "coprocessor_communication_cleared"),
    (0x11, "cell_overcharge", "cell_overcharge_released"),
    (0x13, "pack_overcharge", "pack_overcharge_released"),
    (0x15, "charge_overcurrent", "charge_overcurrent_released"),
    (0x17, "charge_short_circuit", "charge_short_circuit_released"),
    (0x19, "charge_overtemp", "charge_overtemp_released"),
    (0x1B, "charge_undertemp", "charge_undertemp_released"),
    (0x1D, "cell_undervoltage", "cell_undervoltage_released"),
    (0x1F, "pack_undervoltage", "pack_undervoltage_released"),
    (0x21, "discharge_overcurrent", "discharge_overcurrent_released"),
    (0x23, "discharge_short_circuit", "discharge_short_circuit_released"),
    (0x25, "discharge_overtemp", "discharge_overtemp_released"),
    (0x29, "emergency_on_by_hand", "emergency_off_by_hand"),
    (0x30, "can_charge_off", "can_charge_on"),
    (0x32, "can_discharge_off", "can_discharge_on"),
    (0x34, "rs485_charge_off", "rs485_charge_on"),
    (0x36, "rs485_discharge_off", "rs485_discharge_on"),
    (0x3D, "emergency_on_by_button", "emergency_off_by_button"),
    (0x46, "remote_emergency_on", "remote_emergency_off"),
    (0x48, "discharge_undertemp", "discharge_undertemp_released"),
)
_SINGLE: Final[dict[int, str]] = {
    0x01: "boot",
    0x02: "shutdown",
    0x27: "watchdog_reset",
    0x28: "discharge_short_circuit_level_2",
    0x2B: "emergency_ended",
    0x2C: "off_by_app",
    0x2D: "off_by_button",
    0x2E: "discharge_on_failed",
    0x2F: "rs485_power_off",
    0x38: "sleep",
    0x39: "charge_mosfet_fault",
    0x3A: "discharge_mosfet_fault",
    0x3B: "clock_set",
    0x3C: "cell_count_wrong",
    0x3F: "heating_forced_by_button",
    0x40: "discharge_overcurrent_2",
    0x41: "discharge_overcurrent_3",
    0x42: "scp_release_failed",
    0x43: "factory_preset_li_ion",
    0x44: "factory_preset_lfp",
    0x45: "factory_preset_lto",
}
# 0x64 + n and 0xC8 + n name cell n + 1 (n = 0..31).
_CELL_OVERCHARGE: Final = 0x64
_CELL_OVERDISCHARGE: Final = 0xC8
_CELLS: Final = 32

EVENT_NAMES: Final[dict[int, str]] = {
    **_SINGLE,
    **{first: begin for first, begin, _ in _PAIRS},
    **{first + 1: end for first, _, end in _PAIRS},
    **{_CELL_OVERCHARGE + n: f"cell_{n + 1:02d}_overcharge" for n in range(_CELLS)},
    **{_CELL_OVERDISCHARGE + n: f"cell_{n + 1:02d}_overdischarge" for n in range(_CELLS)},
}


def event_name(code: int) -> str | None:
    """The name of a logbook code, None for one appendix B does not list."""
    return EVENT_NAMES.get(code)


__all__ = ["EVENT_NAMES", "event_name"]
