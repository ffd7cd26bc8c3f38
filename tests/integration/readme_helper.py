"""Stand-ins for what tests/integration/test_readme.py cannot run: `sudoedit` (the edit the
README's comment asks for) and `systemctl enable --now` (the unit's ExecStart= in the
background). Called from the README's commands with the environment that test sets."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CREDENTIAL = "/run/credentials/jk-ble-mqtt-gateway.service/mqtt-password"


def edit(path: Path) -> None:
    """First edit: the broker and a state folder ("broker, and name/address/adapter per BMS":
    the example's jk1 already is the simulator's BMS). Second: the password section's
    username + password_file under mqtt."""
    tmp = Path(os.environ["README_TMP"])
    config = json.loads(path.read_text())
    count_file = tmp / "edits"
    count = int(count_file.read_text()) if count_file.exists() else 0
    count_file.write_text(str(count + 1))
    if count == 0:
        config["mqtt"]["port"] = int(os.environ["README_BROKER_PORT"])
        config["state_dir"] = str(tmp / "state")
        config["poll_interval_s"] = 5
        config["timeout_s"] = 10
    else:
        config["mqtt"]["username"] = "gateway"
        config["mqtt"]["password_file"] = CREDENTIAL
    path.write_text(json.dumps(config, indent=2))


def restore_without_credential(path: Path) -> None:
    config = json.loads(path.read_text())
    config["mqtt"].pop("password_file", None)
    config["mqtt"]["username"] = None
    path.write_text(json.dumps(config, indent=2))


def start() -> None:
    """The unit's ExecStart=, paths as installed by the README, in the background."""
    tmp = Path(os.environ["README_TMP"])
    unit = (ROOT / "systemd" / "jk-ble-mqtt-gateway.service").read_text()
    line = next(x for x in unit.splitlines() if x.startswith("ExecStart="))
    argv = shlex.split(line.removeprefix("ExecStart="))
    argv = [
        a.replace("/opt/bluez-jk/venv", sys.prefix).replace(
            "/etc/bluez-jk", str(tmp / "etc" / "bluez-jk")
        )
        for a in argv
    ]
    with (tmp / "gateway.log").open("ab") as log:
        proc = subprocess.Popen(
            argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True
        )
    (tmp / "gateway.pid").write_text(str(proc.pid))
    # Started, as systemd's Type=notify would wait for: the gateway is online and has read.
    done = subprocess.run(
        ["mosquitto_sub", "-C", "1", "-W", "60", "-t", "bms/jk/jk1/metrics"],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        sys.exit(
            f"gateway did not publish metrics ({done.returncode}, {done.stderr!r}): "
            f"{(tmp / 'gateway.log').read_text()[-2000:]}"
        )


if __name__ == "__main__":
    if sys.argv[1] == "edit":
        edit(Path(sys.argv[2]))
    elif sys.argv[1] == "start":
        start()
