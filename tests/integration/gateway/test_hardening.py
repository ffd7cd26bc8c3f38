"""Issue 18 (hardening from a hostile probe): the defects that need the real gateway process,
the simulator and a broker. Each test failed on the code before its fix."""

from __future__ import annotations

import signal
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
    wait_count,
    wait_online,
)

pytestmark = pytest.mark.integration


def test_a_silent_kept_bms_is_not_published_as_fresh(
    sim_factory: Any, mosquitto: Broker, gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    """Item 1: the simulator frozen (SIGSTOP: no frames, no disconnect) must not yield
    Readings with `error: null`; after max(3 x interval, timeout_s) an error Reading,
    `online` false, and once it answers again a new session and fresh data."""
    sim = sim_factory([device_spec(MACS[0], "hci0")])
    devices = [{"name": "jk1", "address": MACS[0], "adapter": "hci0", "keep_connected": True}]
    config = gateway_config(mosquitto.port, tmp_path / "state", devices, poll_interval_s=0.5)
    with MqttProbe(mosquitto, ["bms/jk/#"]) as probe:
        gateway = gateway_factory(sim, config)
        wait_count(probe, "bms/jk/jk1/raw", 4, timeout_s=20)
        wait_online(probe, ["jk1"], b"true")
        assert sim.proc is not None
        sim.proc.send_signal(signal.SIGSTOP)
        stopped = time.monotonic()
        try:
            error = probe.wait_for(
                lambda m: m.topic == "bms/jk/jk1/raw" and m.json()["error"] is not None,
                timeout_s=20,
                after=stopped,
            )
            # timeout_s 5 > 3 x 0.5 s: the bound is 5 s, then the session's bounded cleanup
            # (its D-Bus calls to the frozen simulator time out) before the error Reading.
            assert error.received - stopped < 5 + 12
            assert error.json()["error"]["type"] == "Timeout"
            wait_online(probe, ["jk1"], b"false", timeout_s=5)
            time.sleep(3)  # frozen a while longer: still nothing that looks fresh
            fresh = [
                m
                for m in probe.on_topic("bms/jk/jk1/raw")
                if m.received > stopped + 1.0 and m.json()["error"] is None
            ]
            assert fresh == [], [m.json()["status"]["last_update"] for m in fresh]
        finally:
            sim.proc.send_signal(signal.SIGCONT)
        resumed = time.monotonic()
        probe.wait_for(
            lambda m: m.topic == "bms/jk/jk1/raw" and m.json()["error"] is None,
            timeout_s=40,
            after=resumed,
        )
        wait_online(probe, ["jk1"], b"true", timeout_s=10)
        assert gateway.terminate() == 0
    assert "Traceback" not in gateway.log()
