"""The JK-BMS BLE protocol: bytes in, plain data out. No I/O, no imports of the rest of bluez-jk."""

from bluez_jk.protocol.assembler import Assembler
from bluez_jk.protocol.commands import (
    ACK,
    ACTIONS,
    CMD_CELL_INFO,
    CMD_DEVICE_INFO,
    CMD_LOGBOOK,
    REGISTERS,
    Command,
    Register,
    command,
    parse_command,
    write_command,
)
from bluez_jk.protocol.decode import Decoded, decode_frame
from bluez_jk.protocol.encode import encode_frame
from bluez_jk.protocol.errors import FrameError, ProtocolErrorRecord
from bluez_jk.protocol.events import event_name
from bluez_jk.protocol.frames import FRAME_LEN, HEADER, Kind
from bluez_jk.protocol.stream import StreamDecoder
from bluez_jk.protocol.variants import PROTOCOLS, DetectedBy, ProtocolName

__all__ = [
    "ACK",
    "ACTIONS",
    "CMD_CELL_INFO",
    "CMD_DEVICE_INFO",
    "CMD_LOGBOOK",
    "FRAME_LEN",
    "HEADER",
    "PROTOCOLS",
    "REGISTERS",
    "Assembler",
    "Command",
    "Decoded",
    "DetectedBy",
    "FrameError",
    "Kind",
    "ProtocolErrorRecord",
    "ProtocolName",
    "Register",
    "StreamDecoder",
    "command",
    "decode_frame",
    "encode_frame",
    "event_name",
    "parse_command",
    "write_command",
]
