"""The gateway on real BlueZ: 4 BMS on 2 adapters for minutes, then a bluetoothd restart.

It runs as an unprivileged user in group `bluetooth` (the systemd unit's identity) against
the distribution's own D-Bus policy for org.bluez, with a private mosquitto inside the VM.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from bluez_jk.reader import Reader
from tests.fixtures.bluez import process_match_rules
from tests.realbluez.guest_boards import ADAPTERS, GATEWAY_BOARDS
from tests.realbluez.scenarios import (
    Outcome,
    Scenario,
    error_of,
    labelled,
    read_timeout,
    request,
)

SYSTEM_BUS = "unix:path=/run/dbus/system_bus_socket"
PORT = 18830
NOBODY = 65534


class Gateway:
    def __init__(self, rig: Any, interval_s: float) -> None:
        self.rig = rig
        self.work: Path = rig.work / "gateway"
        self.work.mkdir(exist_ok=True)
        self.work.chmod(0o777)
        (self.work / "state").mkdir(exist_ok=True)
        (self.work / "state").chmod(0o777)
        self.interval_s = interval_s
        self.proc: subprocess.Popen[bytes] | None = None
        self.broker: subprocess.Popen[bytes] | None = None
        self.meta: dict[str, dict[str, Any]] = {}
        self.online: dict[str, str] = {}
        self.raws: dict[str, list[dict[str, Any]]] = {}
        self.client: mqtt.Client | None = None

    def start(self) -> None:
        conf = self.work / "mosquitto.conf"
        conf.write_text(
            f"listener {PORT} 127.0.0.1\nallow_anonymous true\npersistence false\nuser root\n"
        )
        self.broker = subprocess.Popen(
            ["mosquitto", "-c", str(conf)],
            stdout=(self.work / "mosquitto.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        config = {
            "mqtt": {"host": "127.0.0.1", "port": PORT, "base_topic": "bms", "keepalive": 30},
            "poll_interval_s": self.interval_s,
            "timeout_s": 60,
            "scan_timeout_s": 10,
            "state_dir": str(self.work / "state"),
            "devices": [
                {"name": b.name, "address": b.address, "adapter": b.adapter}
                for b in self.rig.bms.values()
                if b.name in GATEWAY_BOARDS
            ],
        }
        path = self.work / "gateway.json"
        path.write_text(json.dumps(config))
        path.chmod(0o644)
        gid = grp.getgrnam("bluetooth").gr_gid
        env = dict(self.rig.env, HOME="/tmp")
        self.proc = subprocess.Popen(
            [
                "setpriv",
                f"--reuid={NOBODY}",
                f"--regid={gid}",
                f"--groups={gid}",
                "--inh-caps=-all",
                sys.executable,
                "-m",
                "bluez_jk.cli.gateway",
                "--config",
                str(path),
            ],
            env=env,
            stdout=(self.work / "gateway.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        self._subscribe()

    def _subscribe(self) -> None:
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="realbluez-probe")

        def on_message(_c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
            parts = msg.topic.split("/")
            if len(parts) != 4:
                return
            name, kind = parts[2], parts[3]
            if kind == "meta" and msg.payload:
                self.meta[name] = json.loads(msg.payload)
            elif kind == "online":
                self.online[name] = msg.payload.decode()
            elif kind == "raw":
                self.raws.setdefault(name, []).append(json.loads(msg.payload))

        client.on_message = on_message
        for _ in range(50):
            with contextlib.suppress(OSError):
                client.connect("127.0.0.1", PORT)
                break
            time.sleep(0.2)
        client.subscribe("bms/jk/+/+", qos=1)
        client.loop_start()
        self.client = client

    async def paused_resources(self, names: list[str]) -> tuple[int, int]:
        """fds and match rules with every device paused (cmd/pause): a read holds its rules
        and lock file only while it runs, and with 4 BMS on 2 adapters one nearly always
        runs. Resumed afterwards."""
        assert self.client is not None
        assert self.proc is not None
        for name in names:
            self.client.publish(f"bms/jk/{name}/cmd/pause", json.dumps({"minutes": 10}), qos=1)
        # The read in flight ends within its timeout (60 s); then only the rules kept for the
        # connection's life may be held (a namespace rule per BMS, two per adapter).
        fds, rules = 1 << 30, 1 << 30
        deadline = time.monotonic() + 75
        while time.monotonic() < deadline:
            fds, rules = await quiet_resources(self.proc.pid, 5)
            if rules <= kept_rules_bound(names):
                fds, _ = await quiet_resources(self.proc.pid, 5)
                break
        for name in names:
            self.client.publish(f"bms/jk/{name}/cmd/pause", json.dumps({"minutes": 0}), qos=1)
        return fds, rules

    def counters(self) -> dict[str, tuple[int, int]]:
        return {
            name: (m["counters"]["attempts"], m["counters"]["successes"])
            for name, m in self.meta.items()
        }

    def stop(self) -> int | None:
        code = None
        if self.proc is not None:
            self.proc.terminate()
            try:
                code = self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        if self.client is not None:
            self.client.loop_stop()
            self.client.disconnect()
        if self.broker is not None:
            self.broker.terminate()
            self.broker.wait(10)
        return code


def kept_rules_bound(names: list[str]) -> int:
    """The match rules a reader keeps for its bus connection's life: one per BMS read, two
    per adapter (bluez/bus.py MAX_KEPT_RULES caps them; these are far below)."""
    return len(names) + 2 * len(ADAPTERS)


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def quiet_resources(pid: int, window_s: float) -> tuple[int, int]:
    """Fewest fds and match rules seen over a window: reads come and go; leaks stay."""
    fds, rules = 1 << 30, 1 << 30
    deadline = time.monotonic() + window_s
    while time.monotonic() < deadline:
        fds = min(fds, fd_count(pid))
        rules = min(rules, await process_match_rules(SYSTEM_BUS, pid))
        await asyncio.sleep(0.3)
    return fds, rules


async def wait_until(predicate: Any, within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.5)
    return predicate()


async def gateway_run(rig: Any, duration_s: int) -> Outcome:
    # Polls every 12 s (three boards per adapter under TCG); left running for the bluetoothd
    # restart that follows.
    gw = Gateway(rig, interval_s=12)
    rig.gateway = gw
    t0 = time.monotonic()
    gw.start()
    assert gw.proc is not None
    names = list(GATEWAY_BOARDS)
    first = await wait_until(lambda: all(gw.counters().get(n, (0, 0))[1] >= 1 for n in names), 180)
    base_fds, base_rules = await gw.paused_resources(names)
    start = gw.counters()
    await asyncio.sleep(duration_s)
    end_fds, end_rules = await gw.paused_resources(names)
    end = gw.counters()
    attempts = {n: end[n][0] - start[n][0] for n in names if n in end and n in start}
    successes = {n: end[n][1] - start[n][1] for n in names if n in end and n in start}
    failed = {n: attempts[n] - successes[n] for n in attempts if attempts[n] != successes[n]}
    offline = [n for n in names if gw.online.get(n) != "true"]
    # jk11 wants pairing: the gateway pairs it once; every reading after that is bonded.
    unpaired = [r.get("error") for r in gw.raws.get("jk11", []) if r.get("paired") is not True]
    ok = (
        first
        and gw.proc.poll() is None
        and len(attempts) == len(names)
        and not failed
        and all(attempts.values())
        and not offline
        and end_rules <= base_rules
        and end_rules <= kept_rules_bound(names)
        and end_fds <= base_fds
        and bool(gw.raws.get("jk11"))
        and not unpaired
    )
    summary = (
        f"{sum(successes.values())}/{sum(attempts.values())} reads ok in {duration_s} s as uid"
        f" {NOBODY}:bluetooth, match rules {base_rules}->{end_rules}, fds {base_fds}->{end_fds}"
    )
    if failed:
        summary += f", failed {failed}"
    if offline:
        summary += f", offline {offline}"
    if not first:
        summary += ", some BMS never read"
    summary += f", jk11 (pairing) {len(gw.raws.get('jk11', []))} raws"
    if unpaired:
        summary += f", {len(unpaired)} not paired: {unpaired[:2]}"
    return Outcome(
        gateway_label(duration_s),
        bool(ok),
        summary,
        time.monotonic() - t0,
        {"attempts": attempts, "successes": successes, "online": gw.online},
    )


def gateway_label(duration_s: int) -> str:
    return (
        f"gateway {duration_s} s: 5 BMS (one wants pairing) on 2 adapters, unprivileged "
        "(group bluetooth)"
    )


def gateway_scenario(duration_s: int) -> Scenario:
    async def run(rig: Any) -> Outcome:
        return await gateway_run(rig, duration_s)

    return labelled(gateway_label(duration_s), run)


RESTART_LABEL = "bluetoothd restarted under the running gateway"


async def bluetoothd_restart(rig: Any) -> Outcome:
    gw: Gateway | None = getattr(rig, "gateway", None)
    if gw is None or gw.proc is None or gw.proc.poll() is not None:
        return Outcome(RESTART_LABEL, False, "no running gateway")
    t0 = time.monotonic()
    try:
        await rig.restart_bluez()
        before = gw.counters()
        # Every board, jk11 (pairing) too. After a bluetoothd 5.66 restart every Disconnect
        # goes unanswered (5 s each, the link stays up) and hci1's healthy boards are always
        # due; before AdapterGate let a waiter that was overtaken twice go next, jk11 (failed
        # once during the restart) waited for minutes behind them.
        names = list(GATEWAY_BOARDS)
        # Recovered: every BMS read successfully again after the restart, by itself.
        recovered = await wait_until(
            lambda: all(gw.counters()[n][1] > before[n][1] for n in names), 240
        )
        alive = gw.proc.poll() is None
        took = time.monotonic() - t0
    finally:
        code = gw.stop()
    log = (gw.work / "gateway.log").read_text(errors="replace")
    cycles = log.count("adapter wedged, power-cycling")
    # The restart also clears what a failed AcquireNotify wedged (jk6, stuck_acquire).
    try:
        by_hand = await rig.wait_adapters()
    except RuntimeError as err:
        return Outcome(RESTART_LABEL, False, f"{err}; gateway power cycles: {cycles}", took)
    async with Reader() as reader:
        wedged = await reader.read(request(rig.bms["jk6"], timeout_s=read_timeout(rig)))
    ok = recovered and alive and code == 0 and wedged.get("error") is None
    summary = (
        f"every BMS read again {took:.0f} s after the restart" if recovered else "no recovery"
    ) + (
        f", gateway exit {code}, power cycles {cycles}, "
        f"wedged jk6 after the restart: {error_of(wedged)}"
        + "".join(f"; {note}" for note in by_hand)
    )
    return Outcome(RESTART_LABEL, ok, summary, took)


labelled(RESTART_LABEL, bluetoothd_restart)
