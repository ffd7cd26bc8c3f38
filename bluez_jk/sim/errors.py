"""BlueZ's D-Bus error names and texts (docs/bluez.md 2.3, 3.2, 4.3-4.7; src/error.c)."""

from __future__ import annotations

from dbus_fast import DBusError


def _bluez(kind: str, text: str) -> DBusError:
    return DBusError(f"org.bluez.Error.{kind}", text)


def in_progress() -> DBusError:
    """Device1.Connect pending or GATT conflicts."""
    return _bluez("InProgress", "In Progress")


def no_att_transport() -> DBusError:
    """WriteValue on a device without a link (5.66, the real-BlueZ probe)."""
    return _bluez("Failed", "No ATT transport")


def read_request_failed() -> DBusError:
    """ReadValue on a device without a link (5.66, the real-BlueZ probe)."""
    return _bluez("Failed", "Failed to send read request")


def notify_session_failed() -> DBusError:
    """StartNotify on a device without a link (5.66, the real-BlueZ probe)."""
    return _bluez("Failed", "Failed to register notify session")


def already_in_progress() -> DBusError:
    """A second Connect while one is pending, BlueZ before 5.81."""
    return _bluez("Failed", "Operation already in progress")


def discovery_in_progress() -> DBusError:
    """Only discovery uses this text (docs/bluez.md fact 1)."""
    return _bluez("InProgress", "Operation already in progress")


def connection_abort() -> DBusError:
    # BlueZ >= 5.62 reason string; every LE link failure becomes this (docs/bluez.md fact 3).
    return _bluez("Failed", "le-connection-abort-by-local")


def connection_canceled() -> DBusError:
    return _bluez("Failed", "br-connection-canceled")


def not_connected_failed() -> DBusError:
    return _bluez("Failed", "Not connected")


def not_connected() -> DBusError:
    """StartNotify inside the disconnect grace window."""
    return _bluez("NotConnected", "Not Connected")


def notify_acquired() -> DBusError:
    return _bluez("NotPermitted", "Notify acquired")


def write_acquired() -> DBusError:
    return _bluez("NotPermitted", "Write acquired")


def write_not_permitted() -> DBusError:
    return _bluez("NotPermitted", "Write not permitted")


def read_not_permitted() -> DBusError:
    return _bluez("NotPermitted", "Read not permitted")


def not_authorized() -> DBusError:
    return _bluez("NotAuthorized", "Operation Not Authorized")


def not_supported() -> DBusError:
    return _bluez("NotSupported", "Operation is not supported")


def no_notify_session() -> DBusError:
    return _bluez("Failed", "No notify session started")


def no_discovery() -> DBusError:
    return _bluez("Failed", "No discovery started")


def connect_powered_off() -> DBusError:
    # 5.66 dev_connect on an LE device: no powered check of its own; the ATT socket's connect
    # fails in the kernel (no route to a controller that is down) and device_connect_le
    # answers -EIO (docs/bluez.md 2.6).
    return _bluez("Failed", "Input/output error")


def not_ready() -> DBusError:
    return _bluez("NotReady", "Resource Not Ready")


def invalid_arguments() -> DBusError:
    return _bluez("InvalidArguments", "Invalid arguments in method call")


def does_not_exist() -> DBusError:
    return _bluez("DoesNotExist", "Does Not Exist")


def already_exists() -> DBusError:
    """RegisterAgent from a sender that has one; Pair on a bonded device."""
    return _bluez("AlreadyExists", "Already Exists")


def authentication_failed() -> DBusError:
    """Pair: SMP failed (wrong passkey, MITM not possible with the agent's capability)."""
    return _bluez("AuthenticationFailed", "Authentication Failed")


def authentication_canceled() -> DBusError:
    """Pair: CancelPairing, or the link dropped while pairing."""
    return _bluez("AuthenticationCanceled", "Authentication Canceled")


def authentication_rejected() -> DBusError:
    """Pair: the peer refused to pair."""
    return _bluez("AuthenticationRejected", "Authentication Rejected")


def authentication_timeout() -> DBusError:
    return _bluez("AuthenticationTimeout", "Authentication Timeout")


def connection_attempt_failed() -> DBusError:
    """Pair could not bring the link up (new_authentication_return, MGMT_STATUS_CONNECT_FAILED)."""
    return _bluez("ConnectionAttemptFailed", "Page Timeout")


def att_error(code: int) -> DBusError:
    return _bluez("Failed", f"Operation failed with ATT error: 0x{code:02x}")


def unknown(kind: str, msg_member: str, signature: str, interface: str) -> DBusError:
    """libdbus's text for UnknownObject / UnknownMethod, trailing newline included."""
    return DBusError(
        f"org.freedesktop.DBus.Error.{kind}",
        f'Method "{msg_member}" with signature "{signature}" on interface "{interface}" '
        "doesn't exist\n",
    )
