"""The outgoing queue of an MQTT link while the broker is away (no network involved)."""

from __future__ import annotations

from bluez_jk.gateway.config import MqttConfig
from bluez_jk.gateway.mqtt import MqttLink, link_keepalive


async def test_oldest_dropped_first_with_a_counter() -> None:
    link = MqttLink(MqttConfig(), client_id="t", will_topic="b/jk/x/online", queue_limit=3)
    for index in range(5):
        link.publish("b/jk/x/raw", f"{index}")
    assert link.dropped == 2
    assert [m.payload for m in link._queue] == [b"2", b"3", b"4"]
    assert link.queued == 3


async def test_retained_state_is_kept_for_reconnects() -> None:
    link = MqttLink(MqttConfig(), client_id="t", will_topic="b/jk/x/online")
    link.set_retained("b/jk/x/online", "true")
    link.set_retained("b/jk/x/online", b"false")
    link.clear_retained("old/config")
    assert link.retained("b/jk/x/online") == b"false"
    assert link.retained("old/config") == b""
    assert link.queued == 0  # retained topics are state, not queue entries


def test_keepalive_margin() -> None:
    # Half the configured keepalive: the broker's coarse check (about 6 s steps in mosquitto
    # 2.0.11) still lands within 1.5 x the configured value from 10 s up.
    assert [link_keepalive(k) for k in (1, 2, 3, 10, 30, 60)] == [1, 1, 1, 5, 15, 30]
    for configured in (10, 30, 60, 600):
        assert 1.5 * link_keepalive(configured) + 6 <= 1.5 * configured
