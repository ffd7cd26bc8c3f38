"""`logbook` in the config file: off by default, global default + per-device override, strict
validation with key paths; cmd/config cannot change it."""

from __future__ import annotations

from typing import Any

import pytest

from bluez_jk.errors import ConfigError
from bluez_jk.gateway.config import (
    ConfigProblems,
    LogbookConfig,
    parse_config,
    parse_remote_config,
)

MAC = "C8:47:80:37:02:E8"


def config(top: dict[str, Any] | None = None, **device: Any) -> Any:
    return parse_config({"devices": [{"name": "jk1", "address": MAC, **device}], **(top or {})})


def test_logbook_is_off_by_default() -> None:
    parsed = config()
    assert parsed.logbook == LogbookConfig(enabled=False, interval_s=3600.0)
    assert parsed.devices[0].logbook == parsed.logbook


def test_a_device_replaces_the_global_keys_it_names() -> None:
    top = {"logbook": {"enabled": True, "interval_s": 600}}
    assert config(top).devices[0].logbook == LogbookConfig(True, 600.0)
    assert config(top, logbook={"interval_s": 0}).devices[0].logbook == LogbookConfig(True, 0.0)
    assert config(top, logbook={"enabled": False}).devices[0].logbook == LogbookConfig(False, 600.0)
    assert config(top, logbook=None).devices[0].logbook == LogbookConfig(True, 600.0)


@pytest.mark.parametrize(
    ("top", "device", "key", "text"),
    [
        ({"logbook": {"enabled": "yes"}}, {}, "logbook.enabled", "true or false"),
        ({"logbook": {"interval_s": -1}}, {}, "logbook.interval_s", "between 0 and 604800"),
        ({"logbook": {"interval_s": "1h"}}, {}, "logbook.interval_s", "a number"),
        ({"logbook": {"max": 1}}, {}, "logbook.max", "unknown key"),
        ({"logbook": True}, {}, "logbook", "JSON object"),
        ({}, {"logbook": {"enabled": 1}}, "devices[0].logbook.enabled", "true or false"),
    ],
)
def test_bad_logbook_values_are_refused_with_their_key(
    top: dict[str, Any], device: dict[str, Any], key: str, text: str
) -> None:
    with pytest.raises(ConfigProblems) as err:
        config(top, **device)
    found = [(p.key, p.message) for p in err.value.problems]
    assert any(k == key and text in message for k, message in found), found


def test_cmd_config_cannot_enable_the_logbook() -> None:
    with pytest.raises(ConfigError) as err:
        parse_remote_config(b'{"logbook": {"enabled": true}}')
    assert "unknown key" in err.value.message
