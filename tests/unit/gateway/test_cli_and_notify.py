"""`jk-ble-mqtt-gateway --check-config`, the sd_notify protocol, and the watchdog that is fed
only while the scheduler makes progress."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from bluez_jk.cli.gateway import main
from bluez_jk.gateway.config import parse_config
from bluez_jk.gateway.notify import Notifier, watchdog_interval_s
from bluez_jk.gateway.service import Gateway
from tests.unit.gateway.fakes import FakeClock, FakeReader

REPO = Path(__file__).resolve().parents[3]


def test_check_config_ok(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["--check-config", "--config", str(REPO / "config/jk_ble_gateway.example.json")]) == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert summary["ok"] is True
    assert summary["devices"] == ["jk1"]


@pytest.mark.parametrize("level", ["debug", "Warning", "ERROR"])
def test_log_level_in_any_case(level: str, capsys: pytest.CaptureFixture[str]) -> None:
    example = str(REPO / "config/jk_ble_gateway.example.json")
    assert main(["--log-level", level, "--check-config", "--config", example]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True


def test_check_config_lists_every_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "gw.json"
    path.write_text(
        json.dumps(
            {
                "mqtt": {"port": 0},
                "devices": [{"name": "jk1", "address": "xx", "adapter": "hci0/../x"}],
            }
        )
    )
    assert main(["--check-config", "--config", str(path)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert "config error: mqtt.port: must be between 1 and 65535, got 0" in err
    assert any(line.startswith("config error: devices[0].address:") for line in err)
    assert any(line.startswith("config error: devices[0].adapter:") for line in err)


def test_check_config_accepts_a_systemd_credential_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's own check step: password_file under mqtt pointing at the unit's
    credential, which a shell cannot see. Accepted with a note; the gateway itself (and the
    unit's check, which runs with CREDENTIALS_DIRECTORY set) still needs the file."""
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    credential = "/run/credentials/jk-ble-mqtt-gateway.service/mqtt-password"
    path = tmp_path / "gw.json"
    path.write_text(
        json.dumps(
            {
                "mqtt": {"username": "gateway", "password_file": credential},
                "devices": [{"name": "jk1", "address": "C8:47:80:37:02:E8"}],
            }
        )
    )
    assert main(["--check-config", "--config", str(path)]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["notes"]
    assert "exists only inside the systemd unit" in captured.err
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", "/run/credentials/jk-ble-mqtt-gateway.service")
    assert main(["--check-config", "--config", str(path)]) == 2  # inside the unit: read it
    assert "a systemd credential" in capsys.readouterr().err


def test_wrapper_script_runs_the_cli(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / "tools/jk_ble_mqtt_gateway.py"), "--config", "/nonexistent"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 2
    assert "config error: config: cannot read /nonexistent" in done.stderr


def test_notifier_abstract_and_path_sockets(tmp_path: Path) -> None:
    for address in (str(tmp_path / "n.sock"), f"@bluez-jk-test-{os.getpid()}"):
        server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        server.bind("\0" + address[1:] if address.startswith("@") else address)
        server.settimeout(5)
        with server:
            notifier = Notifier(address)
            notifier.send("READY=1", "STATUS=x")
            assert server.recv(100) == b"READY=1\nSTATUS=x"
            notifier.close()
    # A receiver that never reads must not block the sender (the gateway's event loop).
    stuck = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    stuck.bind(str(tmp_path / "full.sock"))
    with stuck:
        notifier = Notifier(str(tmp_path / "full.sock"))
        for _ in range(1000):
            notifier.send("WATCHDOG=1")
        notifier.close()
    silent = Notifier("")
    assert not silent.enabled
    silent.send("READY=1")  # outside systemd: nothing happens


def test_watchdog_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    assert watchdog_interval_s() is None
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    assert watchdog_interval_s() == 15.0
    monkeypatch.setenv("WATCHDOG_PID", "1")  # meant for another process
    assert watchdog_interval_s() is None


async def test_watchdog_fed_only_while_the_scheduler_makes_progress(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "20000")  # a ping every 10 ms
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(tmp_path / "n.sock"))
    server.setblocking(False)
    clock = FakeClock()
    reader = FakeReader(clock, duration_s=1e9)  # a read that never ends: a stuck reader
    config = parse_config(
        {
            "state_dir": str(tmp_path / "state"),
            "devices": [{"name": "jk1", "address": "C8:47:80:37:02:E1"}],
        },
        base_dir=tmp_path,  # Path.cwd() would be a blocking call on the loop
    )
    notifier = Notifier(str(tmp_path / "n.sock"))
    # On a worker thread, as the CLI does: it reads its state file.
    gateway = await asyncio.to_thread(Gateway, config, reader, clock=clock, notifier=notifier)

    def drain() -> list[bytes]:
        got = []
        while True:
            try:
                got.append(server.recv(100))
            except BlockingIOError:
                return got

    scheduler = asyncio.create_task(gateway.scheduler.run())
    watchdog = asyncio.create_task(gateway._watchdog())
    try:
        await clock.advance(3, step=0.5)  # the read has started
        assert reader.active[None] == 1
        await asyncio.sleep(0.1)
        assert b"WATCHDOG=1" in drain()
        await clock.advance(gateway.config.timeout_s + 31, step=5)  # far beyond its timeout
        drain()
        await asyncio.sleep(0.1)
        assert drain() == []
    finally:
        watchdog.cancel()
        scheduler.cancel()
        await asyncio.gather(watchdog, scheduler, return_exceptions=True)
        server.close()
