"""The README's commands, run in order as pasted, against the simulator and a private broker.

Every ```sh block of README.md is one bash script, run top to bottom in the README's order. The
only changes are the ones a machine without systemd, a real radio or root needs:

- paths: /opt/bluez-jk/venv is this checkout's virtual environment, /etc/bluez-jk a folder of
  the test (its `sudo` runs the command as the test user);
- `sudoedit` makes the edit the README's comment on that line asks for;
- `systemctl enable --now jk-ble-mqtt-gateway` runs the unit's ExecStart= line (from
  systemd/jk-ble-mqtt-gateway.service) in the background;
- mosquitto_pub/_sub/_rr reach the private broker through their per-user option files;
- a line that runs until Ctrl-C (`mosquitto_sub -v`) gets a few seconds, then SIGINT;
- lines that only systemd, apt or the system broker can run are skipped, each for a stated
  reason (SKIPPED below); a command that matches no rule runs, and must succeed.

A command whose output the README describes is checked against it (the status line, the
probe, cmd/config's result, the Paused answer, a decoded capture)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.bluez import SimHandle
from tests.fixtures.mqtt import Broker
from tests.integration.readme_helper import restore_without_credential

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
VENV = Path(sys.prefix)

# (pattern, reason): lines that cannot run here. Each reason names what covers it instead.
SKIPPED: list[tuple[str, str]] = [
    (r"^bash tools/demo\.sh", "tests/integration/test_demo.py runs the demo and its Ctrl-C"),
    (r"^bash tools/test\.sh", "this is the test suite itself"),
    (r"apt-get ", "system packages: tools/setup.sh installed the test's"),
    (r"-m venv /opt/bluez-jk/venv|/venv/bin/pip install", "the checkout's .venv is the install"),
    (r"systemctl (daemon-reload|edit|restart|status)|/etc/systemd/", "no systemd here"),
    (r"^journalctl ", "no systemd journal here; the gateway's log is its stderr"),
    (r"mosquitto_passwd|/etc/mosquitto|systemctl restart mosquitto", "the system broker"),
    (r"^bluetoothctl ", "BlueZ's own shell; the Readings' `paired` field is tested instead"),
    (r"influxdata|/etc/telegraf|systemctl restart telegraf",
     "Telegraf is not installed here: tests/integration/integrations runs its config"),
]  # fmt: skip

# Lines that run until Ctrl-C: given a few seconds, then stopped as a user would.
UNTIL_STOPPED = [r"^mosquitto_sub -v "]
STOP_AFTER_S = 4


@dataclass
class Block:
    heading: str
    lines: list[str]  # commands, continuation lines joined


def readme_blocks() -> list[Block]:
    blocks: list[Block] = []
    heading = ""
    lines: list[str] | None = None
    for raw in README.read_text().splitlines():
        if raw.startswith("#") and lines is None:
            heading = raw.lstrip("#").strip()
        elif raw.strip() == "```sh" and lines is None:
            lines = []
        elif raw.strip() == "```" and lines is not None:
            blocks.append(Block(heading, _join_continuations(lines)))
            lines = None
        elif lines is not None:
            lines.append(raw)
    return blocks


def _join_continuations(lines: list[str]) -> list[str]:
    out: list[str] = []
    pending = ""
    for line in lines:
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        out.append(pending + line)
        pending = ""
    return [line for line in out if line.strip() and not line.lstrip().startswith("#")]


def strip_comment(line: str) -> str:
    """The command without its trailing `# ...` (a `#` inside quotes, as in 'bms/#', stays)."""
    quote = ""
    for index, char in enumerate(line):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (index == 0 or line[index - 1].isspace()):
            return line[:index].rstrip()
    return line


def skip_reason(line: str) -> str | None:
    for pattern, reason in SKIPPED:
        if re.search(pattern, line):
            return reason
    return None


def substitute(line: str, etc: Path) -> str:
    line = line.replace("/opt/bluez-jk/venv", str(VENV))
    return line.replace("/etc/bluez-jk", str(etc))


PREAMBLE = r"""
set -euo pipefail
sudo() { "$@"; }
sudoedit() { "$PY" "$HELPER" edit "$1"; }
systemctl() {
  if [ "$*" = "enable --now jk-ble-mqtt-gateway" ]; then "$PY" "$HELPER" start; else
    echo "unexpected systemctl $*" >&2; return 1; fi
}
"""


class Session:
    """The state the README builds up: config folder, private broker, simulator, gateway."""

    def __init__(self, tmp: Path, sim: SimHandle, broker: Broker) -> None:
        self.tmp = tmp
        self.etc = tmp / "etc" / "bluez-jk"
        self.work = tmp / "work"
        self.work.mkdir()
        for name in ("config", "systemd", "tools"):  # the README runs "in your clone"
            (self.work / name).symlink_to(ROOT / name)
        xdg = tmp / "xdg"
        xdg.mkdir()
        for client in ("mosquitto_pub", "mosquitto_sub", "mosquitto_rr"):
            (xdg / client).write_text(f"-h 127.0.0.1\n-p {broker.port}\n")  # one per line
        self.env = {
            **sim.env,
            "PATH": f"{VENV / 'bin'}:{os.environ['PATH']}",
            "XDG_CONFIG_HOME": str(xdg),
            "BLUEZ_JK_LOCK_DIR": str(tmp / "locks"),
            "PY": sys.executable,
            "HELPER": str(Path(__file__).with_name("readme_helper.py")),
            "README_TMP": str(tmp),
            "README_BROKER_PORT": str(broker.port),
            "PYTHONPATH": str(ROOT),
        }
        (tmp / "locks").mkdir()

    def run(self, block: Block) -> list[tuple[str, str, str]]:
        """Runs one block as one bash script (its exports and background jobs reach its later
        lines, as in a terminal); (command, stdout, stderr) of each command, in order."""
        parts = [PREAMBLE]
        for index, line in enumerate(block.lines):
            reason = skip_reason(line)
            command = f": skipped {shlex.quote(reason)}" if reason else substitute(line, self.etc)
            if any(re.search(pattern, line) for pattern in UNTIL_STOPPED):
                command = (
                    f"timeout -s INT {STOP_AFTER_S} {strip_comment(command)} || [ $? -eq 124 ]"
                )
            parts.append(f"printf '\\n@@%d@@\\n' {index}; printf '\\n@@%d@@\\n' {index} >&2")
            parts.append(command)
        done = subprocess.run(
            ["bash", "-c", "\n".join(parts)],
            cwd=self.work,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        outs, errs = _split(done.stdout), _split(done.stderr)
        if done.returncode != 0:
            failed = block.lines[max(outs, default=0)]
            raise AssertionError(
                f"README command failed ({done.returncode}) in {block.heading!r}: {failed}\n"
                f"stdout: {done.stdout[-3000:]}\nstderr: {done.stderr[-3000:]}"
            )
        return [(line, outs.get(i, ""), errs.get(i, "")) for i, line in enumerate(block.lines)]


def _split(text: str) -> dict[int, str]:
    found: dict[int, str] = {}
    current: int | None = None
    for line in text.splitlines(keepends=True):
        marker = re.fullmatch(r"@@(\d+)@@\n?", line)
        if marker:
            current = int(marker.group(1))
            found[current] = ""
        elif current is not None:
            found[current] += line
    return found


@pytest.fixture
def session(tmp_path: Path, sim_factory: Any, mosquitto: Broker) -> Any:
    sim = sim_factory(["C8:47:80:37:02:E8,adapter=hci0,protocol=JK02_32S,cells=16"])
    session = Session(tmp_path, sim, mosquitto)
    try:
        yield session
    finally:
        pid_file = tmp_path / "gateway.pid"
        if pid_file.exists():
            pid = int(pid_file.read_text())
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)


def test_install_and_usage_commands_run_in_order(session: Session) -> None:
    blocks = readme_blocks()
    headings = [b.heading for b in blocks]
    assert any("Install" in h for h in headings), headings
    install = next(b for b in blocks if "Install" in b.heading)
    apt = next(line for line in install.lines if "apt-get install" in line)
    # The next section uses mosquitto_pub/_sub/_rr: the apt line must bring them.
    assert "mosquitto-clients" in apt

    outputs: dict[str, tuple[str, str]] = {}
    for block in blocks:
        for command, out, err in session.run(block):
            outputs[command] = (out, err)
        if any("password_file" in line for line in block.lines):
            # The unit's credential exists only under systemd (root can read it while the
            # service runs); the test goes on with the password-less config of its broker.
            restore_without_credential(session.etc / "jk_ble_gateway.json")

    def output(fragment: str) -> tuple[str, str]:
        matches = [v for k, v in outputs.items() if fragment in k]
        assert matches, f"no README command contains {fragment!r}"
        return matches[-1]

    out, err = output("--check-config --probe")
    assert json.loads(out)["probe"] == {"ok": True, "error": None}
    out, err = output("jk-ble-mqtt-gateway --check-config --config")
    assert json.loads(out)["ok"] is True
    assert "exists only inside the systemd unit" in err  # the credential path, accepted
    out, _ = output("cmd/config -e")
    assert json.loads(out)["ok"] is True
    answers = [json.loads(v[0]) for k, v in outputs.items() if "cmd/read -e" in k]
    assert answers[0]["error"] is None  # read now
    assert answers[1]["error"]["type"] == "Paused"  # during the pause: at once, with until when
    out, _ = output("--via-mqtt")
    assert json.loads(out)["error"] is None
    out, _ = output("cmd/logbook/result -m ''")
    assert "entries" in json.loads(out)  # refused or not, the answer carries the entries kept
    out, _ = output("--logbook --pretty")
    assert json.loads(out)["logbook"]["status"] == "ok"
    out, _ = output("jk-ble-decode jk1.hex")
    assert json.loads(out)["got"]["cell_info"] is True
    out, _ = output("--adapter hci1 --pretty")
    assert json.loads(out)["error"] is None  # the simulator section's own BMS on hci1
