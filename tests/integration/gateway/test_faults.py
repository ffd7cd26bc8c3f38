"""A BMS with a persistent fault: error Readings and online false, the others keep their
schedule, and it comes back by itself when the fault clears."""

from __future__ import annotations

import itertools
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


def gaps(probe: MqttProbe, name: str, after: float) -> list[float]:
    times = [m.received for m in probe.on_topic(f"bms/jk/{name}/raw") if m.received >= after]
    return [b - a for a, b in itertools.pairwise(times)]


def test_persistent_fault_then_recovery(
    sim_factory: Any, mosquitto: Broker, gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    sim = sim_factory(
        [device_spec(MACS[0], "hci0"), device_spec(MACS[1], "hci1"), device_spec(MACS[2], "hci0")]
    )
    devices = [
        {"name": "jk1", "address": MACS[0], "adapter": "hci0", "timeout_s": 2},
        {"name": "jk2", "address": MACS[1], "adapter": "hci1"},
        {"name": "jk3", "address": MACS[2], "adapter": "hci0"},
    ]
    config = gateway_config(mosquitto.port, tmp_path / "state", devices, poll_interval_s=1)
    with MqttProbe(mosquitto, ["bms/jk/#"]) as probe:
        gateway = gateway_factory(sim, config)
        wait_online(probe, ["jk1", "jk2", "jk3"], b"true", timeout_s=15)
        sim.set_fault("connect-abort", address=MACS[0])  # no count: persistent
        faulted = time.monotonic()
        failure = probe.wait_for(
            lambda m: m.topic == "bms/jk/jk1/raw" and m.json()["error"] is not None,
            timeout_s=15,
            after=faulted,
        )
        assert failure.json()["error"]["type"] == "ConnectFailed"
        wait_online(probe, ["jk1"], b"false", timeout_s=5)
        # Several failed attempts (with backoff) while the neighbours keep their 1 s schedule.
        wait_count(probe, "bms/jk/jk2/raw", len(probe.on_topic("bms/jk/jk2/raw")) + 5, 20)
        errors = [
            m.json()["error"]
            for m in probe.on_topic("bms/jk/jk1/raw")
            if m.received >= faulted and m.json()["error"]
        ]
        assert len(errors) >= 2
        assert not probe.on_topic("bms/jk/jk1/metrics") or all(
            m.received < failure.received for m in probe.on_topic("bms/jk/jk1/metrics")
        )
        assert max(gaps(probe, "jk2", faulted)) < 1.5  # other adapter: untouched
        # Same adapter: at most one failing read (timeout_s = 2) in the way.
        assert max(gaps(probe, "jk3", faulted)) < 1.2 + 2 + 0.6
        assert all(m.json()["error"] is None for m in probe.on_topic("bms/jk/jk3/raw"))

        sim.clear_faults(address=MACS[0])
        cleared = time.monotonic()
        # Backoff is capped at 8 x the interval: back within that plus one read.
        probe.wait_for(
            lambda m: m.topic == "bms/jk/jk1/raw" and m.json()["error"] is None,
            timeout_s=12,
            after=cleared,
        )
        wait_online(probe, ["jk1"], b"true", timeout_s=5)
        probe.wait_topic("bms/jk/jk1/metrics", timeout_s=5, after=cleared)
        assert gateway.alive()
