"""cmd/config over a real broker: valid values apply at once, persist, survive a restart;
every invalid input changes nothing and says why; allow_remote_config false ignores it."""

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
    device_spec,
    gateway_config,
    retained_snapshot,
    wait_count,
)

pytestmark = pytest.mark.integration

DEVICES: list[dict[str, Any]] = [
    {"name": "jk1", "address": MACS[0], "adapter": "hci0"},
    {"name": "jk2", "address": MACS[1], "adapter": "hci1"},
]
INVALID: list[tuple[bytes, str]] = [
    (b"this is not json", "not valid JSON"),
    (b"[1, 2, 3]", "must be a JSON object"),
    (b'{"poll_interval_s": 1, "colour": "red"}', "unknown key"),
    (b'{"poll_interval_s": "fast"}', "must be a number"),
    (b'{"timeout_s": 100000}', "must be between"),
    (b'{"address": "C8:47:80:37:02"}', "is not a MAC"),
    (b'{"adapter": "hci0/../x"}', "is not an adapter"),
    # Above 4 KiB is answered; above 16 KiB the broker never delivers it (MQTT 5 Maximum
    # Packet Size, see test_hardening.py).
    (b'{"poll_interval_s": ' + b"1" * 10_000 + b"}", "larger than"),
]


# A read of a silent BMS holds its link this long unless something else ends it.
READ_HELD_S = 300


def config_result(probe: MqttProbe, name: str, payload: bytes) -> dict[str, Any]:
    asked = time.monotonic()
    probe.publish(f"bms/jk/{name}/cmd/config", payload)
    message = probe.wait_topic(f"bms/jk/{name}/cmd/config/result", timeout_s=10, after=asked)
    return message.json()  # type: ignore[no-any-return]


def meta(broker: Broker, name: str) -> dict[str, Any]:
    snapshot = retained_snapshot(broker, [f"bms/jk/{name}/meta"])
    return json.loads(snapshot[f"bms/jk/{name}/meta"])  # type: ignore[no-any-return]


def rate(probe: MqttProbe, name: str, count: int, timeout_s: float) -> float:
    """Seconds between consecutive raw messages, over the next `count` ones."""
    start = len(probe.on_topic(f"bms/jk/{name}/raw"))
    found = wait_count(probe, f"bms/jk/{name}/raw", start + count + 1, timeout_s)
    window = found[start : start + count + 1]
    return (window[-1].received - window[0].received) / count


def test_valid_config_applies_and_survives_a_restart(
    sim_factory: Any, mosquitto: Broker, gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    sim = sim_factory([device_spec(MACS[0], "hci0"), device_spec(MACS[1], "hci1")])
    config = gateway_config(mosquitto.port, tmp_path / "state", DEVICES, poll_interval_s=5)
    with MqttProbe(mosquitto, ["bms/jk/#"]) as probe:
        gateway = gateway_factory(sim, config)
        wait_count(probe, "bms/jk/jk1/raw", 1, timeout_s=15)
        result = config_result(probe, "jk1", b'{"poll_interval_s": 0.5, "timeout_s": 4}')
        assert result == {
            "ok": True,
            "error": None,
            "applied": {"poll_interval_s": 0.5, "timeout_s": 4},
        }
        assert rate(probe, "jk1", 4, timeout_s=10) < 1.0  # was one every 5 s
        assert meta(mosquitto, "jk1")["config"]["poll_interval_s"] == 0.5
        assert meta(mosquitto, "jk2")["config"]["poll_interval_s"] == 5
        assert gateway.terminate() == 0

        again = gateway_factory(sim, config, name="gw2")
        assert rate(probe, "jk1", 4, timeout_s=15) < 1.0
        assert meta(mosquitto, "jk1")["config"] == {
            **meta(mosquitto, "jk1")["config"],
            "poll_interval_s": 0.5,
            "timeout_s": 4,
        }
        assert again.alive()


def test_each_invalid_input_is_explained_and_changes_nothing(
    sim_factory: Any, mosquitto: Broker, gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    sim = sim_factory([device_spec(MACS[0], "hci0"), device_spec(MACS[1], "hci1")])
    config = gateway_config(mosquitto.port, tmp_path / "state", DEVICES, poll_interval_s=1)
    with MqttProbe(mosquitto, ["bms/jk/#"]) as probe:
        gateway = gateway_factory(sim, config)
        wait_count(probe, "bms/jk/jk1/raw", 1, timeout_s=15)
        before = meta(mosquitto, "jk1")["config"]
        for payload, reason in INVALID:
            result = config_result(probe, "jk1", payload)
            assert result["ok"] is False, payload[:40]
            assert result["applied"] == {}
            assert reason in result["error"], (payload[:40], result)
        assert gateway.alive()
        assert meta(mosquitto, "jk1")["config"] == before
        assert not (tmp_path / "state" / "gateway_state.json").exists()
        # Still polling on the old schedule.
        assert rate(probe, "jk1", 2, timeout_s=10) < 1.6


def test_remote_config_disabled_says_so(
    sim_factory: Any, mosquitto: Broker, gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    sim = sim_factory([device_spec(MACS[0], "hci0")])
    config = gateway_config(
        mosquitto.port, tmp_path / "state", DEVICES[:1], allow_remote_config=False
    )
    with MqttProbe(mosquitto, ["bms/jk/#"]) as probe:
        gateway_factory(sim, config)
        wait_count(probe, "bms/jk/jk1/raw", 1, timeout_s=15)
        result = config_result(probe, "jk1", b'{"poll_interval_s": 2}')
        assert result["ok"] is False
        assert "allow_remote_config: false" in result["error"]
        assert meta(mosquitto, "jk1")["config"]["poll_interval_s"] == 1


def test_pause_releases_the_link_at_once_then_resumes(
    sim_factory: Any, mosquitto: Broker, gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    sim = sim_factory([device_spec(MACS[0], "hci0"), device_spec(MACS[1], "hci1")])
    # jk1 never answers: its read would hold the link until its timeout, 5 minutes. A link
    # released long before that was released by the pause, however slow the machine is.
    sim.set_fault("silent", address=MACS[0])
    config = gateway_config(mosquitto.port, tmp_path / "state", DEVICES, poll_interval_s=0.5)
    config["timeout_s"] = READ_HELD_S
    with MqttProbe(mosquitto, ["bms/jk/#"]) as probe:
        gateway = gateway_factory(sim, config)
        sim.wait_log(lambda e: e["event"] == "notify_start" and e["address"] == MACS[0])
        assert sim.device_props(MACS[0])["Connected"]
        paused = time.time()
        probe.publish("bms/jk/jk1/cmd/pause", b'{"minutes": 5}')
        released = sim.wait_log(
            lambda e: e["event"] == "disconnected" and e["address"] == MACS[0] and e["t"] > paused
        )
        assert released["t"] - paused < READ_HELD_S / 5
        assert sim.device_props(MACS[0])["notify_sessions"] == []
        # While jk2 reads on, jk1 is left alone.
        wait_count(probe, "bms/jk/jk2/raw", len(probe.on_topic("bms/jk/jk2/raw")) + 3, 10)
        again = [
            e
            for e in sim.log()
            if e["event"] == "connect_call" and e["address"] == MACS[0] and e["t"] > paused
        ]
        assert again == []
        assert meta(mosquitto, "jk1")["paused_until"] > paused + 290
        sim.clear_faults(address=MACS[0])
        resumed = time.monotonic()
        probe.publish("bms/jk/jk1/cmd/pause", b'{"minutes": 0}')
        probe.wait_for(
            lambda m: m.topic == "bms/jk/jk1/raw" and m.json()["error"] is None, after=resumed
        )
        assert gateway.alive()
