"""Host -> BMS command frames (docs/protocol.md 2): 20 bytes, one ATT write each."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Final

from construct import (
    Bytes,
    Const,
    Construct,
    ConstructError,
    Float32l,
    Int8sl,
    Int8ul,
    Int16ul,
    Int32sl,
    Int32ul,
    Struct,
)

from bluez_jk.protocol.errors import FrameError
from bluez_jk.protocol.frames import checksum
from bluez_jk.protocol.variants import ProtocolName

CMD_CELL_INFO: Final = 0x96  # settings frame, then the cell-info stream
CMD_DEVICE_INFO: Final = 0x97
CMD_LOGBOOK: Final = 0xA1
CMD_ACK: Final = 0xC8  # what the BMS answers every accepted command with (2.4)

COMMAND_HEADER: Final = b"\xaa\x55\x90\xeb"
COMMAND_LEN: Final = 20
VALUE_LEN: Final = 13

COMMAND = Struct(
    "header" / Const(COMMAND_HEADER),
    "code" / Int8ul,
    "length" / Int8ul,
    # Little-endian value, then padding: we send zeros, the app random bytes (2.1).
    "value" / Bytes(VALUE_LEN),
    "checksum" / Int8ul,
)


@dataclass(frozen=True)
class Command:
    code: int
    length: int
    value: bytes  # the first `length` value bytes; the padding is not part of the command


@functools.lru_cache(maxsize=64)
def command(code: int, value: bytes = b"") -> bytes:
    """A 20-byte command frame with zero padding and its checksum (cached: a read sends the
    same two commands every time, and building one with construct costs more than a read's
    D-Bus work for it)."""
    if not 0 <= code <= 0xFF:
        raise FrameError(f"command code {code} is not one byte")
    if len(value) > VALUE_LEN:
        raise FrameError(f"command value of {len(value)} bytes, at most {VALUE_LEN} fit")
    body = COMMAND.build(
        {"code": code, "length": len(value), "value": value.ljust(VALUE_LEN, b"\0"), "checksum": 0}
    )
    return bytes(body[:-1]) + bytes([checksum(body[:-1])])


def parse_command(data: bytes) -> Command:
    """Raises FrameError on a bad length, header, value length or checksum."""
    if len(data) != COMMAND_LEN:
        raise FrameError(f"command of {len(data)} bytes, expected {COMMAND_LEN}")
    try:
        parsed = COMMAND.parse(data)
    except ConstructError as err:
        raise FrameError(f"bad command header {bytes(data[:4]).hex()}") from err
    if checksum(data[:-1]) != parsed.checksum:
        raise FrameError("bad command checksum")
    if parsed.length > VALUE_LEN:
        raise FrameError(f"command value length {parsed.length} exceeds {VALUE_LEN}")
    return Command(parsed.code, parsed.length, bytes(parsed.value[: parsed.length]))


ACK: Final = command(CMD_ACK, b"\x01")


@dataclass(frozen=True)
class Register:
    """A writable setting: register number, wire encoding, and raw units per published unit."""

    code: int
    encoding: Construct
    div: int = 1  # the value is written as round(value * div): V -> mV, C -> 0.1 C, ...


_U32, _S32 = Int32ul, Int32sl
# docs/protocol.md 2.3: (name, 24S register, 32S register, encoding, div). Names are the
# settings keys the value reads back under (5.4) where it has one. None = not on that layout.
_JK02: Final[tuple[tuple[str, int | None, int | None, Construct, int], ...]] = (
    ("smart_sleep_voltage", 0x01, 0x01, _U32, 1000),
    ("cell_uvp", 0x02, 0x02, _U32, 1000),
    ("cell_uvpr", 0x03, 0x03, _U32, 1000),
    ("cell_ovp", 0x04, 0x04, _U32, 1000),
    ("cell_ovpr", 0x05, 0x05, _U32, 1000),
    ("balance_trigger_voltage", 0x06, 0x06, _U32, 1000),
    ("soc_100_voltage", 0x07, 0x07, _U32, 1000),
    ("soc_0_voltage", 0x08, 0x08, _U32, 1000),
    ("request_charge_voltage", 0x09, 0x09, _U32, 1000),
    ("request_float_voltage", 0x0A, 0x0A, _U32, 1000),
    ("power_off_voltage", 0x0B, 0x0B, _U32, 1000),
    ("max_charge_current", 0x0C, 0x0C, _U32, 1000),
    ("charge_ocp_delay", 0x0D, 0x0D, _U32, 1),
    ("charge_ocp_recovery", 0x0E, 0x0E, _U32, 1),
    ("max_discharge_current", 0x0F, 0x0F, _U32, 1000),
    ("discharge_ocp_delay", 0x10, 0x10, _U32, 1),
    ("discharge_ocp_recovery", 0x11, 0x11, _U32, 1),
    ("scp_recovery", 0x12, 0x12, _U32, 1),
    ("max_balance_current", 0x13, 0x13, _U32, 1000),
    ("charge_otp", 0x14, 0x14, _S32, 10),
    ("charge_otpr", 0x15, 0x15, _S32, 10),
    ("discharge_otp", 0x16, 0x16, _S32, 10),
    ("discharge_otpr", 0x17, 0x17, _S32, 10),
    ("charge_utp", 0x18, 0x18, _S32, 10),
    ("charge_utpr", 0x19, 0x19, _S32, 10),
    ("mos_otp", 0x1A, 0x1A, _S32, 10),
    ("mos_otpr", 0x1B, 0x1B, _S32, 10),
    ("cell_count", 0x1C, 0x1C, _U32, 1),
    ("charging_switch", 0x1D, 0x1D, _U32, 1),
    ("discharging_switch", 0x1E, 0x1E, _U32, 1),
    ("balancing_switch", 0x1F, 0x1F, _U32, 1),
    ("nominal_capacity", 0x20, 0x20, _U32, 1000),
    ("scp_delay", 0x25, 0x21, _U32, 1),
    ("balance_start_voltage", 0x26, 0x22, _U32, 1000),
    ("voltage_calibration", 0x21, 0x64, _U32, 1000),
    ("current_calibration", 0x24, 0x67, _U32, 1000),
    ("precharge_time", None, 0x25, _U32, 1),
    ("heating_switch", None, 0x27, _U32, 1),
    ("disable_temperature_sensors", None, 0x28, _U32, 1),
    ("port_rs485", None, 0x2A, _U32, 1),  # 0 = CAN, 1 = RS485
    ("display_always_on", None, 0x2B, _U32, 1),
    ("smart_sleep", None, 0x2D, _U32, 1),
    ("disable_pcl_module", None, 0x2E, _U32, 1),
    ("timed_stored_data", None, 0x2F, _U32, 1),
    ("charging_float_mode", None, 0x30, _U32, 1),
    ("emergency_button_trigger", None, 0x31, _U32, 1),
    ("dry_contact_alarm_intermittent", None, 0x32, _U32, 1),
    ("discharge_ocp_2", None, 0x33, _U32, 1),
    ("discharge_ocp_3", None, 0x34, _U32, 1),
    ("gps_locked_charging", None, 0x35, _U32, 1),
    ("gps_locked_discharging", None, 0x36, _U32, 1),
    ("heating_start_temperature", None, 0x37, Int8sl, 1),
    ("heating_stop_temperature", None, 0x38, Int8sl, 1),
    ("smart_sleep_hours", None, 0x39, Int8ul, 1),
    ("discharge_utp", None, 0x3A, Int8sl, 1),
    ("discharge_utpr", None, 0x3B, Int8sl, 1),
    ("emergency", None, 0x6B, _U32, 1),
    ("uart1_protocol", None, 0xA5, Int16ul, 1),
    ("can_protocol", None, 0xA6, Int16ul, 1),
    ("uart2_protocol", None, 0xA8, Int16ul, 1),
    ("lcd_buzzer_trigger", None, 0xA9, Int16ul, 1),
    ("dry1_trigger", None, 0xAA, Int16ul, 1),
    ("dry2_trigger", None, 0xAB, Int16ul, 1),
    ("request_charge_voltage_time", None, 0xB3, Int8ul, 10),
    ("request_float_voltage_time", None, 0xB4, Int8ul, 10),
    ("emergency_duration", None, 0xB5, Int8ul, 1),
    ("uart3_protocol", None, 0xB6, Int16ul, 1),
    ("re_bulk_soc", None, 0xB7, Int8ul, 1),
)
# docs/protocol.md 2.5: JK04 writes float32 volts and amperes.
_JK04: Final[tuple[tuple[str, int, Construct], ...]] = (
    ("cell_count", 0x1C, Int16ul),
    ("power_off_voltage", 0x20, Float32l),
    ("voltage_calibration", 0x44, Float32l),
    ("balance_start_voltage", 0x58, Float32l),
    ("balance_trigger_voltage", 0x64, Float32l),
    ("max_balance_current", 0x68, Float32l),
    ("balancing_switch", 0x6C, Int8ul),
)

REGISTERS: Final[dict[ProtocolName, dict[str, Register]]] = {
    "JK02_24S": {n: Register(r24, enc, div) for n, r24, _, enc, div in _JK02 if r24 is not None},
    "JK02_32S": {n: Register(r32, enc, div) for n, _, r32, enc, div in _JK02 if r32 is not None},
    "JK04": {n: Register(code, enc) for n, code, enc in _JK04},
}

# Length-0 actions (2.3, JK02_32S per ESP).
ACTIONS: Final[dict[str, int]] = {
    "shutdown": 0x65,
    "restart": 0x66,
    "factory_reset": 0x9D,
    "preset_li_ion": 0x68,
    "preset_lifepo4": 0x69,
    "preset_lto": 0x6A,
}


def write_command(protocol: ProtocolName, name: str, value: Any) -> bytes:
    """The command that writes setting `name` (in published units: V, A, C, s...)."""
    register = REGISTERS[protocol].get(name)
    if register is None:
        raise FrameError(f"{protocol} has no writable setting {name!r}")
    raw = float(value) if register.encoding is Float32l else round(float(value) * register.div)
    try:
        return command(register.code, register.encoding.build(raw))
    except ConstructError as err:
        raise FrameError(f"{name}: {value!r} does not fit the register") from err
