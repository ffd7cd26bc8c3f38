"""The broker is killed for 20 s and restarted empty (no persistence): the gateway keeps
reading, restores its retained topics, and delivers every Reading taken during the outage.

The gateway reaches the broker through a proxy that the test keeps closed until the new
probe has subscribed, so that "delivered afterwards" is observable and not a race between
the probe's and the gateway's reconnects."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.mqtt import Broker, MqttProbe
from tests.integration.gateway.conftest import GatewayFactory
from tests.integration.gateway.support import (
    MACS,
    GatedProxy,
    device_spec,
    gateway_config,
    retained_snapshot,
    sessions,
    wait_count,
    wait_online,
)

pytestmark = pytest.mark.integration

OUTAGE_S = 20.0
DEVICES: list[dict[str, Any]] = [
    {"name": "jk1", "address": MACS[0], "adapter": "hci0"},
    {"name": "jk2", "address": MACS[1], "adapter": "hci1"},
]
RETAINED = [
    "bms/gateway/online",
    "bms/jk/jk1/online",
    "bms/jk/jk2/online",
    "bms/jk/jk1/meta",
    "bms/jk/jk2/meta",
]


def test_broker_killed_20s_then_restarted(
    sim_factory: Any, mosquitto: Broker, gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    sim = sim_factory([device_spec(MACS[0], "hci0"), device_spec(MACS[1], "hci1")])
    proxy = GatedProxy(mosquitto.port)
    try:
        config = gateway_config(proxy.port, tmp_path / "state", DEVICES, poll_interval_s=1)
        with MqttProbe(mosquitto, ["bms/#"]) as before:
            gateway = gateway_factory(sim, config)
            wait_online(before, ["jk1", "jk2"], b"true", timeout_s=15)
            wait_count(before, "bms/jk/jk2/raw", 2)
            proxy.open.clear()
            killed = time.time()
            mosquitto.kill()
        deadline = time.monotonic() + OUTAGE_S
        while time.monotonic() < deadline:  # the outage itself lasts 20 s by definition
            assert gateway.alive(), gateway.log()[-2000:]
            time.sleep(0.2)
        mosquitto.start()
        restarted = time.time()
        with MqttProbe(mosquitto, ["bms/#"]) as after:
            proxy.open.set()
            wait_online(after, ["jk1", "jk2"], b"true", timeout_s=15)
            after.wait_for(lambda m: m.topic == "bms/gateway/online" and m.payload == b"true", 10)
            # Every read session the simulator saw during the outage has its Reading here.
            outage = [s for s in sessions(sim.log()) if s[2] > killed + 0.1 and s[3] < restarted]
            assert len(outage) >= 2 * (OUTAGE_S - 2)
            for _, address, start, end in outage:
                name = "jk1" if address == MACS[0] else "jk2"

                def taken(m: Any, start: float = start, end: float = end, name: str = name) -> bool:
                    if m.topic != f"bms/jk/{name}/raw":
                        return False
                    last = m.json()["status"]["last_update"]
                    return last is not None and start <= last <= end

                after.wait_for(taken, timeout_s=15)
            for name in ("jk1", "jk2"):
                raws = [m.json() for m in after.on_topic(f"bms/jk/{name}/raw")]
                assert all(r["error"] is None for r in raws)
        snapshot = retained_snapshot(mosquitto, RETAINED)
        assert snapshot["bms/gateway/online"] == b"true"
        for name in ("jk1", "jk2"):
            assert snapshot[f"bms/jk/{name}/online"] == b"true"
            meta = json.loads(snapshot[f"bms/jk/{name}/meta"])
            assert meta["counters"]["mqtt_dropped"] == 0
            assert meta["counters"]["attempts"] >= OUTAGE_S - 2
        assert gateway.alive()
    finally:
        proxy.close()
