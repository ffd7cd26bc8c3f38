"""What a newcomer meets at the command line (issue 14 items 8 and 9): --version on every tool,
argparse mistakes shown to the person and as JSON to the script, `-` as stdin, a settings frame
alone explained, messages that name the next step, wrappers run by the wrong interpreter."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from bluez_jk import __version__
from bluez_jk.cli import decode, gateway, read, scan, sim
from bluez_jk.hints import stage_timeout_message
from bluez_jk.sim.faults import FAULT_HELP, FAULT_NAMES
from tests.conftest import load_vector

ROOT = Path(__file__).resolve().parents[3]
SETTINGS = load_vector("jk02_32s_v19_27_settings.json")["hex"]
Main = Callable[[Sequence[str] | None], int]
TOOLS: dict[str, Main] = {
    "jk-ble-read": read.main,
    "jk-ble-scan": scan.main,
    "jk-ble-decode": decode.main,
    "jk-ble-sim": sim.main,  # type: ignore[dict-item]
    "jk-ble-mqtt-gateway": gateway.main,
}


@pytest.mark.parametrize("prog", sorted(TOOLS))
def test_every_tool_has_version(prog: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        TOOLS[prog](["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"{prog} {__version__}"


@pytest.mark.parametrize(("prog", "main"), [("jk-ble-read", read.main), ("jk-ble-scan", scan.main)])
def test_argument_typo_prints_usage_and_json(
    prog: str, main: Main, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--adress", "C8:47:80:37:02:E8"]) == 2
    captured = capsys.readouterr()
    assert json.loads(captured.out)["error"]["type"] == "ConfigError"  # stdout: JSON only
    assert captured.err.startswith(f"usage: {prog}")
    assert "unrecognized arguments: --adress" in captured.err


def test_sim_log_level_typo_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        sim.main(["--log-level", "verbose"])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'VERBOSE'" in err
    assert "DEBUG" in err


def test_read_log_level_typo_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert read.main(["--address", "C8:47:80:37:02:E8", "--log-level", "verbose"]) == 2
    assert "invalid choice" in json.loads(capsys.readouterr().out)["error"]["message"]


def test_sim_help_lists_faults_and_default_timing(capsys: pytest.CaptureFixture[str]) -> None:
    assert set(FAULT_HELP) == set(FAULT_NAMES)
    with pytest.raises(SystemExit):
        sim.main(["--help"])
    out = capsys.readouterr().out
    for name in FAULT_NAMES:
        assert f"  {name} " in out
    assert "default real" in out
    assert "cell info every 0.5 s" in out  # the real timing's figures


def test_decode_dash_is_stdin(capsys: pytest.CaptureFixture[str], data_dir: Path) -> None:
    info = load_vector("jk02_32s_v19_27_device_info.json")["hex"]
    sys.stdin = io.StringIO(info + "\n")
    try:
        code = decode.main(["-"])
    finally:
        sys.stdin = sys.__stdin__
    assert code == 0
    assert json.loads(capsys.readouterr().out)["got"]["device_info"] is True


def test_decode_lone_settings_frame_says_what_is_missing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    capture = tmp_path / "settings.hex"
    capture.write_text(SETTINGS + "\n")
    assert decode.main([str(capture)]) == 1
    errors = json.loads(capsys.readouterr().out)["errors"]
    assert len(errors) == 1
    assert "device-info or cell-info frame" in errors[0]["message"]
    assert "--protocol" in errors[0]["message"]
    assert decode.main(["--protocol", "JK02_32S", str(capture)]) == 0


def test_timeout_messages_name_the_likely_causes() -> None:
    connect = stage_timeout_message("connect", "within 20.0 s", "hci0")
    assert "out of range" in connect
    assert "powered off" in connect
    assert "phone app" in connect
    assert "--via-mqtt" in stage_timeout_message("lock", "within 2.0 s", "hci0")
    assert "jk-ble-scan" in stage_timeout_message("discover", "within 5.0 s", "hci0")


@pytest.mark.parametrize("script", ["jk_ble_read.py", "jk_ble_mqtt_gateway.py"])
def test_wrapper_without_the_venv_says_what_to_run(script: str) -> None:
    # -S: no site-packages, as with a system python3 that lacks dbus-fast and paho.
    done = subprocess.run(
        [sys.executable, "-S", str(ROOT / "tools" / script), "--address", "C8:47:80:37:02:E8"],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert "Traceback" not in done.stderr
    assert done.returncode == 2
    assert "is not installed" in done.stderr
    assert ".venv/bin/python" in done.stderr or "tools/setup.sh" in done.stderr
    assert json.loads(done.stdout)["error"]["type"] == "ConfigError"


def test_wrapper_under_old_python_says_which_is_needed() -> None:
    code = (
        "import sys; sys.version_info = (3, 9, 2, 'final', 0); "
        f"sys.path.insert(0, {str(ROOT)!r}); "
        "from tools.checkout import require; require('bluez_jk.cli.read', 'jk_ble_read.py')"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 2
    assert "needs Python >= 3.11, this is 3.9.2" in done.stderr
