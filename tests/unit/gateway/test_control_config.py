"""`control` in the config file: off by default, global default + per-device override, strict
validation with key paths; cmd/config cannot change it."""

from __future__ import annotations

from typing import Any

import pytest

from bluez_jk.errors import ConfigError
from bluez_jk.gateway.config import (
    ConfigProblems,
    ControlConfig,
    parse_config,
    parse_remote_config,
)

MAC = "C8:47:80:37:02:E8"


def config(top: dict[str, Any] | None = None, **device: Any) -> Any:
    return parse_config({"devices": [{"name": "jk1", "address": MAC, **device}], **(top or {})})


def problems(top: dict[str, Any] | None = None, **device: Any) -> list[tuple[str | None, str]]:
    with pytest.raises(ConfigProblems) as err:
        config(top, **device)
    return [(p.key, p.message) for p in err.value.problems]


def test_control_is_off_by_default() -> None:
    parsed = config()
    assert parsed.control == ControlConfig(enabled=False, allow=(), max_age_s=120.0)
    assert parsed.devices[0].control == parsed.control


def test_global_default_and_per_device_override_key_by_key() -> None:
    top = {"control": {"enabled": True, "allow": ["charging", "balancing"], "max_age_s": 60}}
    parsed = config(top, control={"allow": ["discharging", "discharging"]})
    assert parsed.devices[0].control == ControlConfig(True, ("discharging",), 60.0)
    parsed = config(top, control={"enabled": False})
    assert parsed.devices[0].control == ControlConfig(False, ("charging", "balancing"), 60.0)
    assert config(top, control=None).devices[0].control == parsed.control


@pytest.mark.parametrize(
    ("top", "device", "key", "text"),
    [
        ({"control": {"enabled": "yes"}}, {}, "control.enabled", "true or false"),
        ({"control": {"allow": "charging"}}, {}, "control.allow", "array of setting names"),
        ({"control": {"allow": ["cell_ovp"]}}, {}, "control.allow", "unknown setting"),
        ({"control": {"max_age_s": 0}}, {}, "control.max_age_s", "between 1 and 3600"),
        ({"control": {"colour": 1}}, {}, "control.colour", "unknown key"),
        ({"control": []}, {}, "control", "JSON object"),
        ({}, {"control": {"allow": [1]}}, "devices[0].control.allow", "array of setting"),
        ({}, {"control": {"enabled": 1}}, "devices[0].control.enabled", "true or false"),
    ],
)
def test_bad_control_values_are_refused_with_their_key(
    top: dict[str, Any], device: dict[str, Any], key: str, text: str
) -> None:
    found = problems(top, **device)
    assert any(k == key and text in message for k, message in found), found


def test_cmd_config_cannot_enable_control() -> None:
    with pytest.raises(ConfigError) as err:
        parse_remote_config(b'{"control": {"enabled": true}}')
    assert "unknown key" in err.value.message
