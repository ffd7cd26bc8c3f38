from __future__ import annotations

import time

import pytest

from tests.fixtures.mqtt import Broker, MqttProbe

pytestmark = pytest.mark.integration


def test_private_broker_round_trip_and_restart(mosquitto: Broker) -> None:
    assert mosquitto.port != 1883
    with MqttProbe(mosquitto, ["t/#"]) as probe:
        probe.publish("t/x", b"1")
        assert probe.wait_topic("t/x").payload == b"1"
    mosquitto.restart()
    with MqttProbe(mosquitto, ["t/#"]) as probe:
        t0 = time.monotonic()
        probe.publish("t/y", b"2")
        assert probe.wait_topic("t/y", after=t0).payload == b"2"
