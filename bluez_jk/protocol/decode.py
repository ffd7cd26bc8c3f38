"""One 300-byte frame -> plain values in the "our name" keys and units of docs/protocol.md 5.

`StreamDecoder` (stream.py) does the same for a notification stream.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from construct import ConstructError

from bluez_jk.protocol.codec import codec_for
from bluez_jk.protocol.errors import FrameError
from bluez_jk.protocol.frames import FRAME_LEN, HEADER, TYPE_CODES, Kind, checksum
from bluez_jk.protocol.variants import ProtocolName

# dbus-serialbattery publishes the first 8 characters of the user data as `production` (8).
_PRODUCTION_CHARS = 8


@dataclass(frozen=True)
class Decoded:
    kind: Kind
    values: dict[str, Any]


def frame_kind(frame: bytes) -> Kind:
    """Check header, length, checksum and type of a frame; its kind."""
    if len(frame) < FRAME_LEN:
        raise FrameError(f"frame of {len(frame)} bytes, expected {FRAME_LEN}")
    if frame[:4] != HEADER:
        raise FrameError(f"bad frame header {frame[:4].hex()}")
    if checksum(frame[: FRAME_LEN - 1]) != frame[FRAME_LEN - 1]:
        raise FrameError("bad frame checksum")
    kind = TYPE_CODES.get(frame[4])
    if kind is None:
        raise FrameError(f"unknown frame type 0x{frame[4]:02x}")
    return kind


def decode_frame(frame: bytes, protocol: ProtocolName) -> Decoded:
    """Decode one frame; bytes after the first 300 (acks, `AT`) are ignored.

    Raises FrameError on a bad header, length, checksum or frame type.
    """
    frame = bytes(frame[:FRAME_LEN])
    kind = frame_kind(frame)
    codec = codec_for(kind, protocol)
    try:
        raw = codec.parse(frame)
    except (
        ConstructError,
        struct.error,
    ) as err:  # a 300-byte frame always fits; kept as a typed guard
        raise FrameError(f"{kind}: {err}") from err
    values = {
        name: raw[name] if convert is None else convert(raw[name])
        for name, convert in codec.decoders
    }
    _DERIVE[kind](values, protocol)
    return Decoded(kind, values)


def _cells_in_use(values: dict[str, Any]) -> int:
    mask = values.get("enabled_cells_bitmask")
    if mask:
        return int(mask.bit_length())
    # JK04 has no mask, and a JK02 that has not counted its cells yet reports 0.
    voltages = values["voltages"]
    used = len(voltages)
    while used and not voltages[used - 1]:
        used -= 1
    return used


def _derive_cell_info(values: dict[str, Any], protocol: ProtocolName) -> None:
    used = _cells_in_use(values)
    values["voltages"] = values["voltages"][:used]
    values["resistances"] = values["resistances"][:used]
    if protocol == "JK04":
        # A balancer board: no pack-voltage field, the pack is the sum of its cells (ESP).
        # Rounded to the mV of the JK02 pack-voltage field.
        values["total_voltage"] = round(sum(v for v in values["voltages"] if v), 3)
        return
    # The frame's own power field is unsigned; the product carries the sign of the current.
    values["power"] = round(values["total_voltage"] * values["current"], 2)


def _derive_device_info(values: dict[str, Any], protocol: ProtocolName) -> None:
    values["production"] = values["user_data"][:_PRODUCTION_CHARS]


def _derive_logbook(values: dict[str, Any], protocol: ProtocolName) -> None:
    # Slots past the count are zero-filled; a zero code is no event (appendix B starts at 1),
    # while t = 0 is a real one (the first boot), so only the code tells an unused slot.
    values["entries"] = [e for e in values["entries"][: values["entry_count"]] if e["code"]]


def _derive_nothing(values: dict[str, Any], protocol: ProtocolName) -> None:
    return


_DERIVE = {
    "cell_info": _derive_cell_info,
    "device_info": _derive_device_info,
    "settings": _derive_nothing,
    "logbook": _derive_logbook,
}


__all__ = ["Decoded", "decode_frame", "frame_kind"]
