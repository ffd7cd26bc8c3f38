"""The Reading: what one read attempt produced.

It is the `raw` MQTT payload and the output of `jk-ble-read` (docs/design.md, "Reading"). Every
layer above `protocol` speaks in these types; the JSON form is exactly `dict(reading)`.
"""

from __future__ import annotations

import time
from typing import Any, Literal, TypedDict

from bluez_jk.errors import ErrorInfo, JkError

ProtocolName = Literal["JK02_24S", "JK02_32S", "JK04"]
DetectedBy = Literal["config", "sw_rev", "content"]


class Got(TypedDict):
    device_info: bool
    cell_info: bool
    settings: bool


class Status(TypedDict):
    last_update: float | None
    device_info: dict[str, Any]
    cell_info: dict[str, Any]
    settings: dict[str, Any]
    warnings: dict[str, bool]


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


def empty_status() -> Status:
    return {
        "last_update": None,
        "device_info": {},
        "cell_info": {},
        "settings": {},
        "warnings": {},
    }


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
