"""One gateway MQTT link against a real private broker."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable
from typing import Any

import pytest

from bluez_jk.gateway.config import MqttConfig
from bluez_jk.gateway.mqtt import MqttLink
from tests.fixtures.mqtt import Broker, FakeBroker, Message, MqttProbe

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


def last_of(topic: str) -> Callable[[Message], bool]:
    return lambda m: m.topic == topic and m.payload == b"59"


def link_threads() -> list[str]:
    """paho names its network thread after the client id (the test's probe has one too)."""
    return [t.name for t in threading.enumerate() if t.name.startswith("paho-mqtt-client-loop-")]


async def test_the_event_loop_drives_the_links(mosquitto: Broker) -> None:
    """No network thread per link (the loop reads, writes and keeps alive), and everything
    still arrives: retained state, queued messages with their PUBACKs, a command."""
    commands: list[tuple[str, bytes]] = []
    got_command = asyncio.Event()

    def on_message(topic: str, payload: bytes) -> None:
        commands.append((topic, payload))
        got_command.set()

    links = [
        MqttLink(
            MqttConfig(host=mosquitto.host, port=mosquitto.port),
            client_id=f"loop-{i}",
            will_topic=f"t/{i}/online",
            subscriptions=[f"t/{i}/cmd/#"],
            on_message=on_message,
        )
        for i in range(3)
    ]
    with MqttProbe(mosquitto, ["t/#"]) as probe:
        for link in links:
            link.start()
        try:
            for link in links:
                assert await link.wait_connected(10)
            assert link_threads() == []
            for i, link in enumerate(links):
                link.set_retained(f"t/{i}/online", b"true")
                for n in range(60):  # more than paho takes in flight at once
                    link.publish(f"t/{i}/raw", f"{n}".encode())
            for link in links:
                assert await link.flush(15)  # every PUBACK came back through the loop
                assert link.queued == 0
            for i in range(3):
                await asyncio.to_thread(probe.wait_for, last_of(f"t/{i}/raw"))
                raws = [m.payload for m in probe.on_topic(f"t/{i}/raw")]
                assert raws == [f"{n}".encode() for n in range(60)]  # all, in order
            await asyncio.to_thread(probe.publish, "t/1/cmd/read", b"{}")
            async with asyncio.timeout(15):
                await got_command.wait()
            assert commands == [("t/1/cmd/read", b"{}")]
        finally:
            for link in links:
                await link.close(5)
    assert link_threads() == []


async def test_an_idle_link_stays_connected(mosquitto: Broker) -> None:
    """Nothing to publish for many keepalive periods: the loop's PINGREQs keep the broker from
    dropping the link (keepalive 2 s: the link asks for 1 s, mosquitto drops a silent client
    after about 5 s)."""
    link = MqttLink(
        MqttConfig(host=mosquitto.host, port=mosquitto.port, keepalive=2),
        client_id="idle-test",
        will_topic="t/idle/online",
    )
    link.start()
    try:
        assert await link.wait_connected(10)
        await asyncio.sleep(12)  # the time that has to pass, not a wait for an event
        assert link.connected
        assert link.connects == 1
    finally:
        await link.close(5)


async def test_a_link_comes_back_after_a_broker_restart(mosquitto: Broker) -> None:
    link = MqttLink(
        MqttConfig(host=mosquitto.host, port=mosquitto.port),
        client_id="restart-test",
        will_topic="t/r/online",
    )
    link.set_retained("t/r/online", b"true")
    link.start()
    try:
        assert await link.wait_connected(10)
        await asyncio.to_thread(mosquitto.restart)
        async with asyncio.timeout(30):
            while link.connects < 2 or not link.connected:
                await asyncio.sleep(0.1)
        link.publish("t/r/raw", b"after")
        assert await link.flush(15)
        with MqttProbe(mosquitto, ["t/r/#"]) as probe:
            # Retained state is sent again on the new connection (the broker kept nothing).
            assert probe.wait_topic("t/r/online").payload == b"true"
    finally:
        await link.close(5)


def garbage_after_connack(conn: socket.socket) -> None:
    """A CONNACK, then a packet of a type that does not exist."""
    conn.recv(1024)  # CONNECT
    conn.sendall(bytes([0x20, 0x03, 0x00, 0x00, 0x00]))  # CONNACK (MQTT 5), success
    conn.sendall(bytes([0x00, 0x00]))  # packet type 0: reserved, never valid
    conn.recv(1024)  # until the client hangs up


async def test_a_broker_sending_garbage_is_dropped_and_tried_again() -> None:
    broker = FakeBroker(garbage_after_connack)
    link = MqttLink(MqttConfig(port=broker.port), client_id="garbage", will_topic="t/g/online")
    link.start()
    try:
        async with asyncio.timeout(30):
            while link.connects < 2:
                await asyncio.sleep(0.05)
        assert broker.accepted >= 2
        assert link._runner is not None
        assert not link._runner.done()
    finally:
        await link.close(1)
        broker.close()


async def test_an_error_inside_paho_drops_the_connection_and_reconnects(
    mosquitto: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever paho raises while reading (a bug, a packet it cannot parse) closes that
    connection and the link connects again, instead of the loop calling it forever."""
    link = MqttLink(
        MqttConfig(host=mosquitto.host, port=mosquitto.port),
        client_id="raising",
        will_topic="t/x/online",
        subscriptions=["t/x/cmd/#"],
        on_message=lambda _t, _p: None,
    )
    link.start()
    try:
        assert await link.wait_connected(10)
        read = link._client.loop_read
        calls = {"n": 0}

        def raising_once(max_packets: int = 1) -> Any:
            calls["n"] += 1
            if calls["n"] == 1:
                raise RuntimeError("paho bug")
            return read(max_packets)

        monkeypatch.setattr(link._client, "loop_read", raising_once)
        with MqttProbe(mosquitto, []) as probe:
            await asyncio.to_thread(probe.publish, "t/x/cmd/read", b"{}")
        async with asyncio.timeout(30):
            while link.connects < 2 or not link.connected:
                await asyncio.sleep(0.05)
        assert calls["n"] >= 2
    finally:
        await link.close(5)
