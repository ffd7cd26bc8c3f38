"""The error/alarm bitmask as named booleans (docs/protocol.md 7), the status `warnings` dict."""

from __future__ import annotations

from typing import Final

from bluez_jk.protocol.variants import ProtocolName

# Bit i -> key. Where dbus-serialbattery has a `warnings` key we keep it (docs/protocol.md 8);
# the other bits get names after the official register map.
WARNING_BITS: Final[tuple[str, ...]] = (
    "resistance_too_high",  # 0 wire resistance (DSB)
    "mosfet_overtemp",  # 1
    "cell_count_wrong",  # 2 (DSB)
    "current_sensor_anomaly",  # 3
    "cell_overvoltage",  # 4 (DSB)
    "pack_overvoltage",  # 5
    "charge_overcurrent",  # 6 (DSB)
    "charge_short_circuit",  # 7
    "charge_overtemp",  # 8 (DSB)
    "charge_undertemp",  # 9 (DSB)
    "coprocessor_communication",  # 10
    "cell_undervoltage",  # 11 (DSB)
    "pack_undervoltage",  # 12
    "discharge_overcurrent",  # 13 (DSB)
    "discharge_short_circuit",  # 14
    "discharge_overtemp",  # 15 (DSB)
    "charge_mosfet_abnormal",  # 16
    "discharge_mosfet_abnormal",  # 17
    "gps_disconnected",  # 18
    "modify_password_in_time",  # 19
    "discharge_on_failed",  # 20
    "battery_overtemp",  # 21
    "temperature_sensor_anomaly",  # 22
    "plc_module_anomaly",  # 23
    "scp_release_failed",  # 24
    "discharge_overcurrent_2",  # 25
    "discharge_overcurrent_3",  # 26
    "discharge_undertemp",  # 27
    "gps_remote_lock",  # 28
)

# 24S carries a 16-bit mask, 32S a 32-bit one; JK04 has no error field at all.
WARNING_BIT_COUNT: Final[dict[ProtocolName, int]] = {
    "JK02_24S": 16,
    "JK02_32S": len(WARNING_BITS),
    "JK04": 0,
}


def warnings_from(error_bitmask: int | None, protocol: ProtocolName) -> dict[str, bool]:
    if error_bitmask is None:
        return {}
    return {
        name: bool(error_bitmask >> bit & 1)
        for bit, name in enumerate(WARNING_BITS[: WARNING_BIT_COUNT[protocol]])
    }
