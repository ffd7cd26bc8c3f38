"""Choosing the layout from evidence (docs/protocol.md 6).

Order of evidence: an explicit setting, then the device-info `sw_rev` (major < 11 -> JK02_24S,
else JK02_32S; it cannot tell JK04 apart), then the content of a frame. The 24S/32S choice is
cross-checked with the enabled-cell mask, because a wrong choice is silent: cell voltages still
look right while pack voltage, SOC and cycles are garbage (ESP #1061, #275).
"""

from __future__ import annotations

import re
from typing import Final

from bluez_jk.protocol.codec import codec_for
from bluez_jk.protocol.frames import FRAME_LEN, HEADER, TYPE_CODES
from bluez_jk.protocol.variants import ProtocolName

_MAJOR: Final = re.compile(r"\s*[vV]?(\d+)")
# The spec's byte-9 rule, read through the structs: byte 9 is the exponent byte of cell 1's
# float32 on JK04 (0x3F or 0x40, i.e. 0.5 V <= cell < 8 V) but the high byte of cell 2 in mV on
# JK02 (at most 0x13, i.e. below 5.12 V).
_JK04_FIRST_CELL_V: Final = (0.5, 8.0)
_JK02_CELL_BELOW_V: Final = 5.12
# JK04 settings start with float32 1.0 where JK02 settings hold the smart-sleep voltage in mV.
_JK04_SETTINGS_MARK: Final = 1.0
_JK02: Final[tuple[ProtocolName, ...]] = ("JK02_24S", "JK02_32S")


def from_sw_rev(sw_rev: str) -> ProtocolName | None:
    """The sw_rev rule of BAT and AIO; None when the version has no leading number."""
    match = _MAJOR.match(sw_rev)
    if match is None:
        return None
    return "JK02_24S" if int(match.group(1)) < 11 else "JK02_32S"


def mask_agrees(frame: bytes, protocol: ProtocolName) -> bool:
    """For a JK02 cell-info frame read with `protocol`'s layout: does popcount(enabled-cell
    mask) equal the number of non-zero cell voltages?"""
    raw = codec_for("cell_info", protocol).parse(frame[:FRAME_LEN])
    mask: int = raw["enabled_cells_bitmask"]
    return mask.bit_count() == sum(1 for v in raw["voltages"] if v)


def from_content(frame: bytes) -> ProtocolName | None:
    """The layout one frame proves, or None when it does not tell."""
    if len(frame) < FRAME_LEN or frame[:4] != HEADER:
        return None
    frame = frame[:FRAME_LEN]
    kind = TYPE_CODES.get(frame[4])
    if kind == "settings":
        mark = codec_for("settings", "JK04").parse(frame)["format_mark"]
        return "JK04" if mark == _JK04_SETTINGS_MARK else None
    if kind != "cell_info":
        return None
    low, high = _JK04_FIRST_CELL_V
    if low <= codec_for("cell_info", "JK04").parse(frame)["voltages"][0] < high:
        return "JK04"
    # Cells 1 and 2 sit at the same offsets in both JK02 layouts; the scale is mV.
    if codec_for("cell_info", "JK02_24S").parse(frame)["voltages"][1] >= _JK02_CELL_BELOW_V * 1000:
        return None
    fits = [p for p in _JK02 if mask_agrees(frame, p)]
    # No cells measured (mask 0, voltages 0) fits both layouts: no evidence either way.
    return fits[0] if len(fits) == 1 else None
