"""The Reading: what one read attempt produced.

It is the `raw` MQTT payload and the output of `jk-ble-read` (docs/design.md, "Reading"). Every
layer above `protocol` speaks in these types; the JSON form is exactly `dict(reading)`.
"""

from __future__ import annotations

import time
from typing import Literal, NotRequired, TypedDict

from bluez_jk.errors import ErrorInfo, JkError

# Defined where they are produced (the protocol room), named here for the rooms above, which
# speak in Readings and do not import `protocol` (docs/design.md, "Import rules").
from bluez_jk.protocol.stream import Got, Status, empty_status
from bluez_jk.protocol.variants import DetectedBy, ProtocolName

__all__ = [
    "DetectedBy",
    "Got",
    "Logbook",
    "LogbookEntry",
    "ProtocolName",
    "Reading",
    "Status",
    "empty_status",
    "error_reading",
    "missing_logbook",
    "new_reading",
]


class LogbookEntry(TypedDict):
    t: int  # the BMS's own seconds counter at the event (docs/protocol.md 5.6)
    code: int  # event code, docs/protocol.md appendix B
    event: str | None  # the code's name (protocol/events.py), None for an unlisted code


class Logbook(TypedDict):
    """The BMS's event log as one read found it (only in a read that asked for it)."""

    # ok: the 0x05 frame arrived; unsupported: the layout has no logbook (JK04);
    # missing: asked for, but no logbook frame came (the read failed or the BMS kept silent).
    status: Literal["ok", "unsupported", "missing"]
    message: str | None
    entries: list[LogbookEntry]


class Reading(TypedDict):
    name: str
    address: str
    adapter: str | None
    connected: bool
    protocol: ProtocolName | None
    detected_by: DetectedBy | None
    model_nbr: str | None
    paired: bool | None  # Device1.Paired (a bonded link) once connected; None: never connected
    got: Got
    status: Status
    duration_s: float
    error: ErrorInfo | None
    logbook: NotRequired[Logbook]  # present only when the read asked for it


def new_reading(name: str, address: str, adapter: str | None) -> Reading:
    return {
        "name": name,
        "address": address,
        "adapter": adapter,
        "connected": False,
        "protocol": None,
        "detected_by": None,
        "model_nbr": None,
        "paired": None,
        "got": {"device_info": False, "cell_info": False, "settings": False},
        "status": empty_status(),
        "duration_s": 0.0,
        "error": None,
    }


def error_reading(
    name: str, address: str, adapter: str | None, error: JkError, started: float | None = None
) -> Reading:
    """A Reading that carries only an error (used before any BLE work could start)."""
    reading = new_reading(name, address, adapter)
    reading["error"] = error.to_info()
    if started is not None:
        reading["duration_s"] = round(time.monotonic() - started, 3)
    return reading


def missing_logbook(message: str) -> Logbook:
    return {"status": "missing", "message": message, "entries": []}
