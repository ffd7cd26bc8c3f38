"""The gateway process dying or being stopped: SIGKILL (every `online` false within
1.5 x keepalive through the per-device last wills) and SIGTERM (exit 0 within 5 s, online false,
no link left in the simulator). Also sd_notify READY/WATCHDOG on a real NOTIFY_SOCKET."""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.mqtt import Broker, MqttProbe
from tests.integration.gateway.conftest import GatewayFactory
from tests.integration.gateway.support import (
    MACS,
    device_spec,
    gateway_config,
    retained_snapshot,
    wait_count,
    wait_online,
)

pytestmark = pytest.mark.integration

NAMES = ["jk1", "jk2", "jk3"]
DEVICES: list[dict[str, Any]] = [
    {"name": "jk1", "address": MACS[0], "adapter": "hci0"},
    {"name": "jk2", "address": MACS[1], "adapter": "hci1"},
    {"name": "jk3", "address": MACS[2], "adapter": "hci0"},
]
KEEPALIVE_S = 3
# The broker's will reaching our probe on a loaded machine. Still far below what the bound
# rules out: paho's default 60 s keepalive (90 s to the will) or a TCP timeout.
DELIVERY_S = 3.0


def three_bms(sim_factory: Any, timing: str = "fast") -> Any:
    return sim_factory(
        [device_spec(MACS[0], "hci0"), device_spec(MACS[1], "hci1"), device_spec(MACS[2], "hci0")],
        timing=timing,
    )


def online_topics() -> list[str]:
    return [f"bms/jk/{n}/online" for n in NAMES] + ["bms/gateway/online"]


def test_sigkill_turns_every_online_false_within_1_5_keepalive(
    sim_factory: Any, mosquitto: Broker, gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    sim = three_bms(sim_factory)
    config = gateway_config(mosquitto.port, tmp_path / "state", DEVICES, keepalive=KEEPALIVE_S)
    with MqttProbe(mosquitto, online_topics()) as probe:
        gateway = gateway_factory(sim, config)
        wait_online(probe, NAMES, b"true", timeout_s=15)
        probe.wait_for(lambda m: m.topic == "bms/gateway/online" and m.payload == b"true")
        killed = time.monotonic()
        gateway.kill()
        offline = wait_online(probe, NAMES, b"false", timeout_s=1.5 * KEEPALIVE_S + 2)
        gone = probe.wait_for(
            lambda m: m.topic == "bms/gateway/online" and m.payload == b"false",
            timeout_s=1.5 * KEEPALIVE_S + 2,
            after=killed,
        )
        print(f"online false after {offline - killed:.2f} s (keepalive {KEEPALIVE_S} s)")
        assert offline - killed <= 1.5 * KEEPALIVE_S + DELIVERY_S, offline - killed
        assert gone.received - killed <= 1.5 * KEEPALIVE_S + DELIVERY_S
    # Retained, so a client that arrives later sees it too.
    snapshot = retained_snapshot(mosquitto, online_topics())
    assert all(snapshot[t] == b"false" for t in online_topics()), snapshot


def test_frozen_gateway_goes_offline_by_keepalive_alone(
    sim_factory: Any, mosquitto: Broker, gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    """SIGSTOP keeps the sockets open (as a hung host or a cut cable would): only the broker's
    keepalive check can fire the wills, and it must do so within 1.5 x keepalive. mosquitto
    checks keepalives coarsely (see gateway/mqtt.py), hence 10 s here."""
    keepalive = 10
    sim = three_bms(sim_factory)
    config = gateway_config(mosquitto.port, tmp_path / "state", DEVICES, keepalive=keepalive)
    with MqttProbe(mosquitto, online_topics()) as probe:
        gateway = gateway_factory(sim, config)
        wait_online(probe, NAMES, b"true", timeout_s=15)
        assert gateway.proc is not None
        frozen = time.monotonic()
        gateway.proc.send_signal(signal.SIGSTOP)
        try:
            offline = wait_online(probe, NAMES, b"false", timeout_s=1.5 * keepalive + 2)
        finally:
            gateway.proc.send_signal(signal.SIGKILL)
            gateway.proc.send_signal(signal.SIGCONT)
        print(f"frozen: online false after {offline - frozen:.2f} s (keepalive {keepalive} s)")
        assert offline - frozen <= 1.5 * keepalive + DELIVERY_S, offline - frozen


def test_sigterm_exits_0_within_5s_offline_and_links_released(
    sim_factory: Any, mosquitto: Broker, gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    # Slow notifications keep each read on the link for seconds: SIGTERM lands mid-read.
    sim = three_bms(sim_factory)
    sim.set_fault("slow")
    config = gateway_config(mosquitto.port, tmp_path / "state", DEVICES, poll_interval_s=0.5)
    config["timeout_s"] = 20
    with MqttProbe(mosquitto, online_topics()) as probe:
        gateway = gateway_factory(sim, config)
        sim.wait_log(lambda e: e["event"] == "connected" and e["adapter"] == "hci1", 15)
        sim.wait_log(lambda e: e["event"] == "connected" and e["adapter"] == "hci0", 15)
        assert any(sim.device_props(mac)["Connected"] for mac in MACS)
        asked = time.monotonic()
        code = gateway.terminate(timeout_s=10)
        took = time.monotonic() - asked
        assert code == 0
        assert took < 5.0, took
        wait_online(probe, NAMES, b"false", timeout_s=2)
    snapshot = retained_snapshot(mosquitto, online_topics())
    assert all(snapshot[t] == b"false" for t in online_topics()), snapshot
    for mac in MACS:
        props = sim.device_props(mac)
        assert not props["Connected"], props
        assert not props["Notifying"], props
        assert not props["NotifyAcquired"], props
        assert props["notify_sessions"] == [], props


def test_sd_notify_ready_and_watchdog(
    sim_factory: Any, mosquitto: Broker, gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    sim = three_bms(sim_factory)
    path = tmp_path / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(path))
    listener.settimeout(10)
    config = gateway_config(mosquitto.port, tmp_path / "state", DEVICES)
    with listener, MqttProbe(mosquitto, ["bms/jk/+/raw"]) as probe:
        gateway = gateway_factory(sim, config, NOTIFY_SOCKET=str(path), WATCHDOG_USEC="400000")
        seen: list[str] = []
        while seen.count("WATCHDOG=1") < 3:
            seen += listener.recv(4096).decode().split("\n")
        assert seen[0] == "READY=1"
        wait_count(probe, "bms/jk/jk1/raw", 1)
        assert gateway.terminate() == 0
        while "STOPPING=1" not in seen:
            seen += listener.recv(4096).decode().split("\n")
