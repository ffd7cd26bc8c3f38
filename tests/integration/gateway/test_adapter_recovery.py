"""Self-healing adapters (docs/config.md "adapter_recovery") with the real gateway process, the
simulator and mosquitto: a vanished adapter is picked up again when it returns, a wedged one
is power-cycled once and its devices recover, a healthy one with random faults never is."""

from __future__ import annotations

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


def devices_on_two_adapters() -> list[dict[str, Any]]:
    return [
        {"name": "jk1", "address": MACS[0], "adapter": "hci0", "timeout_s": 2},
        {"name": "jk2", "address": MACS[1], "adapter": "hci1", "timeout_s": 2},
        {"name": "jk3", "address": MACS[2], "adapter": "hci0", "timeout_s": 2},
    ]


def sim_on_two_adapters(sim_factory: Any) -> Any:
    return sim_factory(
        [device_spec(MACS[0], "hci0"), device_spec(MACS[1], "hci1"), device_spec(MACS[2], "hci0")]
    )


def power_events(sim: Any) -> list[dict[str, Any]]:
    return [e for e in sim.log() if e["event"] == "adapter_powered"]


def test_a_vanished_adapter_is_picked_up_when_it_returns(
    sim_factory: Any, mosquitto: Broker, gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    sim = sim_on_two_adapters(sim_factory)
    config = gateway_config(
        mosquitto.port,
        tmp_path / "state",
        devices_on_two_adapters(),
        adapter_recovery={"after_failures": 2, "min_interval_s": 10},
    )
    with MqttProbe(mosquitto, ["bms/jk/#"]) as probe:
        gateway = gateway_factory(sim, config)
        wait_online(probe, ["jk1", "jk2", "jk3"], b"true")
        sim.set_adapter_present("hci0", False)  # the USB dongle is pulled
        gone = time.monotonic()
        for name in ("jk1", "jk3"):
            failure = probe.wait_for(
                lambda m, n=name: m.topic == f"bms/jk/{n}/raw" and m.json()["error"] is not None,
                timeout_s=15,
                after=gone,
            )
            error = failure.json()["error"]
            assert error["type"] == "AdapterNotFound", error
            assert "hci0" in error["message"]
        wait_online(probe, ["jk1", "jk3"], b"false")
        # Several failed reads each, more than after_failures: still no power cycle, since
        # there is nothing to cycle; the other adapter reads on.
        for name in ("jk1", "jk3"):
            wait_count(
                probe,
                f"bms/jk/{name}/raw",
                len([m for m in probe.on_topic(f"bms/jk/{name}/raw") if m.received < gone]) + 4,
                timeout_s=40,
            )
        assert all(m.json()["error"] is None for m in probe.on_topic("bms/jk/jk2/raw"))
        sim.set_adapter_present("hci0", True)  # plugged in again
        back = time.monotonic()
        for name in ("jk1", "jk3"):
            probe.wait_for(
                lambda m, n=name: m.topic == f"bms/jk/{n}/raw" and m.json()["error"] is None,
                timeout_s=30,
                after=back,
            )
        wait_online(probe, ["jk1", "jk2", "jk3"], b"true")
        meta = probe.on_topic("bms/jk/jk1/meta")[-1].json()
        assert meta["counters"]["adapter_power_cycles"] == 0
        assert power_events(sim) == []
        assert gateway.alive()
    assert "power-cycling" not in gateway.log()
