"""A bank of three emulated packs with Victron output, end to end: simulator -> gateway ->
mosquitto. One pack has discharging switched off: the bank's DCL leaves it out and names it.
Then a pack goes silent: after the grace it is stale, left out of both limits and named."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.mqtt import Broker, Message, MqttProbe
from tests.integration.gateway.conftest import GatewayFactory
from tests.integration.gateway.support import (
    MACS,
    device_spec,
    gateway_config,
    retained_snapshot,
)

pytestmark = pytest.mark.integration

DEVICES: list[dict[str, Any]] = [
    {"name": "jk1", "address": MACS[0], "adapter": "hci0"},
    {"name": "jk2", "address": MACS[1], "adapter": "hci1"},
    {"name": "jk3", "address": MACS[2], "adapter": "hci0"},
]
# (SOC %, capacity Ah) per pack: the bank's SOC is (30*100 + 60*200 + 90*300) / 600 = 70.
PACKS = [(30, 100.0), (60, 200.0), (90, 300.0)]
GRACE_S = 8  # jk2 is offline (5 s read timeout) before it is stale; margin under load


def payload(message: Message) -> Any:
    return json.loads(message.payload)


def wait_bank(
    probe: MqttProbe, match: Any, timeout_s: float, after: float | None = None
) -> Message:
    """The first bank `raw` (received at or after `after`) that matches; on failure the last
    one seen, not every topic."""
    try:
        return probe.wait_for(
            lambda m: m.topic == "bms/jk/bank1/raw" and match(payload(m)), timeout_s, after
        )
    except AssertionError:
        seen = probe.on_topic("bms/jk/bank1/raw")
        last = payload(seen[-1]) if seen else None
        raise AssertionError(f"no matching bank raw within {timeout_s} s; last: {last}") from None


def test_bank_of_three_with_one_pack_not_discharging(
    sim_factory: Any, mosquitto: Broker, gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    sim = sim_factory([device_spec(MACS[0], "hci0"), device_spec(MACS[1], "hci1"),
                       device_spec(MACS[2], "hci0")])  # fmt: skip
    for mac, (soc, capacity) in zip(MACS, PACKS, strict=True):
        # Steady packs: no table derates them, so every pack may take 100 A each way.
        sim.set_state(
            mac,
            voltages=[3.3] * 16,
            battery_soc=soc,
            capacity_nominal=capacity,
            capacity_remain=capacity * soc / 100,
            current=-2.0,
            temperature_sensor_1=25.0,
            temperature_sensor_2=25.0,
        )
    sim.set_state(MACS[2], discharging_switch_enabled=0)
    config = gateway_config(
        mosquitto.port,
        tmp_path / "state",
        DEVICES,
        poll_interval_s=1,
        homeassistant={"enabled": True},
        victron={
            "enabled": True,
            "ramp_a_per_s": 10000,
            "stale_grace_s": GRACE_S,
            "temperature_probes": [1, 2],  # the simulator fits two; 3..5 read 0.0
        },
        banks=[{"name": "bank1", "members": ["jk1", "jk2", "jk3"], "victron": {"enabled": True}}],
    )
    with MqttProbe(mosquitto, ["bms/#", "homeassistant/#"]) as probe:
        gateway = gateway_factory(sim, config)

        def settled(status: Any) -> bool:
            return all(status["online"].values()) and status["limits"]["dcl"] == 200.0

        settled_at = wait_bank(probe, settled, timeout_s=30)
        raw = payload(settled_at)
        assert raw["excluded_from_discharge"] == {"jk3": "discharging off"}
        assert raw["excluded_from_charge"] == {}
        assert raw["stale"] == []
        assert raw["limits"]["ccl"] == 287.5  # jk3 at 90 % charges at 0.875 x 100 A

        after = settled_at.received
        metrics = payload(probe.wait_topic("bms/jk/bank1/metrics", after=after))
        assert metrics["soc"] == 70.0
        assert metrics["capacity_nominal"] == 600.0
        assert metrics["current"] == pytest.approx(-6.0)
        assert metrics["total_voltage"] == 52.8
        assert (metrics["dcl"], metrics["members_discharging"]) == (200.0, 2)

        victron = payload(probe.wait_topic("bms/jk/bank1/victron", after=after))
        assert victron["Info"]["MaxDischargeCurrent"] == 200.0
        assert victron["Info"]["DischargeLimitation"] == "without jk3"
        assert victron["Io"]["AllowToDischarge"] == 1
        assert victron["System"]["NrOfModulesBlockingDischarge"] == 1
        assert victron["System"]["NrOfModulesOnline"] == 3
        assert victron["Soc"] == 70.0

        pack = payload(probe.wait_topic("bms/jk/jk3/victron", after=after))
        assert pack["Io"]["AllowToDischarge"] == 0
        assert pack["Info"]["MaxDischargeCurrent"] == 0.0
        assert pack["Dc"]["Voltage"] == 52.8
        assert pack["Voltages"]["Cell16"] == 3.3

        snapshot = retained_snapshot(
            mosquitto,
            [
                "bms/jk/bank1/online",
                "homeassistant/sensor/+/bank1_discharge_current_limit/config",
            ],
        )
        assert snapshot["bms/jk/bank1/online"] == b"true"
        (discovery,) = [v for k, v in snapshot.items() if k.startswith("homeassistant/")]
        assert json.loads(discovery)["state_topic"] == "bms/jk/bank1/metrics"

        # jk2 stops answering: its reads time out, and after the grace it is stale.
        faulted = time.monotonic()
        sim.set_fault("silent", address=MACS[1])

        # Offline once its read has timed out (5 s), stale after the grace (8 s).
        stale_at = wait_bank(
            probe,
            lambda status: status["stale"] == ["jk2"] and not status["online"]["jk2"],
            timeout_s=40,
            after=faulted,
        )
        raw = payload(stale_at)
        assert raw["excluded_from_charge"] == {"jk2": "stale"}
        assert raw["excluded_from_discharge"] == {"jk2": "stale", "jk3": "discharging off"}
        assert raw["limits"]["dcl"] == 100.0
        after = stale_at.received
        victron = payload(probe.wait_topic("bms/jk/bank1/victron", after=after, timeout_s=20))
        assert victron["Info"]["MaxDischargeCurrent"] == 100.0
        assert victron["System"]["NrOfModulesOffline"] == 1
        jk2 = payload(
            probe.wait_for(
                lambda m: m.topic == "bms/jk/jk2/victron" and m.received >= after, timeout_s=20
            )
        )
        assert jk2["Io"] == {"AllowToCharge": 0, "AllowToDischarge": 0, "AllowToBalance": 0}
        assert jk2["Dc"]["Voltage"] is None
        assert jk2["Alarms"]["BmsCable"] == 2
        assert retained_snapshot(mosquitto, ["bms/jk/bank1/online"]) == {
            "bms/jk/bank1/online": b"false"
        }
        assert gateway.terminate() == 0
        assert retained_snapshot(mosquitto, ["bms/jk/bank1/online"]) == {
            "bms/jk/bank1/online": b"false"
        }
