"""`jk-ble-read` and `jk-ble-scan` as processes: exactly one JSON object on stdout in every
case, exit codes 0/1/2, never a traceback; capture, config, the adapter lock across processes,
SIGTERM cleanup and --via-mqtt."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from bluez_jk.adapter_lock import AdapterLock, lock_path
from tests.fixtures.bluez import SimHandle
from tests.fixtures.mqtt import Broker, MqttProbe
from tests.integration.reader.conftest import ADDRESS, assert_device_released

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
READ = [sys.executable, str(ROOT / "tools" / "jk_ble_read.py")]
SCAN = [sys.executable, "-m", "bluez_jk.cli.scan"]
DECODE = [sys.executable, "-m", "bluez_jk.cli.decode"]


def run(argv: list[str], env: dict[str, str], timeout_s: float = 20) -> tuple[int, Any, str]:
    done = subprocess.run(
        argv, check=False, env=env, capture_output=True, text=True, timeout=timeout_s
    )
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stdout.strip().splitlines()
    payload = json.loads(done.stdout)  # exactly one JSON document, nothing else
    assert isinstance(payload, dict)
    assert done.stdout.count("\n") == len(lines)
    return done.returncode, payload, done.stderr


def test_clean_read_with_capture_that_decodes_back(sim: SimHandle, tmp_path: Path) -> None:
    capture = tmp_path / "chunks.hex"
    rc, reading, _ = run(
        [*READ, "--address", ADDRESS.lower(), "--timeout", "5", "--capture", str(capture)],
        sim.env,
    )
    assert rc == 0
    assert reading["error"] is None
    assert reading["address"] == ADDRESS
    assert reading["got"] == {"device_info": True, "cell_info": True, "settings": True}
    assert_device_released(sim)
    rc, decoded, _ = run([*DECODE, str(capture)], sim.env)
    assert rc == 0
    assert decoded["got"] == reading["got"]
    assert decoded["status"]["device_info"] == reading["status"]["device_info"]


def test_pretty_output_is_still_one_object(sim: SimHandle) -> None:
    done = subprocess.run(  # noqa: PLW1510 - the exit code is asserted
        [*READ, "--address", ADDRESS, "--timeout", "5", "--pretty"],
        env=sim.env,
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert done.returncode == 0
    assert done.stdout.count("\n") > 10
    assert json.loads(done.stdout)["error"] is None


@pytest.mark.parametrize(
    "args",
    [
        ["--address", "C8:47:80:37:02"],
        ["--address", "not-a-mac"],
        ["--address", ADDRESS, "--adapter", "bt0"],
        ["--address", ADDRESS, "--timeout", "soon"],
        ["--address", ADDRESS, "--timeout", "-1"],
        ["--address", ADDRESS, "--no-such-option"],
        ["--address", ADDRESS, "--protocol", "JK99"],
        [],
        ["--config", "/nonexistent.json"],
        ["--config", "/nonexistent.json", "--name", "jk1"],
        ["--via-mqtt", "--name", "jk1"],
    ],
)
def test_usage_and_config_errors_exit_2(sim: SimHandle, args: list[str]) -> None:
    rc, payload, _ = run([*READ, *args], sim.env)
    assert rc == 2
    assert payload["error"]["type"] == "ConfigError"
    assert payload["error"]["stage"] == "config"


def test_unknown_adapter(sim: SimHandle) -> None:
    rc, reading, _ = run([*READ, "--address", ADDRESS, "--adapter", "hci7"], sim.env)
    assert rc == 1
    assert reading["error"]["type"] == "AdapterNotFound"


def test_unreachable_bus(sim: SimHandle) -> None:
    env = {**sim.env, "DBUS_SYSTEM_BUS_ADDRESS": "unix:path=/nonexistent/bus"}
    rc, reading, _ = run([*READ, "--address", ADDRESS, "--timeout", "3"], env)
    assert rc == 1
    assert reading["error"]["type"] == "BusError"


def test_two_processes_on_one_adapter(sim: SimHandle) -> None:
    argv = [*READ, "--address", ADDRESS, "--timeout", "6"]
    procs = [
        subprocess.Popen(argv, env=sim.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=30)
        assert b"Traceback" not in err
        results.append((proc.returncode, json.loads(out)))
    for rc, reading in results:
        assert rc == 0 or reading["error"]["type"] == "Busy", reading["error"]
    assert any(rc == 0 for rc, _ in results)
    assert_device_released(sim)
    # Never two sessions at once: connections in the log alternate connect / disconnect.
    kinds = [e["event"] for e in sim.log() if e["event"] in ("connected", "disconnected")]
    assert len(kinds) >= 2
    assert kinds == ["connected", "disconnected"] * (len(kinds) // 2), kinds


async def test_held_lock_gives_busy(sim: SimHandle) -> None:
    async with AdapterLock("hci0", timeout_s=1):
        done = subprocess.run(  # noqa: PLW1510 - the exit code is asserted
            [*READ, "--address", ADDRESS, "--timeout", "1"],
            env=sim.env,
            capture_output=True,
            timeout=20,
        )
    assert done.returncode == 1
    error = json.loads(done.stdout)["error"]
    assert error["type"] == "Busy"
    # Who holds the lock (this test process) and what to do instead.
    assert f"pid {os.getpid()}" in error["message"]
    assert "--via-mqtt" in error["message"]
    assert sim.device_props(ADDRESS)["Connected"] is False


async def _wait_for_open_file(pid: int, path: Path, timeout_s: float = 15.0) -> None:
    """Until process `pid` has `path` open (the reader opens the lock file, then polls it)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            fds = Path(f"/proc/{pid}/fd")
            if any(os.readlink(fds / fd) == str(path) for fd in os.listdir(fds)):
                return
        await asyncio.sleep(0.02)  # polling /proc; bounded by the deadline
    raise AssertionError(f"process {pid} never opened {path}")


async def test_ctrl_c_exits_130_with_the_real_stage(sim: SimHandle) -> None:
    """Interrupted while waiting for the adapter lock: exit 130, type Interrupted, stage lock
    (not a Timeout at "collect"), the adapter known, one JSON object."""
    async with AdapterLock("hci0", timeout_s=1):
        proc = subprocess.Popen(
            [*READ, "--address", ADDRESS, "--adapter", "hci0", "--timeout", "30"],
            env=sim.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            await _wait_for_open_file(proc.pid, lock_path("hci0"))
            proc.send_signal(signal.SIGINT)
            out, err = await asyncio.to_thread(proc.communicate, timeout=15)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert b"Traceback" not in err, err
    assert proc.returncode == 130
    reading = json.loads(out)
    assert reading["error"]["type"] == "Interrupted"
    assert reading["error"]["stage"] == "lock"
    assert reading["adapter"] == "hci0"


def test_sigterm_cleans_up_and_still_prints_json(sim: SimHandle) -> None:
    sim.set_fault("silent")
    proc = subprocess.Popen(
        [*READ, "--address", ADDRESS, "--timeout", "30"],
        env=sim.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        sim.wait_log(lambda e: e["event"] == "notify_start", 10)
        # The BMS is silent: once the first command has reached it the reader waits for the
        # rest of its 30 s, in "collect" once the write's reply is in, in "write" until then
        # (on a busy machine that can be seconds after the simulator logged the write).
        sim.wait_log(lambda e: e["event"] == "write", 10)
        time.sleep(1)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert b"Traceback" not in err
    assert proc.returncode == 143  # 128 + SIGTERM
    error = json.loads(out)["error"]
    assert error["type"] == "Interrupted"
    assert error["stage"] in ("write", "collect"), error
    assert_device_released(sim)


def _config(tmp_path: Path, port: int) -> Path:
    path = tmp_path / "gateway.json"
    path.write_text(
        json.dumps(
            {
                "mqtt": {"host": "127.0.0.1", "port": port, "base_topic": "test"},
                "state_dir": str(tmp_path / "state"),
                "timeout_s": 5,
                "devices": [{"name": "jk1", "address": ADDRESS, "adapter": "hci0"}],
            }
        )
    )
    return path


def test_config_and_name(sim: SimHandle, tmp_path: Path) -> None:
    config = _config(tmp_path, 1)
    rc, reading, _ = run([*READ, "--config", str(config), "--name", "jk1"], sim.env)
    assert rc == 0, reading
    assert reading["name"] == "jk1"
    assert reading["adapter"] == "hci0"
    rc, reading, _ = run([*READ, "--config", str(config), "--name", "nope"], sim.env)
    assert rc == 2
    assert reading["error"]["type"] == "ConfigError"


def test_via_mqtt_asks_the_gateway(mosquitto: Broker, tmp_path: Path) -> None:
    """A stand-in gateway answers cmd/read with a raw Reading; no BLE is touched."""
    config = _config(tmp_path, mosquitto.port)
    answer = {"name": "jk1", "address": ADDRESS, "error": None, "got": {"cell_info": True}}
    with MqttProbe(mosquitto, topics=["test/jk/jk1/cmd/read"]) as gateway:
        gateway.publish("test/gateway/online", "true", retain=True)
        stop = threading.Event()

        def respond() -> None:
            gateway.wait_topic("test/jk/jk1/cmd/read", timeout_s=15)
            if not stop.is_set():
                gateway.publish("test/jk/jk1/raw", json.dumps(answer))

        responder = threading.Thread(target=respond, daemon=True)
        responder.start()
        env = {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": "unix:path=/nonexistent/bus"}
        try:
            rc, reading, _ = run(
                [*READ, "--config", str(config), "--name", "jk1", "--via-mqtt"], env
            )
        finally:
            stop.set()
            responder.join(20)
    assert rc == 0
    assert reading == answer


def test_scan_lists_the_bms(sim: SimHandle) -> None:
    rc, result, _ = run([*SCAN, "--duration", "0.5"], sim.env)
    assert rc == 0, result
    assert result["error"] is None
    assert result["adapter"] == "hci0"
    entries = [d for d in result["devices"] if d["address"] == ADDRESS]
    assert entries, result
    assert entries[0]["looks_like_jk"] is True
    assert isinstance(entries[0]["rssi"], int)


def test_scan_unknown_adapter_and_bad_option(sim: SimHandle) -> None:
    rc, result, _ = run([*SCAN, "--adapter", "hci7", "--duration", "0.2"], sim.env)
    assert rc == 1
    assert result["error"]["type"] == "AdapterNotFound"
    rc, result, _ = run([*SCAN, "--duration", "x"], sim.env)
    assert rc == 2
    assert result["error"]["type"] == "ConfigError"


def test_scan_interrupted_still_prints_one_json_object(sim: SimHandle) -> None:
    proc = subprocess.Popen(
        [*SCAN, "--duration", "60"], env=sim.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        sim.wait_log(lambda e: e["event"] == "discovery_start", 15)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert b"Traceback" not in err, err
    assert proc.returncode == 130
    result = json.loads(out)
    assert result["error"]["type"] == "Interrupted"
    assert result["devices"] == []
    # Discovery was stopped on the way out.
    sim.wait_log(lambda e: e["event"] == "discovery_stop", 10)


def test_known_bms_that_stopped_advertising_says_why(sim: SimHandle) -> None:
    """Cached by BlueZ but silent: the connect runs into the deadline. The message names the
    likely causes instead of only "connect did not complete"."""
    sim.set_fault("not-advertising")
    rc, reading, _ = run([*READ, "--address", ADDRESS, "--timeout", "3"], sim.env)
    assert rc == 1
    error = reading["error"]
    assert error["type"] == "ConnectFailed"
    for hint in ("out of range", "powered off", "phone app"):
        assert hint in error["message"], error


def test_unknown_bms_says_what_to_check(sim_factory: Any) -> None:
    sim = sim_factory(faults=["not-advertising"])
    rc, reading, _ = run(
        [*READ, "--address", ADDRESS, "--timeout", "5", "--scan-timeout", "1"], sim.env
    )
    assert rc == 1
    assert reading["error"]["type"] == "DeviceNotFound"
    assert "jk-ble-scan --jk-only" in reading["error"]["message"]
