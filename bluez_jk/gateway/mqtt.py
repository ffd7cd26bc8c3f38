"""MQTT links: paho-mqtt (v2 callback API) clients bridged into asyncio.

Why one MQTT connection per device (plus one for the gateway): a connection has exactly one
last will, but docs/mqtt.md promises that every retained `B/jk/N/online` reads `false` within
1.5 x keepalive after a `kill -9`. Giving each device its own connection, whose will is that
device's `online=false`, lets the broker flip every topic by itself. The gateway's own
connection carries the will on `B/gateway/online`. A JK installation has a handful of BMS, so
a handful of connections is cheap.

A killed process (kill -9) closes its sockets, so the broker sends the wills at once. A hung
host or a cut network keeps them open and only the broker's keepalive check fires them; that
check is coarse (mosquitto 2.0.11 measured: a silent client with keepalive 1-3 s is dropped
after 5-6 s, with 4-6 s after 12 s). Each link therefore connects with half the configured
keepalive, which keeps even that path within 1.5 x the configured value from about 10 s up.

Threads: none in the steady state. paho's own network thread (`loop_start`) would cost every
publish a wake-up byte to that thread and every PUBACK a hop back to the event loop (about
seven system calls per message where one send and one receive do), and a thread per
connection. So the event loop drives paho (`loop_read` when the
socket is readable, `loop_write` while paho has bytes left, `loop_misc` once a second for the
keepalive), and only the connect itself (DNS, TCP, TLS handshake: all blocking in paho) runs on
a worker thread, during which the loop leaves the client alone. paho's callbacks are handed
on with `call_soon`, so they run outside paho's own call stack as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from bluez_jk.gateway.config import MqttConfig

log = logging.getLogger(__name__)

QOS = 1
DEFAULT_QUEUE_LIMIT = 1000
# Answers to commands (`cmd/*/result`) wait in a queue of their own, this long at most.
ANSWER_QUEUE_LIMIT = 100
# Messages handed to paho and not yet acknowledged; paho re-sends these itself after a
# reconnect, everything beyond stays in our bounded queue.
MAX_HANDED = 50

# Delays between connect attempts: 1 s, doubled per failure, at most 5 s (what paho's own
# loop did with reconnect_delay_set(1, 5)).
RECONNECT_MIN_S = 1
RECONNECT_MAX_S = 5
# A broker that stays unreachable is reported at once, then at most this often per link
# (unless the reason changes), so the journal shows it without a line every few seconds.
FAILURE_LOG_INTERVAL_S = 60.0
# How often paho's keepalive bookkeeping runs (PINGREQ, a broker that stopped answering, a
# CONNACK that never came): what paho's own loop did with its 1 s select timeout.
MISC_INTERVAL_S = 1.0

MessageHandler = Callable[[str, bytes], None]


@dataclass(frozen=True)
class Outgoing:
    topic: str
    payload: bytes


# The largest packet the broker may send us (MQTT 5 CONNECT property; mosquitto 2 drops
# bigger ones instead of delivering them). Commands are small JSON objects (4 KiB at most
# are parsed); without this bound paho buffers and copies whatever arrives: one 200 MB
# `cmd/config` took the gateway from 34 MiB to 630 MiB.
MAX_INCOMING_PACKET = 16 * 1024


# A takeover looks like this: dropped within TAKEOVER_QUICK_S of a successful connect,
# TAKEOVER_DROPS times in a row. Logged on the first and then every TAKEOVER_LOG_EVERY-th.
TAKEOVER_QUICK_S = 10.0
TAKEOVER_DROPS = 3
TAKEOVER_LOG_EVERY = 20


def link_keepalive(keepalive_s: int) -> int:
    return max(1, keepalive_s // 2)


MACHINE_ID_FILES = (Path("/etc/machine-id"), Path("/var/lib/dbus/machine-id"))


def node_name() -> str:
    """The host's name as the gateway shows it (Home Assistant's gateway device, whose
    identifiers must stay stable across upgrades)."""
    return f"bluez-jk-{socket.gethostname()[:40]}"


def default_client_id(base_topic: str) -> str:
    """A client id unique per installation: the host name says which machine, a hash of the
    machine id and the base topic keeps two hosts of the same name (cloned SD cards, every
    Pi called raspberrypi) or two gateways on one host from kicking each other off."""
    machine = ""
    for path in MACHINE_ID_FILES:
        with contextlib.suppress(OSError, UnicodeDecodeError):
            machine = path.read_text(encoding="ascii").strip()
            if machine:
                break
    digest = hashlib.sha256(f"{machine}\0{base_topic}".encode()).hexdigest()[:8]
    return f"bluez-jk-{socket.gethostname()[:24]}-{digest}"


def next_retry_s(failures: int) -> int:
    """When paho tries again after `failures` failed attempts in a row."""
    return int(min(RECONNECT_MAX_S, RECONNECT_MIN_S << max(0, min(failures - 1, 8))))


def describe_connect_error(err: BaseException | None) -> str:
    """Why a connect attempt failed, in words that point at the config key to check."""
    if isinstance(err, ssl.SSLCertVerificationError):
        return (
            f"TLS certificate not accepted ({err.verify_message}): check mqtt.tls.ca_file "
            "and that mqtt.host matches the name in the broker's certificate"
        )
    if isinstance(err, ssl.SSLError):
        return f"TLS handshake failed ({err.reason or err}): check mqtt.tls and the port"
    if isinstance(err, ConnectionRefusedError):
        return "connection refused: no broker listens there (check mqtt.host and mqtt.port)"
    if isinstance(err, socket.gaierror):
        return f"host name not resolved ({err.strerror}): check mqtt.host"
    if isinstance(err, TimeoutError | socket.timeout):
        return "no answer (timed out): broker down, firewall, or wrong mqtt.host"
    if isinstance(err, OSError):
        return f"{err.strerror or err}: check mqtt.host and mqtt.port"
    return "connection failed"


def configure_client(client: paho.Client, config: MqttConfig) -> None:
    """Credentials and TLS as the config says (the gateway, its probe and --via-mqtt alike)."""
    if config.username is not None:
        client.username_pw_set(config.username, config.password)
    tls = config.tls
    if tls.enabled:
        client.tls_set(
            ca_certs=tls.ca_file,
            certfile=tls.cert_file,
            keyfile=tls.key_file,
            cert_reqs=ssl.CERT_REQUIRED,
        )


def _no_delay(_c: paho.Client, _u: Any, sock: Any) -> None:
    """Every MQTT packet the gateway sends is small and someone waits for it (a `raw` after
    `cmd/read`, a PUBACK): with Nagle's algorithm on, each one can sit ~40 ms behind the
    broker's delayed ACK. Not every socket paho hands over is plain TCP (websockets)."""
    with contextlib.suppress(AttributeError, OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class MqttLink:
    """One MQTT connection with its own last will, retained state and bounded queue."""

    def __init__(
        self,
        config: MqttConfig,
        *,
        client_id: str,
        will_topic: str,
        subscriptions: Iterable[str] = (),
        on_message: MessageHandler | None = None,
        queue_limit: int = DEFAULT_QUEUE_LIMIT,
        on_health: Callable[[], None] | None = None,
    ) -> None:
        self.config = config
        self.client_id = client_id
        self.will_topic = will_topic
        self.subscriptions = tuple(subscriptions)
        self.on_message = on_message
        self.connected = False
        self.closing = False
        self.connects = 0
        self.dropped = 0
        self.taken_over = 0
        self._quick_drops = 0
        self._connected_at = 0.0
        # Why the link is not connected (None while connected or before the first attempt).
        self.problem: str | None = None
        self.failed_attempts = 0
        self._logged_problem: str | None = None
        self._logged_at = 0.0
        self._suppressed = 0
        self._refused = False
        self.on_health = on_health
        self._queue: deque[Outgoing] = deque()
        self._answers: deque[Outgoing] = deque()
        self.answers_dropped = 0
        self._queue_limit = queue_limit
        self._retained: dict[str, bytes] = {}
        self._handed: set[int] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._connected_event = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._runner: asyncio.Task[None] | None = None
        self._connecting: asyncio.Future[MQTTErrorCode] | None = None
        self._socket: Any = None  # the socket the loop watches (paho's, while it has one)
        self._socket_gone = asyncio.Event()
        self._writing = False
        self._misc: asyncio.TimerHandle | None = None
        self._client = self._make_client()

    def _make_client(self) -> paho.Client:
        # MQTT 5 for its Maximum Packet Size (see MAX_INCOMING_PACKET) and for the reason a
        # broker gives when it drops us (a session taken over by a client with our id).
        client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=paho.MQTTv5
        )
        configure_client(client, self.config)
        client.will_set(self.will_topic, b"false", qos=QOS, retain=True)
        client.on_socket_open = _no_delay
        client.on_socket_close = self._t_on_socket_close
        client.on_connect = self._t_on_connect
        client.on_disconnect = self._t_on_disconnect
        client.on_publish = self._t_on_publish
        client.on_message = self._t_on_message
        return client

    # -- paho's callbacks: handed on to the loop, outside paho's call stack -----------------

    def _t_on_connect(
        self, _c: paho.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Any = None
    ) -> None:
        self._call(self._on_connect, not reason.is_failure, str(reason))

    def _t_on_socket_close(self, _c: paho.Client, _u: Any, sock: Any) -> None:
        # Called just before paho closes the socket: the loop must stop watching it first.
        if threading.get_ident() == self._loop_thread:
            self._unwatch(sock)
        else:  # a connect that failed on the worker thread, before the loop watched it
            self._call(self._unwatch, sock)

    def _t_on_disconnect(
        self, _c: paho.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Any = None
    ) -> None:
        self._call(self._on_disconnect, str(reason))

    def _t_on_publish(
        self, _c: paho.Client, _u: Any, mid: int, _r: ReasonCode, _p: Any = None
    ) -> None:
        self._call(self._on_publish, mid)

    def _t_on_message(self, _c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        if msg.retain:
            # A retained command would replay at every reconnect: commands are one-shot.
            log.warning("retained command ignored topic=%s", msg.topic)
            return
        self._call(self._on_message, msg.topic, bytes(msg.payload))

    def _call(self, func: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        if threading.get_ident() == self._loop_thread:
            loop.call_soon(func, *args)
        else:
            loop.call_soon_threadsafe(func, *args)

    # -- the loop drives paho's socket --------------------------------------------------------

    def _watch(self, sock: Any) -> None:
        assert self._loop is not None
        self._socket = sock
        self._socket_gone.clear()
        self._loop.add_reader(sock, self._on_readable)
        self._flush_later()

    def _unwatch(self, sock: Any) -> None:
        if sock is not self._socket or self._loop is None:
            return
        self._loop.remove_reader(sock)
        if self._writing:
            self._loop.remove_writer(sock)
            self._writing = False
        self._socket = None
        self._socket_gone.set()

    def _on_readable(self) -> None:
        client = self._client
        try:
            client.loop_read()
            # A TLS record may hold more than paho read; the socket will not say so again.
            sock = client.socket()
            while sock is not None and sock is self._socket and _tls_pending(sock):
                client.loop_read()
                sock = client.socket()
        except Exception as err:  # noqa: BLE001 - whatever the broker sent, drop and reconnect
            self._drop(f"unreadable data from the broker ({type(err).__name__}: {err})")
            return
        self._flush_later()

    def _on_writable(self) -> None:
        try:
            self._client.loop_write()
        except Exception as err:  # noqa: BLE001 - a broken socket: drop and reconnect
            self._drop(f"write failed ({type(err).__name__}: {err})")
            return
        self._flush_later()

    def _drop(self, reason: str) -> None:
        """Close a connection paho could not handle itself; `_run` connects again."""
        sock = self._socket
        if sock is not None:
            self._unwatch(sock)
            # paho has no public close; its next connect closes its handle on this one again.
            sock.close()
        if self.connected:
            self._on_disconnect(reason)
        else:  # before the CONNACK: one failed attempt
            self._on_connect_failed(reason)

    def _flush_later(self) -> None:
        """Watch for writability while paho still has bytes to send (a full socket buffer, or
        a packet paho queued inside its own read, a PUBACK or PINGREQ), and only then."""
        sock = self._socket
        if sock is None or self._loop is None:
            return
        wanted = self._client.want_write()
        if wanted and not self._writing:
            self._loop.add_writer(sock, self._on_writable)
        elif not wanted and self._writing:
            self._loop.remove_writer(sock)
        self._writing = wanted

    def _on_misc(self) -> None:
        self._misc = None
        if self.closing or self._loop is None:
            return
        if self._socket is not None and self._connecting is None:
            self._client.loop_misc()
            self._flush_later()
        self._misc = self._loop.call_later(MISC_INTERVAL_S, self._on_misc)

    async def _run(self) -> None:
        """Connect, stay connected, reconnect: what paho's `loop_forever` did, with the
        blocking connect on a worker thread."""
        assert self._loop is not None
        while not self.closing:
            self._connecting = self._loop.run_in_executor(None, self._client.reconnect)
            sock = None
            try:
                rc = await asyncio.shield(self._connecting)
                sock = self._client.socket()
                failure = None
                if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or sock is None:
                    failure = f"connection failed: {paho.error_string(rc)}"
            except Exception as err:  # noqa: BLE001 - any failure is one failed attempt
                failure = describe_connect_error(err)
            finally:
                self._connecting = None
            if failure is not None or sock is None:
                self._on_connect_failed(failure or "connection failed")
                await asyncio.sleep(next_retry_s(self.failed_attempts))
                continue
            self._watch(sock)
            await self._socket_gone.wait()
            if self.closing:
                return
            await asyncio.sleep(next_retry_s(max(1, self.failed_attempts)))

    # -- the asyncio side ---------------------------------------------------------------------

    def start(self) -> None:
        """Connect in the background, retrying until the broker answers."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.MaximumPacketSize = MAX_INCOMING_PACKET
        # Only stores the parameters: the connect itself happens in _run.
        self._client.connect_async(
            self.config.host,
            self.config.port,
            keepalive=link_keepalive(self.config.keepalive),
            clean_start=True,  # and no session expiry: nothing outlives the connection
            properties=properties,
        )
        self._runner = self._loop.create_task(self._run(), name=f"mqtt {self.client_id}")
        self._misc = self._loop.call_later(MISC_INTERVAL_S, self._on_misc)

    def _on_connect(self, ok: bool, reason: str) -> None:
        if not ok:
            # paho reports the closed socket next (_on_disconnect): count the attempt once.
            self._refused = True
            self._on_connect_failed(f"broker refused the connection: {reason}")
            return
        self.connected = True
        self.connects += 1
        self._connected_at = self._loop.time() if self._loop is not None else 0.0
        if self.problem is not None:
            log.warning(
                "mqtt connected again client=%s host=%s port=%d after failed_attempts=%d",
                self.client_id,
                self.config.host,
                self.config.port,
                self.failed_attempts,
            )
        self.problem = None
        self.failed_attempts = 0
        self._logged_problem = None
        self._suppressed = 0
        self._health_changed()
        self._connected_event.set()
        log.info("mqtt connected client=%s connects=%d", self.client_id, self.connects)
        for topic in self.subscriptions:
            self._client.subscribe(topic, qos=QOS)
        # The broker may have lost every retained topic (restart without persistence).
        for topic, payload in self._retained.items():
            self._send(topic, payload, retain=True)
        self._drain()
        self._flush_later()

    def _on_disconnect(self, reason: str) -> None:
        if not self.closing:
            self._note_takeover(reason)
        was_connected = self.connected
        self.connected = False
        self._connected_event.clear()
        if self.closing:
            return
        if was_connected:
            log.warning("mqtt disconnected client=%s reason=%s", self.client_id, reason)
            self.problem = f"disconnected: {reason}"
            self._health_changed()
        elif self._refused:
            self._refused = False
        else:
            # The broker closed the socket before answering CONNECT, e.g. mosquitto dropping
            # a client whose will topic its ACL denies.
            self._on_connect_failed(f"broker closed the connection before accepting it: {reason}")

    def _on_connect_failed(self, reason: str) -> None:
        """One failed connect attempt: a warning (rate-limited per link) and the health."""
        if self.closing:
            return
        self.failed_attempts += 1
        changed = reason != self.problem
        self.problem = reason
        now = time.monotonic()
        if reason != self._logged_problem or now - self._logged_at >= FAILURE_LOG_INTERVAL_S:
            log.warning(
                "mqtt connect failed client=%s host=%s port=%d reason=%s failed_attempts=%d "
                "next_retry_s=%d%s",
                self.client_id,
                self.config.host,
                self.config.port,
                reason,
                self.failed_attempts,
                next_retry_s(self.failed_attempts),
                f" (same failure {self._suppressed} more times since the last report)"
                if self._suppressed
                else "",
            )
            self._logged_problem = reason
            self._logged_at = now
            self._suppressed = 0
        else:
            self._suppressed += 1
        if changed:
            self._health_changed()

    def _health_changed(self) -> None:
        if self.on_health is not None:
            self.on_health()

    def _note_takeover(self, reason: str) -> None:
        """Say by name when another client with our id keeps pushing us off the broker.

        An MQTT 5 broker may say so (reason "Session taken over"); mosquitto 2.0 just closes
        the socket. A link dropped within seconds of every successful connect, several times
        in a row, is the same pattern (two hosts of one name once shared the default id)."""
        loop = self._loop
        now = loop.time() if loop is not None else 0.0
        quick = self.connected and now - self._connected_at < TAKEOVER_QUICK_S
        self._quick_drops = self._quick_drops + 1 if quick else 0
        if reason != "Session taken over" and self._quick_drops < TAKEOVER_DROPS:
            return
        self.taken_over += 1
        if self.taken_over % TAKEOVER_LOG_EVERY == 1:
            log.error(
                "mqtt session taken over (%d times): the broker keeps dropping client id %s, "
                "most likely another client connects with the same id (a second gateway, or a "
                "host with the same name). Give each gateway its own mqtt.client_id",
                self.taken_over,
                self.client_id,
            )

    def _on_publish(self, mid: int) -> None:
        self._handed.discard(mid)
        self._drain()
        if not self._handed and not self._queue and not self._answers:
            self._idle.set()

    def _on_message(self, topic: str, payload: bytes) -> None:
        if self.on_message is not None:
            self.on_message(topic, payload)

    def _send(self, topic: str, payload: bytes, *, retain: bool) -> None:
        try:
            info = self._client.publish(topic, payload, qos=QOS, retain=retain)
        except (ValueError, TypeError) as err:
            # paho refuses a topic with wildcards or one too long; a single bad topic (e.g.
            # from a hand-edited state file) must not stop the others after a reconnect.
            log.warning("mqtt publish refused topic=%r error=%s", topic[:80], err)
            self._retained.pop(topic, None)
            return
        self._handed.add(info.mid)
        self._idle.clear()
        self._flush_later()

    def _drain(self) -> None:
        # Readings first: answers to commands go out only when no Reading waits.
        while self.connected and len(self._handed) < MAX_HANDED:
            if self._queue:
                item = self._queue.popleft()
            elif self._answers:
                item = self._answers.popleft()
            else:
                return
            self._send(item.topic, item.payload, retain=False)

    def publish(self, topic: str, payload: bytes | str, *, answer: bool = False) -> None:
        """Queue a non-retained message; the oldest is dropped when the queue is full.

        Answers to commands have a small queue of their own, so that a flood of commands
        can only ever displace other answers, never a Reading."""
        data = payload.encode() if isinstance(payload, str) else payload
        queue, limit = (
            (self._answers, ANSWER_QUEUE_LIMIT) if answer else (self._queue, self._queue_limit)
        )
        if len(queue) >= limit:
            queue.popleft()
            if answer:
                self.answers_dropped += 1
            else:
                self.dropped += 1
        queue.append(Outgoing(topic, data))
        self._idle.clear()
        self._drain()

    def set_retained(self, topic: str, payload: bytes | str) -> None:
        """Publish retained now (when connected) and again after every reconnect."""
        data = payload.encode() if isinstance(payload, str) else payload
        if self._retained.get(topic) == data:
            return
        self._retained[topic] = data
        if self.connected:
            self._send(topic, data, retain=True)

    def clear_retained(self, topic: str) -> None:
        """Delete a retained topic on the broker (an empty retained payload)."""
        self.set_retained(topic, b"")

    def retained(self, topic: str) -> bytes | None:
        return self._retained.get(topic)

    @property
    def queued(self) -> int:
        return len(self._queue) + len(self._answers) + len(self._handed)

    async def wait_connected(self, timeout_s: float) -> bool:
        try:
            async with asyncio.timeout(timeout_s):
                await self._connected_event.wait()
        except TimeoutError:
            return False
        return True

    async def flush(self, timeout_s: float) -> bool:
        """Wait until everything queued is acknowledged (only possible while connected)."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    async def close(self, timeout_s: float) -> None:
        """Deliver what is pending (bounded by timeout_s), then disconnect cleanly."""
        if self.connected:
            await self.flush(timeout_s)
        self.closing = True
        if self._misc is not None:
            self._misc.cancel()
            self._misc = None
        if self._connecting is not None:
            # The worker thread cannot be stopped; paho's connect timeout bounds it.
            with contextlib.suppress(Exception):
                await asyncio.shield(self._connecting)
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
            self._runner = None
        # Sends DISCONNECT (a clean close: no will) and closes the socket.
        self._client.disconnect()
        sock = self._client.socket()
        if sock is not None:  # the DISCONNECT did not fit into the socket: close anyway
            self._unwatch(sock)
            sock.close()
        self.connected = False
        self._loop = None


def _tls_pending(sock: Any) -> bool:
    pending = getattr(sock, "pending", None)
    return pending is not None and bool(pending())
