"""`jk-ble-read --via-mqtt`: ask the running gateway for a read through `B/jk/N/cmd/read` and
return the next `B/jk/N/raw` it publishes, without touching Bluetooth (the gateway is the only
BLE client of the BMS)."""

from __future__ import annotations

import json
import socket
import ssl
import threading
import uuid
from pathlib import Path
from typing import Any, cast

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from bluez_jk.errors import BusError, ConfigError, Timeout
from bluez_jk.gateway.config import MqttConfig, load_config
from bluez_jk.reading import Reading


def _client(mqtt: MqttConfig) -> paho.Client:
    client = paho.Client(
        CallbackAPIVersion.VERSION2, client_id=f"jk-ble-read-{uuid.uuid4().hex[:8]}"
    )
    if mqtt.username is not None:
        client.username_pw_set(mqtt.username, mqtt.password)
    if mqtt.tls.enabled:
        client.tls_set(
            ca_certs=mqtt.tls.ca_file,
            certfile=mqtt.tls.cert_file,
            keyfile=mqtt.tls.key_file,
            cert_reqs=ssl.CERT_REQUIRED,
        )
    return client


def read_via_mqtt(config_path: Path, name: str, *, timeout_s: float) -> Reading:
    config = load_config(config_path)
    if not any(d.name == name for d in config.devices):
        raise ConfigError(f"no device named {name!r} in {config_path}", key="name")
    mqtt = config.mqtt
    base = f"{mqtt.base_topic}/jk/{name}"
    subscribed = threading.Event()
    answered = threading.Event()
    failure: list[str] = []
    result: list[bytes] = []
    client = _client(mqtt)

    def on_connect(c: paho.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Any = None) -> None:
        if reason.is_failure:
            failure.append(f"broker refused the connection: {reason}")
            answered.set()
            return
        c.subscribe(f"{base}/raw", qos=1)

    def on_subscribe(c: paho.Client, _u: Any, _mid: int, _codes: Any, _p: Any = None) -> None:
        # Ask only once the subscription is in place, so the answer cannot be missed.
        subscribed.set()
        c.publish(f"{base}/cmd/read", b"", qos=1)

    def on_message(_c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        if subscribed.is_set() and not answered.is_set():
            result.append(bytes(msg.payload))
            answered.set()

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    try:
        client.connect(mqtt.host, mqtt.port, keepalive=mqtt.keepalive)
    except (OSError, socket.gaierror, ssl.SSLError) as err:
        raise BusError(
            f"cannot reach the broker {mqtt.host}:{mqtt.port}: {err}", stage="mqtt"
        ) from err
    client.loop_start()
    try:
        if not answered.wait(timeout_s):
            raise Timeout(f"no {base}/raw within {timeout_s:.1f} s", stage="mqtt")
    finally:
        client.disconnect()
        client.loop_stop()
    if failure:
        raise BusError(failure[0], stage="mqtt")
    try:
        reading = json.loads(result[0])
    except (ValueError, UnicodeDecodeError) as err:
        raise BusError(f"{base}/raw is not JSON: {err}", stage="mqtt") from err
    if not isinstance(reading, dict):
        raise BusError(f"{base}/raw is not a JSON object", stage="mqtt")
    return cast(Reading, reading)
