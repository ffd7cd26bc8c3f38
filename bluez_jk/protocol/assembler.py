"""Notification chunks in, complete checksum-valid 300-byte frames out (docs/protocol.md 4.3).

Chunk borders mean nothing: a header may straddle two notifications, one notification may
hold the end of a frame and the start of the next, and 14.x+ firmware interleaves `AT\\r\\n`
and 0xC8 acknowledge frames everywhere (3.4, 9). Nothing here raises on bad input; problems
are counted and kept as error records.
"""

from __future__ import annotations

from typing import Final

from bluez_jk.protocol.commands import ACK
from bluez_jk.protocol.errors import ProtocolErrorRecord, record
from bluez_jk.protocol.frames import FRAME_LEN, HEADER, TYPE_CODES

MAX_ERRORS: Final = 100
_VALID_TYPES: Final = frozenset(TYPE_CODES)


class Assembler:
    """A byte-stream re-synchroniser. After every `feed` it holds fewer than 300 bytes."""

    def __init__(self, *, max_errors: int = MAX_ERRORS) -> None:
        self._buffer = bytearray()
        self._max_errors = max_errors
        self.errors: list[ProtocolErrorRecord] = []
        self.frames = 0
        self.corrupt = 0
        self.junk_bytes = 0
        self.acks = 0

    @property
    def buffered(self) -> int:
        """Bytes held for the next feed (a partial frame, or up to 3 bytes of a header)."""
        return len(self._buffer)

    def report(self, message: str) -> None:
        """Keep an error record; only the latest `max_errors` are kept."""
        self.errors.append(record(message))
        if len(self.errors) > self._max_errors:
            del self.errors[: len(self.errors) - self._max_errors]

    def feed(self, chunk: bytes) -> list[bytes]:
        buffer = self._buffer
        buffer += chunk
        frames: list[bytes] = []
        accounted = 0  # bytes before this index are consumed (a frame) or counted as dropped
        search = 0
        while True:
            start = buffer.find(HEADER, search)
            if start < 0:
                keep = _partial_at_end(buffer)
                self._drop(accounted, len(buffer) - keep)
                del buffer[: len(buffer) - keep]
                return frames
            if len(buffer) - start < FRAME_LEN:
                self._drop(accounted, start)
                del buffer[:start]
                return frames
            with memoryview(buffer) as view:
                frame = bytes(view[start : start + FRAME_LEN])
            if (sum(frame) - frame[-1]) & 0xFF == frame[-1] and frame[4] in _VALID_TYPES:
                self._drop(accounted, start)
                frames.append(frame)
                self.frames += 1
                accounted = search = start + FRAME_LEN
            else:
                # Header bytes can occur inside a payload, and a truncated frame can be followed
                # by a whole one: re-sync at the next header after this one instead of
                # consuming 300 bytes that may hold a real frame (4.3 step 3).
                self.corrupt += 1
                problem = "checksum" if frame[4] in _VALID_TYPES else f"type 0x{frame[4]:02x}"
                self.report(f"corrupt frame dropped: bad {problem}")
                search = start + 1

    def _drop(self, begin: int, end: int) -> None:
        if end > begin:
            self.junk_bytes += end - begin
            self.acks += self._buffer.count(ACK, begin, end)


def _partial_at_end(buffer: bytearray) -> int:
    """How many trailing bytes could start a header or an ack split across notifications.

    Keeping a partial ack (at most 19 bytes) only lets it be counted as one; the JK04 module
    splits even the 20-byte ack (docs/protocol.md 1.4).
    """
    tail = len(buffer)
    header = next((n for n in range(len(HEADER) - 1, 0, -1) if buffer.endswith(HEADER[:n])), 0)
    # An ack has one 0xAA, its first byte: the only place a partial ack can start.
    start = buffer.rfind(ACK[0], max(0, tail - len(ACK) + 1))
    if start >= 0 and buffer[start:] == ACK[: tail - start]:
        return max(header, tail - start)
    return header
