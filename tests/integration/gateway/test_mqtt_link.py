"""One gateway MQTT link against a real private broker."""

from __future__ import annotations

import socket

import pytest

from bluez_jk.gateway.config import MqttConfig
from bluez_jk.gateway.mqtt import MqttLink
from tests.fixtures.mqtt import Broker

pytestmark = pytest.mark.integration


async def test_link_turns_nagle_off(mosquitto: Broker) -> None:
    # With Nagle on, a `raw` answering `cmd/read` waited ~40 ms behind delayed ACKs (bench).
    link = MqttLink(
        MqttConfig(host=mosquitto.host, port=mosquitto.port),
        client_id="nagle-test",
        will_topic="t/online",
    )
    link.start()
    try:
        assert await link.wait_connected(10)
        sock = link._client.socket()
        assert isinstance(sock, socket.socket)
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        await link.close(5)
