"""A read request never goes unanswered: a paused device answers `cmd/read` at once with a
Paused error saying until when; `jk-ble-read --via-mqtt` fails fast (and says why) when the
gateway is stopped or the device paused, types a broker problem as MqttError, and waits exactly
`--timeout` seconds."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.mqtt import Broker, MqttProbe, free_port
from tests.integration.gateway.conftest import GatewayFactory
from tests.integration.gateway.support import MACS, device_spec, gateway_config, wait_online

pytestmark = pytest.mark.integration

READ = [sys.executable, "-m", "bluez_jk.cli.read"]
DEVICES = [{"name": "jk1", "address": MACS[0], "adapter": "hci0"}]


def via_mqtt(config: Path, *extra: str, timeout_s: float = 60) -> tuple[int, Any, float]:
    started = time.monotonic()
    done = subprocess.run(
        [*READ, "--config", str(config), "--name", "jk1", "--via-mqtt", *extra],
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, json.loads(done.stdout), time.monotonic() - started


def write_config(tmp_path: Path, port: int) -> Path:
    path = tmp_path / "gateway.json"
    path.write_text(json.dumps(gateway_config(port, tmp_path / "state", DEVICES)))
    return path


def test_paused_device_answers_cmd_read_at_once(
    sim_factory: Any, mosquitto: Broker, gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    sim = sim_factory([device_spec(MACS[0], "hci0")])
    config = write_config(tmp_path, mosquitto.port)
    with MqttProbe(mosquitto, ["bms/#"]) as probe:
        gateway_factory(sim, json.loads(config.read_text()))
        wait_online(probe, ["jk1"], b"true")
        rc, reading, _ = via_mqtt(config)
        assert rc == 0, reading
        assert reading["error"] is None

        probe.publish("bms/jk/jk1/cmd/pause", json.dumps({"minutes": 10}))
        probe.wait_for(
            lambda m: m.topic == "bms/jk/jk1/meta" and m.json()["paused_until"] is not None
        )
        asked = time.monotonic()
        probe.publish("bms/jk/jk1/cmd/read", "")
        answer = probe.wait_topic("bms/jk/jk1/raw", timeout_s=5, after=asked)
        assert answer.received - asked < 2.0
        error = answer.json()["error"]
        assert error["type"] == "Paused"
        assert "until 20" in error["message"]  # an ISO date
        assert "bms/jk/jk1/cmd/pause" in error["message"]  # how to undo it

        # --via-mqtt sees the pause in the retained meta and says so without waiting.
        rc, reading, elapsed = via_mqtt(config)
        assert rc == 1
        assert reading["error"]["type"] == "Paused"
        assert "min left" in reading["error"]["message"]
        assert elapsed < 8


def test_via_mqtt_stopped_gateway_fails_fast(
    sim_factory: Any, mosquitto: Broker, gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    sim = sim_factory([device_spec(MACS[0], "hci0")])
    config = write_config(tmp_path, mosquitto.port)
    rc, reading, elapsed = via_mqtt(config)  # no gateway ever ran on this broker
    assert rc == 1
    assert reading["error"]["type"] == "MqttError"
    assert "no gateway has published" in reading["error"]["message"]
    assert elapsed < 8

    with MqttProbe(mosquitto, ["bms/#"]) as probe:
        gateway = gateway_factory(sim, json.loads(config.read_text()))
        wait_online(probe, ["jk1"], b"true")
        assert gateway.terminate() == 0
    rc, reading, elapsed = via_mqtt(config)
    assert rc == 1
    assert reading["error"]["type"] == "MqttError"
    assert "gateway is not running" in reading["error"]["message"]
    assert "systemctl start" in reading["error"]["message"]
    assert elapsed < 8


def test_via_mqtt_unreachable_broker_is_an_mqtt_error(tmp_path: Path) -> None:
    config = write_config(tmp_path, free_port())
    rc, reading, _ = via_mqtt(config)
    assert rc == 1
    assert reading["error"]["type"] == "MqttError"  # not BusError (that is D-Bus)
    assert "connection refused" in reading["error"]["message"]


def test_via_mqtt_timeout_is_the_whole_wait(mosquitto: Broker, tmp_path: Path) -> None:
    """A gateway that is online but never answers: --timeout 2 gives up after about 2 s."""
    config = write_config(tmp_path, mosquitto.port)
    with MqttProbe(mosquitto, ["bms/#"]) as probe:
        probe.publish("bms/gateway/online", "true", retain=True)
        rc, reading, elapsed = via_mqtt(config, "--timeout", "2")
    assert rc == 1
    assert reading["error"]["type"] == "Timeout"
    assert "2.0 s" in reading["error"]["message"]
    assert 2.0 <= elapsed < 7.0  # was 12 s (timeout + 10)
