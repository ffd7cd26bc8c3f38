"""jk-ble-read and jk-ble-write take a device's settings from --config the same way."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bluez_jk.cli import read, write
from bluez_jk.errors import ConfigError

DEVICE = {
    "name": "jk1",
    "address": "C8:47:80:37:02:E8",
    "adapter": "hci1",
    "notify_mode": "start",
    "pairing": "never",
    "passkey_file": "jk1.passkey",
}


def config(tmp_path: Path) -> Path:
    (tmp_path / "jk1.passkey").write_text("482913\n")
    path = tmp_path / "gw.json"
    path.write_text(json.dumps({"mqtt": {"host": "127.0.0.1"}, "devices": [DEVICE]}))
    return path


@pytest.mark.parametrize("tool", [read, write])
def test_both_tools_take_every_device_setting_from_the_config(tmp_path: Path, tool: object) -> None:
    argv = ["--config", str(config(tmp_path)), "--name", "jk1"]
    if tool is write:
        argv += ["--set", "charging=false"]
    args = tool.build_parser().parse_args(argv)  # type: ignore[attr-defined]
    request = tool.make_plan(args).request  # type: ignore[attr-defined]
    assert request.address == "C8:47:80:37:02:E8"
    assert request.adapter == "hci1"
    assert request.notify_mode == "start"
    assert request.pairing == "never"
    assert request.passkey is not None
    assert request.passkey.value == 482913


@pytest.mark.parametrize("tool", [read, write])
def test_the_command_line_wins_and_unknown_names_are_config_errors(
    tmp_path: Path, tool: object
) -> None:
    path = config(tmp_path)
    extra = ["--set", "charging=false"] if tool is write else []
    parser = tool.build_parser()  # type: ignore[attr-defined]
    args = parser.parse_args(["--config", str(path), "--name", "jk1", "--adapter", "hci0", *extra])
    assert tool.make_plan(args).request.adapter == "hci0"  # type: ignore[attr-defined]
    args = parser.parse_args(["--config", str(path), "--name", "jk9", *extra])
    with pytest.raises(ConfigError, match="no device named 'jk9'"):
        tool.make_plan(args)  # type: ignore[attr-defined]
