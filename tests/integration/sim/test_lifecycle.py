"""`jk-ble-sim --spawn-bus` starts and stops cleanly: nothing left behind."""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from dbus_fast import Message
from dbus_fast.aio import MessageBus

from bluez_jk.sim.devices import parse_device
from bluez_jk.sim.server import Simulator
from bluez_jk.sim.spawn import PrivateBus

pytestmark = pytest.mark.integration

RUNS = 50
CLI_RUNS = 10  # Python start-up costs ~0.3 s of CPU per run: the rest runs in-process


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie has exited; only its parent's wait is missing.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(") ")[1][0] != "Z"


def _start(tmp: Path, extra: list[str] | None = None) -> tuple[subprocess.Popen[bytes], str]:
    env = {**os.environ, "TMPDIR": str(tmp)}
    env.pop("DBUS_SYSTEM_BUS_ADDRESS", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "bluez_jk.sim", "--spawn-bus", "--timing", "fast", *(extra or [])],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 20)
    assert ready, "no output from jk-ble-sim"
    line = proc.stdout.readline().decode().strip()
    assert line.startswith("DBUS_SYSTEM_BUS_ADDRESS=unix:path="), line
    return proc, line.split("=", 2)[2]


def _one_run(tmp: Path, index: int) -> None:
    proc, socket_path = _start(tmp)
    try:
        assert Path(socket_path).exists()
        daemons = _children(proc.pid)
        assert daemons, "no dbus-daemon child"
        proc.send_signal(signal.SIGTERM if index % 2 else signal.SIGINT)
        assert proc.wait(15) == 0, proc.stderr.read() if proc.stderr else ""
        assert not Path(socket_path).exists()
        assert not Path(socket_path).parent.exists()
        deadline = time.monotonic() + 5
        while any(_alive(pid) for pid in daemons):
            assert time.monotonic() < deadline, "dbus-daemon outlived the simulator"
            time.sleep(0.01)  # waiting for another process to exit; bounded
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_cli_starts_and_stops_on_sigterm_and_sigint_leaving_nothing(tmp_path: Path) -> None:
    with ThreadPoolExecutor(max_workers=5) as pool:
        list(pool.map(lambda i: _one_run(tmp_path, i), range(CLI_RUNS)))
    assert list(tmp_path.iterdir()) == []


def test_fifty_starts_and_stops_leave_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CLI's own building blocks, 50 times: bus, simulator, a client, shutdown."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    spec = parse_device("C8:47:80:37:02:E8")

    async def serve_once(address: str) -> None:
        async with Simulator([spec], timing="fast", bus_address=address):
            bus = await MessageBus(bus_address=address).connect()
            reply = await bus.call(
                Message(
                    destination="org.bluez",
                    path="/",
                    interface="org.freedesktop.DBus.ObjectManager",
                    member="GetManagedObjects",
                )
            )
            assert reply is not None
            assert "/org/bluez/hci0/dev_C8_47_80_37_02_E8" in reply.body[0]
            bus.disconnect()

    for _ in range(RUNS):
        with PrivateBus() as bus:
            assert bus.proc is not None
            daemon = bus.proc.pid
            socket_path = Path(bus.address.removeprefix("unix:path="))
            asyncio.run(serve_once(bus.address))
        assert not socket_path.exists()
        assert not _alive(daemon)
    assert list(tmp_path.iterdir()) == []


def test_killed_simulator_takes_its_dbus_daemon_along(tmp_path: Path) -> None:
    proc, _socket_path = _start(tmp_path)
    daemons = _children(proc.pid)
    proc.kill()
    proc.wait(10)
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()
    deadline = time.monotonic() + 5
    while any(_alive(pid) for pid in daemons):
        assert time.monotonic() < deadline, "dbus-daemon survived a SIGKILLed simulator"
        time.sleep(0.01)  # bounded wait for the kernel's parent-death signal


def test_bad_arguments_exit_2_without_starting_anything(tmp_path: Path) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    for args in (["--device", "not-a-mac"], ["--fault", "no-such-fault"], ["--fault", "junk:0"]):
        result = subprocess.run(
            [sys.executable, "-m", "bluez_jk.sim", "--spawn-bus", *args],
            capture_output=True,
            env=env,
            timeout=30,
            check=False,
        )
        assert result.returncode == 2, args
        assert result.stdout == b""
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("gap_s", [0.0, 0.002, 0.005, 0.01, 0.02, 0.03])
def test_ctrl_c_then_sigterm_like_a_shell_trap_leaves_nothing(tmp_path: Path, gap_s: float) -> None:
    """A terminal's Ctrl-C reaches the whole process group (simulator and its dbus-daemon);
    a script's trap then sends SIGTERM. The cleanup must survive both (tools/demo.sh left
    /tmp/bluez-jk-sim-* behind in 3 of 5 stops: a SIGTERM landing after the event loop had
    closed killed the simulator before it removed its directory; such a death shows here as
    exit -15)."""
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    env.pop("DBUS_SYSTEM_BUS_ADDRESS", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "bluez_jk.sim", "--spawn-bus"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 20)
        assert ready, "no output from jk-ble-sim"
        assert proc.stdout.readline().startswith(b"DBUS_SYSTEM_BUS_ADDRESS=")
        os.killpg(proc.pid, signal.SIGINT)
        time.sleep(gap_s)  # the delay between the two signals is the point of the test
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        code = proc.wait(15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    assert code == 0, "killed by a signal in the middle of its clean-up"
    assert list(tmp_path.iterdir()) == []
