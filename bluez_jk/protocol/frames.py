"""The construct structs of every 300-byte response frame: the single description of each layout.

The reader parses with these structs and the simulator builds with them (encode.py); no other
module knows an offset. Offsets in the comments are absolute (from the 0x55 header byte) and
follow docs/protocol.md 4 and 5; a field's width and signedness live here, its unit in scale.py.

JK02_32S is JK02_24S with both per-cell arrays widened from 24 to 32 entries. Building the
struct from the cell count gives the whole A/B shift of docs/protocol.md 5.2 for free; the few
fields that exist on one layout only hang off `wide` below.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal

from construct import (
    Array,
    Bytes,
    Const,
    Float32l,
    FormatField,
    Int8sl,
    Int8ul,
    Int16sl,
    Int16ul,
    Int32sl,
    Int32ul,
    Padding,
    Renamed,
    Struct,
)

from bluez_jk.protocol.packed import FlatStruct, PackedArray
from bluez_jk.protocol.variants import CELL_COUNTS, PROTOCOLS, ProtocolName

Kind = Literal["device_info", "cell_info", "settings", "logbook"]

HEADER: Final = b"\x55\xaa\xeb\x90"
FRAME_LEN: Final = 300
TYPE_CODES: Final[dict[int, Kind]] = {
    0x01: "settings",
    0x02: "cell_info",
    0x03: "device_info",
    0x05: "logbook",
}
KIND_CODES: Final[dict[Kind, int]] = {kind: code for code, kind in TYPE_CODES.items()}


def checksum(data: bytes | bytearray | memoryview) -> int:
    """Sum of the bytes mod 256 (docs/protocol.md appendix A), for frames and commands alike."""
    return sum(data) & 0xFF


def _frame(*payload: Any) -> Struct:
    """Header, type, counter, the payload from offset 6, zero padding, checksum at 299."""
    body = Struct(*payload)
    fill = FRAME_LEN - 7 - body.sizeof()
    if fill < 0:
        raise AssertionError(f"payload of {body.sizeof()} bytes overflows the frame")
    return FlatStruct(
        "header" / Const(HEADER),
        "frame_type" / Int8ul,
        "counter" / Int8ul,
        *payload,
        Padding(fill),
        "checksum" / Int8ul,
    )


# docs/protocol.md 5.1: the same offsets on every layout; offsets >= 134 are zero on JK02_24S and
# JK04 units. The two passcodes are padding on purpose: they must never be published (1.6).
DEVICE_INFO = _frame(
    "vendor_id" / Bytes(16),  # 6
    "hw_rev" / Bytes(8),  # 22
    "sw_rev" / Bytes(8),  # 30
    "uptime" / Int32ul,  # 38
    "power_on_count" / Int32ul,  # 42
    "device_name" / Bytes(16),  # 46
    Padding(16),  # 62 device passcode
    "manufacturing_date" / Bytes(8),  # 78
    # 86: serials of <= 11 chars end with a NUL before the 4-char passcode at 97; 19.x serials
    # of 15 chars overlap it. Read to the first NUL.
    "serial_number" / Bytes(16),
    "user_data" / Bytes(16),  # 102
    Padding(16),  # 118 setup passcode
    "user_data_2" / Bytes(16),  # 134
    Padding(34),  # 150 unknown
    "uart1_protocol" / Int8ul,  # 184
    "can_protocol" / Int8ul,  # 185
    Padding(4),  # 186 UART1 protocols-enabled bitmask
    "hardware_option" / Bytes(12),  # 190
    Padding(16),  # 202 CAN protocols-enabled bitmask, unknown
    "uart2_protocol" / Int8ul,  # 218
    Padding(15),  # 219 UART2 protocols-enabled bitmask, unknown
    "lcd_buzzer_trigger" / Int8ul,  # 234
    "dry1_trigger" / Int8ul,  # 235
    "dry2_trigger" / Int8ul,  # 236
    Padding(29),  # 237 library version, trigger values, data stored period
    "request_charge_voltage_time" / Int8ul,  # 266
    "request_float_voltage_time" / Int8ul,  # 267
    Padding(1),  # 268 CAN protocol library version
    "emergency_duration" / Int8ul,  # 269
    "uart3_protocol" / Int8ul,  # 270
    Padding(7),  # 271 UART3 protocols-enabled bitmask
    "re_bulk_soc" / Int8ul,  # 278
)


def _jk02_cell_info(cells: int) -> Struct:
    """docs/protocol.md 5.2; offsets as "24S / 32S"."""
    wide = cells == 32
    return _frame(
        "voltages" / PackedArray(cells, "H"),  # 6
        "enabled_cells_bitmask" / Int32ul,  # 54 / 70
        "average_cell_voltage" / Int16ul,  # 58 / 74
        "delta_cell_voltage" / Int16ul,  # 60 / 76
        "max_voltage_cell" / Int8ul,  # 62 / 78
        "min_voltage_cell" / Int8ul,  # 63 / 79
        "resistances" / PackedArray(cells, "H"),  # 64 / 80
        # 112 / 144: 32S keeps the MOSFET temperature here, 24S leaves the slot at 0.
        "temperature_mos" / Int16sl if wide else Padding(2),
        "wire_resistance_warning_bitmask" / Int32ul,  # 114 / 146
        "total_voltage" / Int32ul,  # 118 / 150
        Padding(4),  # 122 / 154 unsigned power: power is derived from voltage x current
        "current" / Int32sl,  # 126 / 158
        "temperature_sensor_1" / Int16sl,  # 130 / 162
        "temperature_sensor_2" / Int16sl,  # 132 / 164
        # 134 / 166: 24S has the MOSFET temperature and a 16-bit mask, 32S one 32-bit mask.
        *(
            ["error_bitmask" / Int32ul]
            if wide
            else ["temperature_mos" / Int16sl, "error_bitmask" / Int16ul]
        ),
        "balancing_current" / Int16sl,  # 138 / 170
        "balancing_action" / Int8ul,  # 140 / 172
        "battery_soc" / Int8ul,  # 141 / 173
        "capacity_remain" / Int32ul,  # 142 / 174
        "capacity_nominal" / Int32ul,  # 146 / 178
        "cycle_count" / Int32ul,  # 150 / 182
        "cycle_capacity" / Int32ul,  # 154 / 186
        "state_of_health" / Int8ul,  # 158 / 190
        "precharge" / Int8ul,  # 159 / 191
        Padding(2),  # 160 / 192 "user alarm"
        "total_runtime" / Int32ul,  # 162 / 194
        "charging_switch_enabled" / Int8ul,  # 166 / 198
        "discharging_switch_enabled" / Int8ul,  # 167 / 199
        # 168 / 200: flags on 32S; 10.x 24S firmware keeps a u16 (~0x06xx) here instead.
        *(["precharging" / Int8ul, "balancer_working" / Int8ul] if wide else [Padding(2)]),
        Padding(12),  # 170 / 202 protection release timers
        "temperature_sensor_present_bitmask" / Int8ul,  # 182 / 214
        "heating" / Int8ul,  # 183 / 215
        Padding(2),  # 184 / 216
        "emergency_time_countdown" / Int16ul,  # 186 / 218
        Padding(6),  # 188 / 220 current correction factors
        # 194 / 226; the second pack-voltage copy at 234 exists on 32S only.
        *([Padding(8), "pack_voltage_alt" / Int16ul] if wide else [Padding(10)]),
        "heating_current" / Int16sl,  # 204 / 236
        *(
            [
                Padding(16),  # 238
                "temperature_sensor_3" / Int16sl,  # 254
                "temperature_sensor_4" / Int16sl,  # 256
                "temperature_sensor_5" / Int16sl,  # 258
                Padding(6),  # 260
                "detail_log_entry_count" / Int32ul,  # 266
                "smart_sleep_countdown" / Int32ul,  # 270
                Padding(1),  # 274 PCL module state
                "battery_type_id" / Int8ul,  # 275
                Padding(2),  # 276
                "charge_status_time_elapsed" / Int16ul,  # 278
                "charge_status_id" / Int8ul,  # 280
                "dry_contact_bitmask" / Int8ul,  # 281
            ]
            if wide
            else []
        ),
    )


# docs/protocol.md 5.3: float32 throughout, no pack voltage, current, SOC or temperatures.
JK04_CELL_INFO = _frame(
    "voltages" / PackedArray(24, "f"),  # 6
    "resistances" / PackedArray(24, "f"),  # 102
    Padding(4),  # 198
    "average_cell_voltage" / Float32l,  # 202
    "delta_cell_voltage" / Float32l,  # 206
    Padding(10),  # 210 (214 is probably a cell mask, unconfirmed)
    "balancing_action" / Int8ul,  # 220
    Padding(1),  # 221
    "balancing_current" / Float32l,  # 222
    Padding(60),  # 226
    "total_runtime" / Int32ul,  # 286
)


def _jk02_settings(cells: int) -> Struct:
    """docs/protocol.md 5.4: offsets 6..141 are the same on both layouts."""
    wide = cells == 32
    return _frame(
        "smart_sleep_voltage" / Int32ul,  # 6
        "cell_uvp" / Int32ul,  # 10
        "cell_uvpr" / Int32ul,  # 14
        "cell_ovp" / Int32ul,  # 18
        "cell_ovpr" / Int32ul,  # 22
        "balance_trigger_voltage" / Int32ul,  # 26
        "soc_100_voltage" / Int32ul,  # 30
        "soc_0_voltage" / Int32ul,  # 34
        "request_charge_voltage" / Int32ul,  # 38
        "request_float_voltage" / Int32ul,  # 42
        "power_off_voltage" / Int32ul,  # 46
        "max_charge_current" / Int32ul,  # 50
        "charge_ocp_delay" / Int32ul,  # 54
        "charge_ocp_recovery" / Int32ul,  # 58
        "max_discharge_current" / Int32ul,  # 62
        "discharge_ocp_delay" / Int32ul,  # 66
        "discharge_ocp_recovery" / Int32ul,  # 70
        "scp_recovery" / Int32ul,  # 74
        "max_balance_current" / Int32ul,  # 78
        "charge_otp" / Int32sl,  # 82
        "charge_otpr" / Int32sl,  # 86
        "discharge_otp" / Int32sl,  # 90
        "discharge_otpr" / Int32sl,  # 94
        "charge_utp" / Int32sl,  # 98
        "charge_utpr" / Int32sl,  # 102
        "mos_otp" / Int32sl,  # 106
        "mos_otpr" / Int32sl,  # 110
        "cell_count" / Int32ul,  # 114
        "charging_switch" / Int32ul,  # 118
        "discharging_switch" / Int32ul,  # 122
        "balancing_switch" / Int32ul,  # 126
        "nominal_capacity" / Int32ul,  # 130
        "scp_delay" / Int32ul,  # 134
        "balance_start_voltage" / Int32ul,  # 138
        # 142: 24S has four unknown u32 before its 24 wire resistances, 32S none before 32.
        *([] if wide else [Padding(16)]),
        "connection_wire_resistances" / PackedArray(cells, "I"),  # 158 / 142
        *(
            [
                "device_address" / Int8ul,  # 270
                Padding(3),
                "precharge_time" / Int8ul,  # 274
                Padding(7),  # 275
                "control_bitmask" / Int16ul,  # 282
                "heating_start_temperature" / Int8sl,  # 284
                "heating_stop_temperature" / Int8sl,  # 285
                "smart_sleep_hours" / Int8ul,  # 286
                Padding(9),  # 287 "data field enable control 0", unknown
                "discharge_utp" / Int8sl,  # 296
                "discharge_utpr" / Int8sl,  # 297
            ]
            if wide
            else []
        ),
    )


# docs/protocol.md 5.5.
JK04_SETTINGS = _frame(
    "format_mark" / Float32l,  # 6: always 1.0, which tells JK04 settings from JK02 (6)
    Padding(24),  # 10
    "cell_count" / Int8ul,  # 34
    Padding(3),
    "power_off_voltage" / Float32l,  # 38
    Padding(32),  # 42
    "voltage_calibration" / Float32l,  # 74
    Padding(20),  # 78
    "balance_start_voltage" / Float32l,  # 98
    Padding(4),  # 102 unknown (3.4)
    "balance_trigger_voltage" / Float32l,  # 106
    "max_balance_current" / Float32l,  # 110
    "balancing_switch" / Int8ul,  # 114
)

# docs/protocol.md 5.6 (reply to 0xA1).
LOGBOOK_ENTRIES: Final = 50
LOGBOOK = _frame(
    "entry_count" / Int32ul,  # 6
    Padding(1),  # 10 "check" byte, unexplained
    "entries" / Array(LOGBOOK_ENTRIES, Struct("t" / Int32ul, "code" / Int8ul)),  # 11
)

STRUCTS: Final[dict[tuple[Kind, ProtocolName], Struct]] = {}
for _protocol in PROTOCOLS:
    _jk04 = _protocol == "JK04"
    _cells = CELL_COUNTS[_protocol]
    STRUCTS["device_info", _protocol] = DEVICE_INFO
    STRUCTS["cell_info", _protocol] = JK04_CELL_INFO if _jk04 else _jk02_cell_info(_cells)
    STRUCTS["settings", _protocol] = JK04_SETTINGS if _jk04 else _jk02_settings(_cells)
    STRUCTS["logbook", _protocol] = LOGBOOK

# Values the simulator needs where "missing means zero" would build a frame no BMS sends.
BUILD_DEFAULTS: Final[dict[str, Any]] = {"format_mark": 1.0}


@dataclass(frozen=True)
class Field:
    """One named field of a struct, as the scaling step needs to see it."""

    name: str
    count: int | None  # entries of an array, None for a scalar
    kind: Literal["int", "float", "bytes", "records"]
    size: int  # bytes of one element (of the whole field for `bytes`)
    signed: bool = False


_FRAMING: Final = frozenset({"header", "frame_type", "counter", "checksum"})


def fields(frame: Struct) -> list[Field]:
    """The named payload fields of a frame struct, in frame order."""
    return [
        _describe(sub.name, sub.subcon)
        for sub in frame.subcons
        if isinstance(sub, Renamed) and sub.name not in _FRAMING
    ]


def _describe(name: str, con: Any) -> Field:
    if isinstance(con, PackedArray):
        kind: Literal["int", "float"] = "float" if con.fmt == "f" else "int"
        return Field(name, con.count, kind, con.packer.size // con.count, con.fmt.islower())
    if isinstance(con, FormatField):
        fmt = con.fmtstr[-1]
        return Field(name, None, "float" if fmt == "f" else "int", con.length, fmt.islower())
    if isinstance(con, Array):
        return Field(name, con.count, "records", con.subcon.sizeof())
    return Field(name, None, "bytes", con.sizeof())
