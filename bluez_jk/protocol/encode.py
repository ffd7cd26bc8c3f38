"""Values -> one 300-byte frame: the inverse of decode_frame, built with the same structs.

The simulator builds every frame it sends with `encode_frame`. Values use the keys and units
decode_frame returns; a missing key is zero (an absent temperature probe is `None`). Values
decode_frame derives (`power`, `production`, JK04 `total_voltage`) are not in the frame and
are ignored here.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any

from construct import ConstructError

from bluez_jk.protocol.codec import codec_for
from bluez_jk.protocol.errors import FrameError
from bluez_jk.protocol.frames import BUILD_DEFAULTS, FRAME_LEN, KIND_CODES, Field, Kind, checksum
from bluez_jk.protocol.variants import ProtocolName


def encode_frame(
    kind: Kind, protocol: ProtocolName, values: Mapping[str, Any], counter: int = 0
) -> bytes:
    """Raises FrameError when a value does not fit its field or has the wrong type."""
    codec = codec_for(kind, protocol)
    obj: dict[str, Any] = {"frame_type": KIND_CODES[kind], "counter": counter, "checksum": 0}
    try:
        for field, (name, convert) in zip(codec.fields, codec.encoders, strict=True):
            obj[name] = convert(values[name] if name in values else _missing(field))
        if kind == "cell_info" and "enabled_cells_bitmask" in obj:
            obj["enabled_cells_bitmask"] = _cell_mask(values)
        data = bytearray(codec.compiled.build(obj))
    except (ConstructError, struct.error, OverflowError, TypeError, ValueError) as err:
        raise FrameError(f"{kind}: {err}") from err
    data[FRAME_LEN - 1] = checksum(data[: FRAME_LEN - 1])
    return bytes(data)


def _missing(field: Field) -> Any:
    """The value of a key the caller left out: zero, or what every BMS sends there."""
    if field.name in BUILD_DEFAULTS:
        return BUILD_DEFAULTS[field.name]
    if field.kind == "bytes":
        return ""
    return [] if field.count is not None else 0


def _cell_mask(values: Mapping[str, Any]) -> int:
    """The enabled-cell mask, by default one bit per given cell voltage."""
    mask = values.get("enabled_cells_bitmask")
    if mask is not None:
        return int(mask)
    return (1 << len(values.get("voltages") or [])) - 1
