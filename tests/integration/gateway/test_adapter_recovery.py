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


def power_offs(sim: Any, adapter: str) -> list[dict[str, Any]]:
    return [e for e in power_events(sim) if e["adapter"] == adapter and not e["powered"]]


def raw_after(probe: MqttProbe, name: str, after: float) -> list[dict[str, Any]]:
    return [m.json() for m in probe.on_topic(f"bms/jk/{name}/raw") if m.received >= after]


AFTER_FAILURES = 3


def test_a_wedged_adapter_is_power_cycled_once_and_its_devices_recover(
    sim_factory: Any, mosquitto: Broker, gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    sim = sim_on_two_adapters(sim_factory)
    config = gateway_config(
        mosquitto.port,
        tmp_path / "state",
        devices_on_two_adapters(),
        adapter_recovery={"after_failures": AFTER_FAILURES, "min_interval_s": 600},
    )
    with MqttProbe(mosquitto, ["bms/jk/#"]) as probe:
        gateway = gateway_factory(sim, config)
        wait_online(probe, ["jk1", "jk2", "jk3"], b"true")
        sim.set_fault("adapter-wedged", address=MACS[0])  # jk1's adapter: hci0, with jk3
        wedged = time.monotonic()
        sim.wait_log(lambda e: e["event"] == "adapter_powered" and e["powered"], timeout_s=60)
        cycled = time.monotonic()
        for name in ("jk1", "jk3"):
            probe.wait_for(
                lambda m, n=name: m.topic == f"bms/jk/{n}/raw" and m.json()["error"] is None,
                timeout_s=30,
                after=cycled,
            )
        wait_online(probe, ["jk1", "jk2", "jk3"], b"true")
        recovered = time.monotonic()
        # Within N failed reads per device (one more for the device that reached N first
        # while its neighbour caught up) and one power cycle.
        failures = {}
        for name in ("jk1", "jk3"):
            failed = [r for r in raw_after(probe, name, wedged) if r["error"] is not None]
            failures[name] = len(failed)
            assert AFTER_FAILURES <= len(failed) <= AFTER_FAILURES + 1, (name, failed)
            assert {r["error"]["type"] for r in failed} <= {"ConnectFailed", "Timeout"}
        assert len(power_offs(sim, "hci0")) == 1
        assert power_offs(sim, "hci1") == []
        # No read of hci0 ran during the cycle: no Connect between off and on.
        log = sim.log()
        off = next(e["t"] for e in log if e["event"] == "adapter_powered" and not e["powered"])
        on = next(e["t"] for e in log if e["event"] == "adapter_powered" and e["powered"])
        assert not [
            e
            for e in log
            if e["event"] == "connect_call" and e["adapter"] == "hci0" and off <= e["t"] <= on
        ]
        probe.wait_for(
            lambda m: (
                m.topic == "bms/jk/jk1/meta" and m.json()["counters"]["adapter_power_cycles"] == 1
            ),
            timeout_s=15,
            after=cycled,
        )
        jk2_meta = probe.on_topic("bms/jk/jk2/meta")[-1].json()
        assert jk2_meta["counters"]["adapter_power_cycles"] == 0
        # The neighbour adapter never noticed.
        assert all(r["error"] is None for r in raw_after(probe, "jk2", wedged))
        assert sim.faults_armed() == []  # the cycle cured the wedge
        print(f"wedged -> recovered in {recovered - wedged:.1f} s, failed reads {failures}")
    text = gateway.log()
    assert "adapter wedged, power-cycling adapter=hci0" in text
    assert "adapter power-cycled adapter=hci0 cycles=1" in text
