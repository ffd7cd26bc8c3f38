"""`jk-ble-mqtt-gateway --check-config --probe`: one real connection to the configured broker,
made the way the gateway makes its own (credentials, TLS, a retained will), so that a wrong
host, port, password, CA, host name or a will topic the broker's ACL denies shows up before the
service starts, instead of as silence in the journal."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from bluez_jk.gateway.config import MqttConfig
from bluez_jk.gateway.mqtt import QOS, configure_client, describe_connect_error

DEFAULT_PROBE_TIMEOUT_S = 10.0


def probe_broker(
    mqtt: MqttConfig, *, will_topic: str, timeout_s: float = DEFAULT_PROBE_TIMEOUT_S
) -> str | None:
    """None when the broker accepted the connection, else what went wrong and what to check.

    The client id is unique, so the probe never disconnects a running gateway (a broker drops
    the older of two connections with the same id); the will is never published because the
    probe disconnects cleanly."""
    client = paho.Client(
        CallbackAPIVersion.VERSION2, client_id=f"bluez-jk-probe-{uuid.uuid4().hex[:8]}"
    )
    configure_client(client, mqtt)
    client.will_set(will_topic, b"false", qos=QOS, retain=True)
    done = threading.Event()
    outcome: list[str | None] = []

    def on_connect(_c: paho.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Any = None) -> None:
        outcome.append(f"broker refused the connection: {reason}" if reason.is_failure else None)
        done.set()

    def on_disconnect(
        _c: paho.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Any = None
    ) -> None:
        if not outcome:
            outcome.append(
                f"broker closed the connection before accepting it ({reason}): "
                "check that its ACL lets this user write the will topic " + will_topic
            )
        done.set()

    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    try:
        client.connect(mqtt.host, mqtt.port, keepalive=max(5, mqtt.keepalive))
    except (OSError, ValueError) as err:
        return describe_connect_error(err) if isinstance(err, OSError) else str(err)
    client.loop_start()
    try:
        if not done.wait(timeout_s):
            return (
                f"no answer to CONNECT within {timeout_s:.0f} s: is {mqtt.host}:{mqtt.port} an "
                "MQTT broker (TLS on a plain port, or plain on a TLS port?)"
            )
    finally:
        client.disconnect()
        client.loop_stop()
    return outcome[0]
