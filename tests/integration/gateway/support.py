"""Helpers for the gateway integration tests: the real CLI in a subprocess, and a TCP proxy
that lets a test decide when the gateway may reach a restarted broker."""

from __future__ import annotations

import json
import selectors
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.fixtures.blocking import guarded_command
from tests.fixtures.bluez import SimHandle
from tests.fixtures.mqtt import Broker, Message, MqttProbe, free_port
from tests.fixtures.waits import deadline_s

MACS = ["C8:47:80:37:02:E8", "C8:47:80:37:02:E9", "C8:47:80:37:02:EA"]


def device_spec(mac: str, adapter: str, **extra: str) -> str:
    return ",".join([mac, f"adapter={adapter}", *(f"{k}={v}" for k, v in extra.items())])


@dataclass
class GatewayProcess:
    """`python -m bluez_jk.cli.gateway` with a config file written from `config`."""

    workdir: Path
    sim: SimHandle
    config: dict[str, Any]
    env_extra: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.workdir / "gateway.log"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self) -> GatewayProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        path = self.workdir / "gateway.json"
        path.write_text(json.dumps(self.config))
        env = {**self.sim.env, "BLUEZ_JK_LOCK_DIR": str(self.workdir), **self.env_extra}
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                guarded_command("bluez_jk.cli.gateway", "--config", str(path)),
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def terminate(self, timeout_s: float = 10.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout_s)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait(10)


def gateway_config(
    broker_port: int,
    state_dir: Path,
    devices: list[dict[str, Any]],
    *,
    keepalive: int = 3,
    poll_interval_s: float = 1.0,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "mqtt": {
            "host": "127.0.0.1",
            "port": broker_port,
            "base_topic": "bms",
            "keepalive": keepalive,
        },
        "poll_interval_s": poll_interval_s,
        "timeout_s": 5,
        "scan_timeout_s": 1,
        "state_dir": str(state_dir),
        "devices": devices,
        **extra,
    }


def payloads(probe: MqttProbe, topic: str, after: float | None = None) -> list[Message]:
    return [m for m in probe.on_topic(topic) if after is None or m.received >= after]


def wait_online(probe: MqttProbe, names: list[str], value: bytes, timeout_s: float = 15.0) -> float:
    """Wait until the last `online` message of every device is `value`; when it happened."""
    timeout_s = deadline_s(timeout_s)
    deadline = time.monotonic() + timeout_s
    while True:
        last = {n: probe.on_topic(f"bms/jk/{n}/online") for n in names}
        if all(msgs and msgs[-1].payload == value for msgs in last.values()):
            return max(msgs[-1].received for msgs in last.values())
        if time.monotonic() > deadline:
            state = {n: msgs[-1].payload if msgs else None for n, msgs in last.items()}
            raise AssertionError(f"online not {value!r} within {timeout_s} s: {state}")
        time.sleep(0.02)  # re-reading the probe's record; bounded by the deadline


def retained_snapshot(
    broker: Broker, topics: list[str], timeout_s: float = 5.0
) -> dict[str, bytes]:
    """What a client that connects now gets as retained messages for `topics`."""
    with MqttProbe(broker, topics) as fresh:
        deadline = time.monotonic() + deadline_s(timeout_s)
        while time.monotonic() < deadline:
            got = {m.topic: m.payload for m in fresh.messages if m.retain}
            if all(any(_match(t, g) for g in got) for t in topics):
                return got
            time.sleep(0.02)
        return {m.topic: m.payload for m in fresh.messages if m.retain}


def _match(pattern: str, topic: str) -> bool:
    p, t = pattern.split("/"), topic.split("/")
    for index, level in enumerate(p):
        if level == "#":
            return True
        if index >= len(t) or (level != "+" and level != t[index]):
            return False
    return len(p) == len(t)


class GatedProxy:
    """A loopback TCP proxy to the broker; while closed it refuses every new connection."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.open = threading.Event()
        self.open.set()
        self._stop = threading.Event()
        self._server = socket.create_server(("127.0.0.1", self.port))
        self._server.settimeout(0.05)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if not self.open.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=1)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._pairs.append((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        sel = selectors.DefaultSelector()
        sel.register(a, selectors.EVENT_READ, b)
        sel.register(b, selectors.EVENT_READ, a)
        try:
            while not self._stop.is_set():
                for key, _ in sel.select(0.1):
                    src: socket.socket = key.fileobj  # type: ignore[assignment]
                    data = src.recv(65536)
                    if not data:
                        return
                    key.data.sendall(data)
        except OSError:
            return
        finally:
            sel.close()
            a.close()
            b.close()

    def close(self) -> None:
        self._stop.set()
        self._server.close()
        self._thread.join(2)


def wait_count(probe: MqttProbe, topic: str, count: int, timeout_s: float = 15.0) -> list[Message]:
    timeout_s = deadline_s(timeout_s)
    deadline = time.monotonic() + timeout_s
    while True:
        found = probe.on_topic(topic)
        if len(found) >= count:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(found)} of {count} messages on {topic} in {timeout_s} s")
        time.sleep(0.02)  # re-reading the probe's record; bounded by the deadline


def sessions(log: list[dict[str, Any]]) -> list[tuple[str, str, float, float]]:
    """(adapter, address, start, end) of every link session in the simulator's log: from the
    Connect call to the disconnection (or the failed connect)."""
    open_at: dict[str, tuple[str, float]] = {}
    out: list[tuple[str, str, float, float]] = []
    for event in log:
        kind, address = event.get("event"), event.get("address")
        if not isinstance(address, str):
            continue
        if kind == "connect_call" and address not in open_at:
            open_at[address] = (str(event.get("adapter")), float(event["t"]))
        elif kind in ("disconnected", "connect_failed") and address in open_at:
            adapter, start = open_at.pop(address)
            out.append((adapter, address, start, float(event["t"])))
    for address, (adapter, start) in open_at.items():
        out.append((adapter, address, start, float("inf")))
    return out


def overlapping(found: list[tuple[str, str, float, float]]) -> list[tuple[Any, Any]]:
    bad = []
    for i, a in enumerate(found):
        for b in found[i + 1 :]:
            if a[0] == b[0] and a[1] != b[1] and a[2] < b[3] and b[2] < a[3]:
                bad.append((a, b))
    return bad
