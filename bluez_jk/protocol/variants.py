"""The three frame layouts JK-BMS boards speak (docs/protocol.md 5, 6) and how one was chosen."""

from __future__ import annotations

from typing import Final, Literal, TypeGuard, get_args

ProtocolName = Literal["JK02_24S", "JK02_32S", "JK04"]
DetectedBy = Literal["config", "sw_rev", "content"]

PROTOCOLS: Final[tuple[ProtocolName, ...]] = get_args(ProtocolName)

# Length of the per-cell arrays in a cell-info frame. JK02_32S widens both arrays of JK02_24S
# from 24 to 32 entries, which is the whole A/B offset shift of docs/protocol.md 5.2.
CELL_COUNTS: Final[dict[ProtocolName, int]] = {"JK02_24S": 24, "JK02_32S": 32, "JK04": 24}


def is_protocol(name: object) -> TypeGuard[ProtocolName]:
    return name in PROTOCOLS
