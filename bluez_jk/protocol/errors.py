"""The protocol layer's own error: bytes that are not what the protocol says.

`protocol` imports nothing of the project (docs/design.md, "Import rules"), so the reader maps
`FrameError` to `bluez_jk.errors.ProtocolError` where the two layers meet. Streams never raise
it: the assembler and the stream decoder keep `ProtocolErrorRecord`s instead.
"""

from __future__ import annotations

from typing import Literal, TypedDict


class FrameError(ValueError):
    """A frame or command with a bad header, length, type or checksum."""


class ProtocolErrorRecord(TypedDict):
    """One problem seen in a byte stream, shaped like the Reading's `error` object."""

    type: Literal["ProtocolError"]
    message: str


def record(message: str) -> ProtocolErrorRecord:
    return {"type": "ProtocolError", "message": message}
