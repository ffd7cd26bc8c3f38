"""The one error hierarchy of bluez-jk.

Each subclass carries the `type` name that the Reading's `error` object uses (docs/design.md,
"Error model"). Errors cross layers as exceptions and leave the program through `to_info()`.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import ClassVar, Literal, TypedDict

ErrorType = Literal[
    "AdapterNotFound",
    "DeviceNotFound",
    "ConnectFailed",
    "InProgress",
    "ServicesNotResolved",
    "NotifyAcquired",
    "NotifyStuck",
    "AuthenticationRequired",
    "PairingFailed",
    "Disconnected",
    "Timeout",
    "ProtocolError",
    "BusError",
    "Busy",
    "ConfigError",
    "Paused",
    "MqttError",
    "Interrupted",
]

Stage = Literal[
    "config",
    "lock",
    "bus",
    "adapter",
    "discover",
    "connect",
    "resolve",
    "pair",
    "subscribe",
    "write",
    "collect",
    "cleanup",
    "mqtt",
]


class ErrorInfo(TypedDict):
    type: ErrorType
    message: str
    stage: str | None
    dbus_error: str | None


class JkError(Exception):
    """Base of every error bluez-jk raises on purpose."""

    type: ClassVar[ErrorType]

    def __init__(
        self,
        message: str = "",
        *,
        stage: Stage | None = None,
        dbus_error: str | None = None,
    ) -> None:
        super().__init__(message or self.type)
        self.message = message or self.type
        self.stage: Stage | None = stage
        self.dbus_error = dbus_error

    def to_info(self) -> ErrorInfo:
        return {
            "type": self.type,
            "message": self.message,
            "stage": self.stage,
            "dbus_error": self.dbus_error,
        }

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.message!r}, stage={self.stage!r}, "
            f"dbus_error={self.dbus_error!r})"
        )


class AdapterNotFound(JkError):
    type = "AdapterNotFound"


class DeviceNotFound(JkError):
    type = "DeviceNotFound"


class ConnectFailed(JkError):
    type = "ConnectFailed"


class InProgress(JkError):
    type = "InProgress"


class ServicesNotResolved(JkError):
    type = "ServicesNotResolved"


class NotifyAcquired(JkError):
    type = "NotifyAcquired"


class NotifyStuck(JkError):
    """BlueZ reports "Notify acquired" although no client can hold the notification: a
    bluetoothd before 5.84 after a failed AcquireNotify (docs/bluez.md fact 16). Only a
    restart of bluetoothd clears it."""

    type = "NotifyStuck"


class AuthenticationRequired(JkError):
    type = "AuthenticationRequired"


class PairingFailed(JkError):
    """Device1.Pair failed; the message carries BlueZ's reason and what to try."""

    type = "PairingFailed"


class Disconnected(JkError):
    type = "Disconnected"


class Timeout(JkError):
    type = "Timeout"


class ProtocolError(JkError):
    type = "ProtocolError"


class BusError(JkError):
    type = "BusError"


class Busy(JkError):
    type = "Busy"


class Paused(JkError):
    """The gateway does not read this device now (`cmd/pause`); the message says until when."""

    type = "Paused"

    @classmethod
    def until(
        cls, name: str, until_epoch: float, pause_topic: str, *, stage: Stage | None = None
    ) -> Paused:
        stamp = datetime.fromtimestamp(until_epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        left_min = max(0.0, until_epoch - time.time()) / 60.0
        return cls(
            f"{name} is paused by cmd/pause until {stamp} ({left_min:.1f} min left), so the "
            f'gateway does not read it; to resume now publish {{"minutes": 0}} to {pause_topic}',
            stage=stage,
        )


class MqttError(JkError):
    """The MQTT broker could not be reached or used (jk-ble-read --via-mqtt)."""

    type = "MqttError"


class Interrupted(JkError):
    """Stopped by the user (Ctrl-C, SIGTERM) before the read could finish."""

    type = "Interrupted"


class ConfigError(JkError):
    type = "ConfigError"

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(f"{key}: {message}" if key else message, stage="config")
        self.key = key


ERROR_TYPES: dict[str, type[JkError]] = {
    cls.type: cls
    for cls in (
        AdapterNotFound,
        DeviceNotFound,
        ConnectFailed,
        InProgress,
        ServicesNotResolved,
        NotifyAcquired,
        NotifyStuck,
        AuthenticationRequired,
        PairingFailed,
        Disconnected,
        Timeout,
        ProtocolError,
        BusError,
        Busy,
        ConfigError,
        Paused,
        MqttError,
        Interrupted,
    )
}
