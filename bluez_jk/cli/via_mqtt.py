"""`jk-ble-read --via-mqtt`: ask the running gateway for a read through `B/jk/N/cmd/read` and
return the next `B/jk/N/raw` it publishes, without touching Bluetooth (the gateway is the only
BLE client of the BMS).

Before asking, it looks at what the gateway left retained on the broker, so that a stopped
gateway or a paused device is an immediate, clear answer instead of a timeout: subscribing to
`B/gateway/online` and `B/jk/N/meta` first and to `B/jk/N/raw` second means both retained
messages (when they exist) have arrived by the time the second SUBACK does, because a broker
answers one connection's packets in order."""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from bluez_jk.errors import ConfigError, Interrupted, JkError, MqttError, Paused, Timeout
from bluez_jk.gateway.config import load_config
from bluez_jk.gateway.mqtt import configure_client, describe_connect_error
from bluez_jk.reading import Reading

# How long to wait for the broker's CONNACK and SUBACKs (the read itself has its own budget).
BROKER_ANSWER_S = 10.0


@dataclass
class _Exchange:
    """What paho's thread saw; read by the caller once `event` is set."""

    event: threading.Event = field(default_factory=threading.Event)
    failure: JkError | None = None
    raw: bytes | None = None
    gateway_online: bytes | None = None
    meta: bytes | None = None
    ready: bool = False  # the raw subscription is in place and the request was sent

    def fail(self, error: JkError) -> None:
        if self.failure is None:
            self.failure = error
        self.event.set()


def _paused_until(meta: bytes | None) -> float | None:
    try:
        value = json.loads(meta or b"null")
    except ValueError:
        return None
    until = value.get("paused_until") if isinstance(value, dict) else None
    return float(until) if isinstance(until, int | float) and until > time.time() else None


def read_via_mqtt(config_path: Path, name: str, *, timeout_s: float) -> Reading:
    """The gateway's next `raw` for `name`, waiting at most `timeout_s` for it."""
    config = load_config(config_path)
    if not any(d.name == name for d in config.devices):
        raise ConfigError(f"no device named {name!r} in {config_path}", key="name")
    mqtt = config.mqtt
    base = f"{mqtt.base_topic}/jk/{name}"
    gateway_topic = f"{mqtt.base_topic}/gateway/online"
    where = f"the broker {mqtt.host}:{mqtt.port}"
    ex = _Exchange()
    client = paho.Client(
        CallbackAPIVersion.VERSION2, client_id=f"jk-ble-read-{uuid.uuid4().hex[:8]}"
    )
    configure_client(client, mqtt)
    state_mid: list[int] = []

    def on_connect(c: paho.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Any = None) -> None:
        if reason.is_failure:
            ex.fail(
                MqttError(
                    f"{where} refused the connection: {reason} (check mqtt.username and the "
                    "password in the config)",
                    stage="mqtt",
                )
            )
            return
        _, mid = c.subscribe([(gateway_topic, 1), (f"{base}/meta", 1)])
        if mid is not None:
            state_mid.append(mid)

    def on_subscribe(c: paho.Client, _u: Any, mid: int, _codes: Any, _p: Any = None) -> None:
        if state_mid and mid == state_mid[0]:
            c.subscribe(f"{base}/raw", qos=1)
            return
        # The retained state (if any) arrived before this SUBACK.
        if ex.gateway_online is None:
            ex.fail(
                MqttError(
                    f"no gateway has published on {where} under {mqtt.base_topic}/ "
                    f"({gateway_topic} is not set): start it (systemctl start "
                    "jk-ble-mqtt-gateway) or check mqtt.base_topic; without the gateway, read "
                    "directly (without --via-mqtt)",
                    stage="mqtt",
                )
            )
            return
        if ex.gateway_online != b"true":
            ex.fail(
                MqttError(
                    f"the gateway is not running ({gateway_topic} is "
                    f"{ex.gateway_online.decode(errors='replace')!r}): start it (systemctl "
                    "start jk-ble-mqtt-gateway, journalctl -u jk-ble-mqtt-gateway says why it "
                    "stopped) or read directly without --via-mqtt",
                    stage="mqtt",
                )
            )
            return
        until = _paused_until(ex.meta)
        if until is not None:
            ex.fail(Paused.until(name, until, f"{base}/cmd/pause", stage="mqtt"))
            return
        ex.ready = True
        c.publish(f"{base}/cmd/read", b"", qos=1)

    def on_message(_c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        if msg.topic == gateway_topic:
            ex.gateway_online = bytes(msg.payload)
        elif msg.topic == f"{base}/meta":
            ex.meta = bytes(msg.payload)
        elif ex.ready and ex.raw is None:
            ex.raw = bytes(msg.payload)
            ex.event.set()

    def on_disconnect(
        _c: paho.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Any = None
    ) -> None:
        ex.fail(MqttError(f"{where} closed the connection: {reason}", stage="mqtt"))

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.on_disconnect = on_disconnect
    try:
        client.connect(mqtt.host, mqtt.port, keepalive=max(5, mqtt.keepalive))
    except OSError as err:
        raise MqttError(
            f"cannot reach {where}: {describe_connect_error(err)}", stage="mqtt"
        ) from err
    client.loop_start()
    started = time.monotonic()
    try:
        _wait(ex, client, where, timeout_s, started)
    except KeyboardInterrupt:
        raise Interrupted("interrupted while waiting for the gateway", stage="mqtt") from None
    finally:
        client.on_disconnect = None
        client.disconnect()
        client.loop_stop()
    return _parse(ex.raw, base)


def _wait(ex: _Exchange, client: paho.Client, where: str, timeout_s: float, started: float) -> None:
    # The broker gets its own bound so that a hung broker is not reported as a slow BMS.
    if not ex.event.wait(min(timeout_s, BROKER_ANSWER_S)) and not ex.ready:
        raise MqttError(
            f"{where} did not answer CONNECT/SUBSCRIBE within "
            f"{min(timeout_s, BROKER_ANSWER_S):.1f} s (a TLS port without mqtt.tls, or not a "
            "broker?)",
            stage="mqtt",
        )
    left = timeout_s - (time.monotonic() - started)
    if not ex.event.is_set() and not ex.event.wait(max(0.0, left)):
        raise Timeout(
            f"the gateway sent no answer within {timeout_s:.1f} s: it may be busy with a slow "
            "read (raise --timeout) or not subscribed (check its log)",
            stage="mqtt",
        )
    if ex.failure is not None and ex.raw is None:
        raise ex.failure


def _parse(raw: bytes | None, base: str) -> Reading:
    try:
        reading = json.loads(raw or b"")
    except (ValueError, UnicodeDecodeError) as err:
        raise MqttError(f"{base}/raw is not JSON: {err}", stage="mqtt") from err
    if not isinstance(reading, dict):
        raise MqttError(f"{base}/raw is not a JSON object", stage="mqtt")
    return cast(Reading, reading)
