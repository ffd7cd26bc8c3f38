"""Which BMS a one-shot tool talks to, and with which read settings: the device's entry in a
gateway config (`--config` + `--name`), overridden by whatever the command line gives. One
place for jk-ble-read and jk-ble-write, so both honour the same per-device settings
(adapter, protocol, timeouts, notify mode, pairing and passkey)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bluez_jk.bluez.paths import validate_adapter
from bluez_jk.errors import ConfigError
from bluez_jk.gateway.config import DeviceConfig, GatewayConfig


def config_device(config: GatewayConfig, name: str | None, path: Path) -> DeviceConfig:
    """The device called `name` in the config at `path`; a ConfigError naming it otherwise."""
    if not name:
        raise ConfigError("--config needs --name", key="name")
    match = [d for d in config.devices if d.name == name]
    if not match:
        raise ConfigError(f"no device named {name!r} in {path}", key="name")
    return match[0]


def device_values(device: DeviceConfig) -> dict[str, Any]:
    """A configured device as ReadRequest fields (plus its address)."""
    return {
        "address": device.address,
        "adapter": device.adapter,
        "protocol": device.protocol,
        "timeout_s": device.timeout_s,
        "scan_timeout_s": device.scan_timeout_s,
        "notify_mode": device.notify_mode,
        "pairing": device.pairing,
        "passkey": device.passkey,
    }


def request_values(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """ReadRequest fields: the config's values, then the command line's (None = not given)."""
    values = {k: v for k, v in base.items() if k != "address" and v is not None}
    values.update({k: v for k, v in overrides.items() if v is not None})
    if "adapter" in values:
        values["adapter"] = validate_adapter(values["adapter"])
    return values
