"""The one error hierarchy of bluez-jk.

Each subclass carries the `type` name that the Reading's `error` object uses (docs/design.md,
"Error model"). Errors cross layers as exceptions and leave the program through `to_info()`.
"""

from __future__ import annotations

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
    "Disconnected",
    "Timeout",
    "ProtocolError",
    "BusError",
    "Busy",
    "ConfigError",
]

Stage = Literal[
    "config",
    "lock",
    "bus",
    "adapter",
    "discover",
    "connect",
    "resolve",
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
        Disconnected,
        Timeout,
        ProtocolError,
        BusError,
        Busy,
        ConfigError,
    )
}
