"""`bash tools/demo.sh`, the README's first command, as a user runs it: both emulated BMS
publish; it stays out of a real installation's way (own lock directory, own client ids, base
topic `demo`); each BMS has its own serial; Ctrl-C leaves nothing behind."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import selectors
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

import pytest

from tests.fixtures.mqtt import Broker, MqttProbe

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION_LOCKS = Path("/run/lock")


class Demo:
    """tools/demo.sh in its own session, so that a Ctrl-C can be sent to its process group."""

    def __init__(self, tmp: Path, env_extra: dict[str, str]) -> None:
        self.tmp = tmp
        env = {**os.environ, "TMPDIR": str(tmp), **env_extra}
        for name in ("DBUS_SYSTEM_BUS_ADDRESS", "BLUEZ_JK_LOCK_DIR"):
            env.pop(name, None)
        self.proc = subprocess.Popen(
            ["bash", str(ROOT / "tools" / "demo.sh")],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=(tmp / "demo.err").open("wb"),
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.lines: list[str] = []

    def wait_for(self, done: Callable[[dict[str, str]], bool], timeout_s: float) -> dict[str, str]:
        """Reads "topic payload" lines until `done(latest payload per topic)` holds."""
        stdout: IO[bytes] | None = self.proc.stdout
        assert stdout is not None
        latest: dict[str, str] = {}
        sel = selectors.DefaultSelector()
        sel.register(stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout_s
        try:
            while not done(latest):
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise AssertionError(
                        f"demo: condition not met within {timeout_s} s; topics "
                        f"{sorted(latest)}; stderr: {self.stderr()[-2000:]}"
                    )
                if sel.select(left):
                    line = stdout.readline().decode(errors="replace").rstrip("\n")
                    topic, _, payload = line.partition(" ")
                    latest[topic] = payload
        finally:
            sel.close()
        return latest

    def stderr(self) -> str:
        return (self.tmp / "demo.err").read_text(errors="replace")

    def ctrl_c(self) -> int:
        """What a terminal does on Ctrl-C: SIGINT to every process of the foreground group."""
        os.killpg(self.proc.pid, signal.SIGINT)
        code = self.proc.wait(60)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return code

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)


def _leftovers(tmp: Path) -> list[str]:
    return sorted(p.name for p in tmp.iterdir() if p.name != "demo.err")


def _serial(latest: dict[str, str], name: str) -> str | None:
    meta = latest.get(f"demo/jk/{name}/meta")
    return json.loads(meta).get("serial") if meta else None


def _both_published(latest: dict[str, str]) -> bool:
    names = ("jk1", "jk2")
    return all(f"demo/jk/{n}/metrics" in latest and _serial(latest, n) for n in names)


class _LockHolder:
    """Holds the production adapter locks (/run/lock) like a running gateway in mid-read."""

    def __init__(self) -> None:
        self._fds: list[int] = []
        for adapter in ("hci0", "hci1"):
            path = PRODUCTION_LOCKS / f"bluez-jk-{adapter}.lock"
            fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)  # someone else holds it: that proves the same point
                continue
            self._fds.append(fd)

    def release(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds = []


def test_demo_publishes_isolated_and_cleans_up(tmp_path: Path, mosquitto: Broker) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    # A "real" gateway on the same broker: the production default client id, the production
    # adapter locks held, and consumers reading bms/#.
    production_id = f"bluez-jk-{socket.gethostname()[:40]}-gateway"
    holder = _LockHolder() if os.access(PRODUCTION_LOCKS, os.W_OK) else None
    with MqttProbe(mosquitto, ["bms/#"], client_id=production_id) as real:
        disconnected = threading.Event()
        real.client.on_disconnect = lambda *_: disconnected.set()
        env = {"BLUEZ_JK_MQTT_HOST": "127.0.0.1", "BLUEZ_JK_MQTT_PORT": str(mosquitto.port)}
        demo = Demo(tmp, env)
        try:
            latest = demo.wait_for(_both_published, timeout_s=180)
            assert _serial(latest, "jk1") != _serial(latest, "jk2")  # two batteries, two serials
            assert not disconnected.is_set(), "the demo kicked the production client id off"
            assert real.messages == [], "the demo published on the production topics"
        finally:
            if holder is not None:
                holder.release()
            code = demo.ctrl_c() if demo.proc.poll() is None else demo.proc.returncode
            if demo.proc.poll() is None:
                demo.kill()
    assert code == 130, demo.stderr()[-2000:]
    assert "Traceback" not in demo.stderr()
    assert _leftovers(tmp) == []
