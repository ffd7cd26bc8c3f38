"""Home Assistant discovery from the gateway (retained configs, availability, clearing a
removed device after a restart) and keep_connected devices (one link, stream every interval)."""

from __future__ import annotations

import itertools
import json
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
    sessions,
    wait_count,
    wait_online,
)

pytestmark = pytest.mark.integration

DEVICES: list[dict[str, Any]] = [
    {"name": "jk1", "address": MACS[0], "adapter": "hci0"},
    {"name": "jk2", "address": MACS[1], "adapter": "hci1"},
]


def configs(probe: MqttProbe, name: str) -> dict[str, bytes]:
    """Latest retained-config payload per discovery topic that mentions device `name`."""
    latest: dict[str, bytes] = {}
    for m in probe.messages:
        if m.topic.startswith("homeassistant/") and f"/{name}_" in m.topic:
            latest[m.topic] = m.payload
    return latest


def test_home_assistant_discovery_and_clearing(
    sim_factory: Any, mosquitto: Broker, gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    sim = sim_factory([device_spec(MACS[0], "hci0"), device_spec(MACS[1], "hci1")])
    ha = {"homeassistant": {"enabled": True, "prefix": "homeassistant"}}
    config = gateway_config(mosquitto.port, tmp_path / "state", DEVICES, **ha)
    with MqttProbe(mosquitto, ["homeassistant/#", "bms/#"]) as probe:
        gateway = gateway_factory(sim, config)
        wait_online(probe, ["jk1", "jk2"], b"true", timeout_s=15)
        # The last entity of each device's set is its last-error sensor.
        for name in ("jk1", "jk2"):
            probe.wait_for(lambda m, n=name: m.topic.endswith(f"/{n}_last_error/config"), 10)
        probe.wait_for(lambda m: m.topic.endswith("/gateway_online/config"), timeout_s=10)
        for name in ("jk1", "jk2"):
            found = configs(probe, name)
            assert len(found) > 40, sorted(found)
            for topic, payload in found.items():
                body = json.loads(payload)
                availability = {a["topic"] for a in body["availability"]}
                assert availability == {f"bms/jk/{name}/online", "bms/gateway/online"}, topic
                assert body["availability_mode"] == "all"
                assert body["state_topic"].startswith(f"bms/jk/{name}/")
        jk2_topics = set(configs(probe, "jk2"))
        assert gateway.terminate() == 0

        # jk2 leaves the config: its entities are deleted (empty retained payloads).
        restarted = time.monotonic()
        gateway_factory(sim, {**config, "devices": DEVICES[:1]}, name="gw2")
        for topic in sorted(jk2_topics):
            probe.wait_for(
                lambda m, t=topic: m.topic == t and m.payload == b"", timeout_s=10, after=restarted
            )
    with MqttProbe(mosquitto, ["homeassistant/#"]) as fresh:
        kept = fresh.wait_for(lambda m: m.topic.endswith("/jk1_last_error/config"), 10)
        assert kept.retain
        assert not configs(fresh, "jk2")


def test_keep_connected_streams_on_one_link(
    sim_factory: Any, mosquitto: Broker, gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    # jk2 is polled on the same adapter: the kept link holds the adapter lock only while it
    # (re)connects, not while it listens.
    sim = sim_factory([device_spec(MACS[0], "hci0"), device_spec(MACS[1], "hci0")])
    devices = [
        {"name": "jk1", "address": MACS[0], "adapter": "hci0", "keep_connected": True},
        {"name": "jk2", "address": MACS[1], "adapter": "hci0", "poll_interval_s": 1},
    ]
    config = gateway_config(mosquitto.port, tmp_path / "state", devices, poll_interval_s=0.5)
    with MqttProbe(mosquitto, ["bms/jk/#"]) as probe:
        gateway = gateway_factory(sim, config)
        raws = wait_count(probe, "bms/jk/jk1/raw", 8, timeout_s=15)
        assert all(m.json()["error"] is None for m in raws)
        gaps = [b.received - a.received for a, b in itertools.pairwise(raws)]
        assert max(gaps) < 1.0, gaps
        assert len(probe.on_topic("bms/jk/jk1/metrics")) >= 7
        polled = wait_count(probe, "bms/jk/jk2/raw", 3, timeout_s=10)
        assert all(m.json()["error"] is None for m in polled)
        jk1_sessions = [s for s in sessions(sim.log()) if s[1] == MACS[0]]
        assert len(jk1_sessions) == 1  # stayed connected the whole time
        assert sim.device_props(MACS[0])["Connected"]
        # The link drops: the gateway reconnects by itself and the stream goes on.
        sim.drop_link(MACS[0])
        dropped = time.monotonic()
        probe.wait_for(
            lambda m: m.topic == "bms/jk/jk1/raw" and m.json()["error"] is None,
            timeout_s=10,
            after=dropped + 0.1,
        )
        sim.wait_log(lambda e: e["event"] == "connected" and e["address"] == MACS[0], 10)
        assert len([s for s in sessions(sim.log()) if s[1] == MACS[0]]) == 2
        assert gateway.terminate() == 0
    assert not sim.device_props(MACS[0])["Connected"]
