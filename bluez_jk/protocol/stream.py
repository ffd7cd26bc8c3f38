"""A notification stream -> the latest decoded status, choosing the layout on the way (6)."""

from __future__ import annotations

import time
from collections import deque
from typing import Any, Final, TypedDict

from bluez_jk.protocol.alarms import warnings_from
from bluez_jk.protocol.assembler import Assembler
from bluez_jk.protocol.decode import Decoded, decode_frame
from bluez_jk.protocol.detect import from_content, from_sw_rev
from bluez_jk.protocol.errors import FrameError, ProtocolErrorRecord
from bluez_jk.protocol.frames import TYPE_CODES
from bluez_jk.protocol.variants import DetectedBy, ProtocolName

# Device info reads the same on every layout (5.1), so it decodes before the layout is known.
_ANY_LAYOUT: Final[ProtocolName] = "JK02_32S"
MAX_PENDING: Final = 8
MAX_CELL_V: Final = 5.0


class Got(TypedDict):
    """Which of the three status frames have been decoded."""

    device_info: bool
    cell_info: bool
    settings: bool


class Status(TypedDict):
    """The latest decoded frame of each kind (keys: docs/protocol.md 5), the warnings of the
    last cell-info frame and when a status frame last arrived: a Reading's `status`."""

    last_update: float | None
    device_info: dict[str, Any]
    cell_info: dict[str, Any]
    settings: dict[str, Any]
    warnings: dict[str, bool]


def empty_status() -> Status:
    return {"last_update": None, "device_info": {}, "cell_info": {}, "settings": {}, "warnings": {}}


def plausible(decoded: Decoded) -> bool:
    """The second line of defence behind the 8-bit checksum (docs/protocol.md 4.3 step 7): a
    false-accepted window or a wrong layout shows as cell voltages no cell can have."""
    if decoded.kind != "cell_info":
        return True
    return all(v is not None and 0.0 <= v <= MAX_CELL_V for v in decoded.values["voltages"])


class StreamDecoder:
    """Feed notification chunks; read `.status`, `.got`, `.protocol`, `.detected_by`.

    Frames that arrive before the layout is known (a cell-info frame before device info, on a
    stream that joined late) are kept, at most MAX_PENDING, and decoded once it is.
    """

    def __init__(self, protocol: ProtocolName | None = None) -> None:
        self.assembler = Assembler()
        self.protocol: ProtocolName | None = protocol
        self.detected_by: DetectedBy | None = "config" if protocol is not None else None
        self.status: Status = empty_status()
        self.got: Got = {"device_info": False, "cell_info": False, "settings": False}
        self.logbook: dict[str, Any] | None = None
        self._pending: deque[bytes] = deque(maxlen=MAX_PENDING)
        # Set once a cell-info frame's enabled-cell mask agreed with the chosen layout.
        self._cross_checked = False

    @property
    def errors(self) -> list[ProtocolErrorRecord]:
        return self.assembler.errors

    @property
    def undetected(self) -> int:
        """Valid frames still waiting for the protocol to be known."""
        return len(self._pending)

    def feed(self, chunk: bytes, now: float | None = None) -> list[Decoded]:
        """Decoded frames completed by this chunk, in order. `now` stamps `last_update`."""
        decoded: list[Decoded] = []
        for frame in self.assembler.feed(chunk):
            decoded.extend(self._frame(frame, time.time() if now is None else now))
        return decoded

    def _frame(self, frame: bytes, now: float) -> list[Decoded]:
        known_before = self.protocol is not None
        if TYPE_CODES[frame[4]] == "device_info":
            result = self._decode(frame, self.protocol or _ANY_LAYOUT, now)
            if result is not None:
                self._evidence(from_sw_rev(result.values["sw_rev"]), "sw_rev")
            latest = [] if result is None else [result]
            return latest if known_before else self._replay(now) + latest
        if not self._cross_checked:
            self._evidence(from_content(frame), "content")
        self._pending.append(frame)
        return self._replay(now) if self.protocol is not None else []

    def _replay(self, now: float) -> list[Decoded]:
        done: list[Decoded] = []
        while self._pending and self.protocol is not None:
            result = self._decode(self._pending.popleft(), self.protocol, now)
            if result is not None:
                done.append(result)
        return done

    def _evidence(self, found: ProtocolName | None, source: DetectedBy) -> None:
        if found is None:
            return
        if source == "content" and found == self.protocol:
            self._cross_checked = True
        if self.protocol is None:
            self.protocol, self.detected_by = found, source
            self._cross_checked = source == "content"
        elif self.detected_by == "config":
            if source == "content" and found != self.protocol:
                self._cross_checked = True  # say it once
                self.assembler.report(
                    f"configured protocol {self.protocol} but a {found} frame arrived"
                )
        elif source == "content" and found != self.protocol:
            # The mask outranks the sw_rev rule, which also cannot tell JK04 from JK02_24S.
            self.protocol, self.detected_by, self._cross_checked = found, "content", True
        elif source == "sw_rev" and found == self.protocol and self.detected_by == "content":
            self.detected_by = "sw_rev"  # both agree; name the higher-ranked evidence
        elif source == "sw_rev" and found != self.protocol and self.detected_by == "sw_rev":
            self.protocol = found  # a newer device-info frame (firmware update)

    def _decode(self, frame: bytes, protocol: ProtocolName, now: float) -> Decoded | None:
        try:
            result = decode_frame(frame, protocol)
        except FrameError as err:
            self.assembler.report(str(err))
            return None
        if not plausible(result):
            self.assembler.report(f"implausible {result.kind} frame dropped (cell voltage)")
            return None
        if result.kind == "logbook":
            self.logbook = result.values
            return result
        self.status[result.kind] = result.values
        self.got[result.kind] = True
        if result.kind == "cell_info":
            self.status["warnings"] = warnings_from(result.values.get("error_bitmask"), protocol)
        # DSB's meaning: the time of the last decoded 0x01/0x02/0x03 frame (docs/protocol.md 8).
        self.status["last_update"] = now
        return result
