"""Config validation: every refusal names the key path and the reason; hypothesis for payloads."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bluez_jk.errors import ConfigError
from bluez_jk.gateway.config import (
    MAX_REMOTE_PAYLOAD_BYTES,
    ConfigProblems,
    load_config,
    parse_config,
    parse_remote_config,
)

REPO = Path(__file__).resolve().parents[3]

GOOD: dict[str, Any] = {
    "mqtt": {
        "host": "127.0.0.1",
        "port": 1883,
        "base_topic": "bms",
        "keepalive": 30,
        "client_id": None,
        "username": None,
        "password": None,
        "tls": {"enabled": False, "ca_file": None, "cert_file": None, "key_file": None},
    },
    "poll_interval_s": 10,
    "timeout_s": 20,
    "scan_timeout_s": 5,
    "state_dir": "/var/lib/bluez-jk",
    "allow_remote_config": True,
    "homeassistant": {"enabled": False, "prefix": "homeassistant"},
    "devices": [
        {
            "name": "jk1",
            "address": "C8:47:80:37:02:E8",
            "adapter": "hci1",
            "protocol": None,
            "poll_interval_s": None,
        }
    ],
}


def with_change(path: list[str | int], value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(GOOD)
    target: Any = doc
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return doc


def problems(doc: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(doc)
    err = info.value
    assert isinstance(err, ConfigProblems)
    return [p.message for p in err.problems]


def test_design_example_is_valid_and_resolves_globals() -> None:
    config = parse_config(GOOD)
    (device,) = config.devices
    assert device.address == "C8:47:80:37:02:E8"
    assert device.adapter == "hci1"
    assert device.poll_interval_s == 10  # null per-device value = the global one
    assert device.timeout_s == 20
    assert config.mqtt.keepalive == 30
    assert config.state_dir == Path("/var/lib/bluez-jk")


def test_shipped_example_config_is_valid() -> None:
    config = load_config(REPO / "config" / "jk_ble_gateway.example.json")
    assert config.devices


def test_per_device_overrides() -> None:
    doc = with_change(
        ["devices", 0],
        {
            "name": "jk1",
            "address": "c8:47:80:37:02:e8",
            "poll_interval_s": 2,
            "timeout_s": 7,
            "scan_timeout_s": 1,
            "adapter": "",
            "protocol": "JK02_24S",
            "notify_mode": "start",
            "keep_connected": True,
        },
    )
    (device,) = parse_config(doc).devices
    assert device.address == "C8:47:80:37:02:E8"  # upper case inside the program
    assert (device.poll_interval_s, device.timeout_s, device.scan_timeout_s) == (2, 7, 1)
    assert device.adapter is None
    assert device.protocol == "JK02_24S"
    assert device.notify_mode == "start"
    assert device.keep_connected is True


@pytest.mark.parametrize(
    ("path", "value", "key", "reason"),
    [
        (["mqtt", "colour"], "red", "mqtt.colour", "unknown key"),
        (["extra"], 1, "extra", "unknown key"),
        (["mqtt", "port"], "1883", "mqtt.port", "must be an integer"),
        (["mqtt", "port"], 70000, "mqtt.port", "between 1 and 65535"),
        (["mqtt", "port"], 1883.5, "mqtt.port", "must be an integer"),
        (["mqtt", "keepalive"], 0, "mqtt.keepalive", "between"),
        (["mqtt", "base_topic"], "bms/#", "mqtt.base_topic", "not a topic prefix"),
        (["mqtt", "base_topic"], "", "mqtt.base_topic", "not a topic prefix"),
        (["mqtt", "tls", "enabled"], "yes", "mqtt.tls.enabled", "true or false"),
        (["poll_interval_s"], 0, "poll_interval_s", "between 0.5 and 86400"),
        (["poll_interval_s"], True, "poll_interval_s", "must be a number"),
        (["timeout_s"], None, "timeout_s", "must be a number"),
        (["allow_remote_config"], 1, "allow_remote_config", "true or false"),
        (["homeassistant", "prefix"], "a//b", "homeassistant.prefix", "not a topic prefix"),
        (["devices"], [], "devices", "non-empty array"),
        (["devices", 0, "address"], "C8:47:80:37:02", "devices[0].address", "not a MAC"),
        (["devices", 0, "address"], 42, "devices[0].address", "must be a string"),
        (["devices", 0, "adapter"], "hci0/../x", "devices[0].adapter", "not an adapter"),
        (["devices", 0, "adapter"], "usb0", "devices[0].adapter", "not an adapter"),
        (["devices", 0, "name"], "jk 1", "devices[0].name", "1 to 32 of"),
        (["devices", 0, "name"], "x" * 33, "devices[0].name", "1 to 32 of"),
        (["devices", 0, "protocol"], "JK03", "devices[0].protocol", "one of"),
        (["devices", 0, "notify_mode"], "poll", "devices[0].notify_mode", "one of"),
        (["devices", 0, "keep_connected"], "true", "devices[0].keep_connected", "true or false"),
        (["devices", 0, "timeout_s"], 1e9, "devices[0].timeout_s", "between"),
        (["devices", 0, "speed"], 3, "devices[0].speed", "unknown key"),
    ],
)
def test_each_problem_names_key_and_reason(
    path: list[str | int], value: Any, key: str, reason: str
) -> None:
    found = problems(with_change(path, value))
    assert any(p.startswith(f"{key}: ") and reason in p for p in found), found


def test_missing_name_and_duplicates() -> None:
    doc = copy.deepcopy(GOOD)
    doc["devices"] = [
        {"name": "jk1", "address": "C8:47:80:37:02:E8"},
        {"name": "jk1", "address": "C8:47:80:37:02:E9"},
        {"name": "jk3", "address": "c8:47:80:37:02:e8"},
        {"address": "C8:47:80:37:02:EA"},
    ]
    found = problems(doc)
    assert "devices[1].name: duplicate name 'jk1'" in found
    assert "devices[2].address: duplicate address C8:47:80:37:02:E8" in found
    assert "devices[3].name: is required" in found


def test_kept_connection_may_share_its_adapter() -> None:
    # The reader gives the adapter lock back while it only listens to the stream.
    doc = copy.deepcopy(GOOD)
    doc["devices"] = [
        {"name": "jk1", "address": "C8:47:80:37:02:E8", "adapter": "hci0"},
        {"name": "jk2", "address": "C8:47:80:37:02:E9", "adapter": "hci0", "keep_connected": True},
    ]
    assert [d.keep_connected for d in parse_config(doc).devices] == [False, True]


def test_all_problems_are_reported_at_once() -> None:
    doc = with_change(["mqtt", "port"], 0)
    doc["timeout_s"] = "x"
    assert len(problems(doc)) == 2


def test_password_file(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("s3cret\n")
    doc = with_change(["mqtt", "password_file"], "secret")
    doc["mqtt"]["password"] = None
    path = tmp_path / "gw.json"
    path.write_text(json.dumps(doc))
    assert load_config(path).mqtt.password == "s3cret"  # relative to the config's folder
    doc["mqtt"]["password"] = "inline"
    path.write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match=r"mqtt.password_file: give password or password_file"):
        load_config(path)
    doc["mqtt"]["password"] = None
    doc["mqtt"]["password_file"] = "missing"
    path.write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match=r"mqtt.password_file: cannot read"):
        load_config(path)


def test_tls_files_must_exist(tmp_path: Path) -> None:
    doc = with_change(["mqtt", "tls"], {"enabled": True, "ca_file": "nope.pem"})
    assert any(p.startswith("mqtt.tls.ca_file: no such file") for p in problems(doc))


def test_load_config_bad_json(tmp_path: Path) -> None:
    path = tmp_path / "gw.json"
    path.write_text("{")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config(path)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.json")


# -- cmd/config payloads -------------------------------------------------------------------


def test_remote_config_valid() -> None:
    assert parse_remote_config(b'{"poll_interval_s": 2.5, "adapter": null}') == {
        "poll_interval_s": 2.5,
        "adapter": None,
    }
    assert parse_remote_config(b'{"adapter": "", "address": "aa:bb:cc:dd:ee:ff"}') == {
        "adapter": None,
        "address": "AA:BB:CC:DD:EE:FF",
    }
    assert parse_remote_config(b"{}") == {}


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"not json", "payload: not valid JSON"),
        (b"[1, 2]", "payload: must be a JSON object, not an array"),
        (b'"x"', "payload: must be a JSON object, not a string"),
        (b'{"colour": 1}', "payload.colour: unknown key"),
        (b'{"name": "jk2"}', "payload.name: unknown key"),
        (b'{"poll_interval_s": "5"}', "poll_interval_s: must be a number"),
        (b'{"poll_interval_s": 0}', "poll_interval_s: must be between"),
        (b'{"timeout_s": 1e999}', "timeout_s: must be a finite number"),
        (b'{"address": "C8:47:80"}', "address: 'C8:47:80' is not a MAC"),
        (b'{"adapter": "hci0/../x"}', "adapter: 'hci0/../x' is not an adapter"),
        (b"\xff\xfe", "payload: not valid JSON"),
        (b"[" * 100000, "payload: payload of"),
        (b"{" + b" " * MAX_REMOTE_PAYLOAD_BYTES + b"}", "payload: payload of"),
    ],
)
def test_remote_config_invalid(payload: bytes, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_remote_config(payload)
    assert info.value.message.startswith(reason), info.value.message


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=15), children, max_size=4)
    ),
    max_leaves=12,
)
REMOTE_KEYS = st.sampled_from(
    ["address", "adapter", "poll_interval_s", "timeout_s", "scan_timeout_s", "x"]
)


@settings(max_examples=300)
@given(st.binary(max_size=200) | JSONISH.map(lambda v: json.dumps(v).encode()))
def test_remote_config_never_raises_anything_but_config_error(payload: bytes) -> None:
    error: ConfigError | None = None
    try:
        parse_remote_config(payload)
    except ConfigError as err:
        error = err
    assert error is None or error.message


@settings(max_examples=300)
@given(st.dictionaries(REMOTE_KEYS, JSONISH, max_size=4))
def test_remote_config_accepts_only_what_the_file_accepts(obj: dict[str, Any]) -> None:
    """A payload is accepted exactly when the same values are accepted in a device entry."""
    try:
        accepted = parse_remote_config(json.dumps(obj).encode())
    except ConfigError:
        accepted = None
    device = {"name": "jk1", "address": "C8:47:80:37:02:E8", **obj}
    try:
        in_file = parse_config({**GOOD, "devices": [device]}).devices[0]
    except ConfigError:
        in_file = None
    if accepted is None:
        # The file allows null for numbers (= global value); a payload must give a number.
        nulls = {k for k, v in obj.items() if v is None and k.endswith("_s")}
        assert in_file is None or nulls
    else:
        assert in_file is not None
        for key, value in accepted.items():
            assert getattr(in_file, key) == value


@settings(max_examples=200)
@given(JSONISH)
def test_config_parser_total(doc: Any) -> None:
    """Any JSON document is either a config or a ConfigError naming keys, never a crash."""
    error: ConfigError | None = None
    try:
        parse_config(doc)
    except ConfigError as err:
        error = err
    if error is not None:
        assert isinstance(error, ConfigProblems)
        assert error.problems
        assert all(problem.key for problem in error.problems)
