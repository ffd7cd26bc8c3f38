"""The gateway process: scheduler + MQTT links + commands + state + systemd notification.

Topics and payloads are those of docs/mqtt.md. Every device has its own MQTT link (see
mqtt.py for why); the gateway link carries `B/gateway/online` and Home Assistant discovery.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from collections.abc import Callable, Coroutine
from typing import Any

from bluez_jk import __version__
from bluez_jk.errors import ConfigError
from bluez_jk.gateway import discovery
from bluez_jk.gateway.config import (
    DeviceConfig,
    GatewayConfig,
    parse_remote_config,
)
from bluez_jk.gateway.metrics import to_metrics
from bluez_jk.gateway.mqtt import MqttLink, default_client_id
from bluez_jk.gateway.notify import Notifier, watchdog_interval_s
from bluez_jk.gateway.scheduler import Clock, DeviceState, ReaderLike, Scheduler
from bluez_jk.gateway.state import StateStore
from bluez_jk.reading import Reading

log = logging.getLogger(__name__)

MAX_PAUSE_MINUTES = 24 * 60
# SIGTERM budget (systemd and the acceptance test allow 5 s): links released, then MQTT.
SHUTDOWN_READS_S = 2.5
SHUTDOWN_MQTT_S = 1.5

LinkFactory = Callable[..., MqttLink]


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _dumps(value: Any) -> bytes:
    """Strict JSON: a NaN or infinity from a garbled frame becomes null instead of the
    non-standard `NaN` token that Telegraf, Node-RED and Home Assistant refuse."""
    try:
        text = json.dumps(value, separators=(",", ":"), allow_nan=False, default=str)
    except ValueError:
        text = json.dumps(_finite(value), separators=(",", ":"), allow_nan=False, default=str)
    return text.encode()


class Gateway:
    def __init__(
        self,
        config: GatewayConfig,
        reader: ReaderLike,
        *,
        clock: Clock | None = None,
        link_factory: LinkFactory = MqttLink,
        notifier: Notifier | None = None,
    ) -> None:
        self.config = config
        self.base = config.mqtt.base_topic
        self.node_id = config.mqtt.client_id or default_client_id()
        self.notifier = notifier or Notifier()
        self.store = StateStore(config.state_dir)
        self.store.load()
        # File values per device; runtime overrides are layered on top of these.
        self.file_devices = {d.name: d for d in config.devices}
        devices = [self._effective(d) for d in config.devices]
        self.scheduler = Scheduler(reader, devices, self._on_reading, clock=clock)
        self.gateway_link = link_factory(
            config.mqtt,
            client_id=f"{self.node_id}-gateway",
            will_topic=f"{self.base}/gateway/online",
        )
        self.links: dict[str, MqttLink] = {}
        self.failed = False
        # State file writes wait on the disk (two fsyncs), so they run on a worker thread, one
        # at a time and in the order asked; the tasks are kept so that shutdown can wait.
        self._store_lock = asyncio.Lock()
        self._store_tasks: set[asyncio.Task[None]] = set()
        for device in devices:
            prefix = self.topic(device.name, "")
            self.links[device.name] = link_factory(
                config.mqtt,
                client_id=f"{self.node_id}-{device.name}",
                will_topic=f"{prefix}online",
                subscriptions=[f"{prefix}cmd/read", f"{prefix}cmd/config", f"{prefix}cmd/pause"],
                on_message=self.handle_message,
            )

    def topic(self, name: str, leaf: str) -> str:
        return f"{self.base}/jk/{name}/{leaf}"

    def _effective(self, device: DeviceConfig) -> DeviceConfig:
        overrides = self.store.overrides.get(device.name, {})
        return device.with_overrides(overrides) if overrides else device

    # -- publishing ---------------------------------------------------------------------------

    def meta(self, state: DeviceState) -> dict[str, Any]:
        reading = state.last_reading
        info: dict[str, Any] = reading["status"]["device_info"] if reading else {}
        link = self.links[state.name]
        return {
            "name": state.name,
            "address": state.config.address,
            "adapter": state.config.adapter,
            "protocol": (reading and reading["protocol"]) or state.config.protocol,
            "detected_by": reading["detected_by"] if reading else None,
            "model_nbr": reading["model_nbr"] if reading else None,
            "hw_rev": info.get("hw_rev"),
            "sw_rev": info.get("sw_rev"),
            "serial": info.get("serial_number"),
            "gateway_version": __version__,
            "config": state.config.runtime_view(),
            "paused_until": state.paused_until_epoch,
            "counters": {
                "attempts": state.attempts,
                "successes": state.successes,
                "consecutive_failures": state.consecutive_failures,
                "last_error_type": state.last_error_type,
                "last_success": state.last_success,
                "mqtt_dropped": link.dropped,
                "mqtt_queued": link.queued,
            },
        }

    def publish_meta(self, state: DeviceState) -> None:
        self.links[state.name].set_retained(
            self.topic(state.name, "meta"), _dumps(self.meta(state))
        )

    def _on_reading(self, state: DeviceState, reading: Reading) -> None:
        link = self.links[state.name]
        link.publish(self.topic(state.name, "raw"), _dumps(reading))
        ok = reading.get("error") is None
        if ok:
            link.publish(self.topic(state.name, "metrics"), _dumps(to_metrics(reading)))
        link.set_retained(self.topic(state.name, "online"), b"true" if ok else b"false")
        self.publish_meta(state)
        if ok and self.config.homeassistant.enabled:
            self._publish_discovery(state.name, reading)

    def _publish_discovery(self, name: str, reading: Reading) -> None:
        ha = self.config.homeassistant
        configs = discovery.discovery_configs(
            name, reading, base_topic=self.base, prefix=ha.prefix, node_id=self.node_id
        )
        for topic, payload in configs.items():
            self.gateway_link.set_retained(topic, payload)
        previous = set(self.store.discovery.get(name, []))
        for gone in sorted(previous - set(configs)):
            self.gateway_link.clear_retained(gone)
        if previous != set(configs):
            self._save_discovery(name, list(configs))

    def _save_discovery(self, name: str, topics: list[str]) -> None:
        self._in_store_order(self._write_discovery(name, topics))

    async def _write_discovery(self, name: str, topics: list[str]) -> None:
        try:
            await asyncio.to_thread(self.store.set_discovery, name, topics)
        except OSError as err:
            log.warning("state not saved (discovery) error=%s", err)

    def _in_store_order(self, job: Coroutine[Any, Any, None]) -> None:
        async def serialised() -> None:
            async with self._store_lock:
                await job

        task = asyncio.create_task(serialised())
        self._store_tasks.add(task)
        task.add_done_callback(self._store_tasks.discard)

    async def settled(self) -> None:
        """Wait until every state change asked for so far is written (or failed)."""
        while self._store_tasks:
            await asyncio.gather(*self._store_tasks, return_exceptions=True)

    def _start_discovery(self) -> None:
        """Gateway entity on; entities of devices that are gone (or of a disabled HA) cleared."""
        ha = self.config.homeassistant
        keep = set(self.links) if ha.enabled else set()
        for name, topics in list(self.store.discovery.items()):
            if name not in keep:
                for topic in topics:
                    self.gateway_link.clear_retained(topic)
                self._save_discovery(name, [])
        if ha.enabled:
            configs = discovery.gateway_discovery_configs(
                base_topic=self.base, prefix=ha.prefix, node_id=self.node_id
            )
            for topic, payload in configs.items():
                self.gateway_link.set_retained(topic, payload)

    # -- commands -----------------------------------------------------------------------------

    def handle_message(self, topic: str, payload: bytes) -> None:
        """Entry point for every subscribed message; a bad command never raises."""
        prefix = f"{self.base}/jk/"
        if not topic.startswith(prefix):
            return
        name, _, command = topic[len(prefix) :].partition("/")
        if name not in self.links:
            return
        try:
            if command == "cmd/read":
                coalesced = not self.scheduler.request_read(name)
                log.info("cmd/read device=%s coalesced=%s", name, coalesced)
            elif command == "cmd/config":
                self._in_store_order(self._config_command(name, payload))
            elif command == "cmd/pause":
                self.apply_pause(name, payload)
        except Exception:  # a command handler bug must not reach paho's thread or the loop
            log.exception("command failed device=%s topic=%s", name, topic)

    async def _config_command(self, name: str, payload: bytes) -> None:
        try:
            result = await self.apply_remote_config(name, payload)
        except Exception:  # a handler bug must not end the task silently
            log.exception("command failed device=%s topic=cmd/config", name)
            return
        self.links[name].publish(self.topic(name, "cmd/config/result"), _dumps(result))

    async def apply_remote_config(self, name: str, payload: bytes) -> dict[str, Any]:
        """Validate, persist, then apply one cmd/config; the result payload."""
        if not self.config.allow_remote_config:
            return {
                "ok": False,
                "error": "remote configuration is disabled (allow_remote_config: false)",
                "applied": {},
            }
        try:
            overrides = parse_remote_config(payload)
            self._check_unique_address(name, overrides)
        except ConfigError as err:
            log.warning("cmd/config refused device=%s reason=%s", name, err.message)
            return {"ok": False, "error": err.message, "applied": {}}
        merged = {**self.store.overrides.get(name, {}), **overrides}
        new_config = self.file_devices[name].with_overrides(merged)
        try:
            await asyncio.to_thread(self.store.set_overrides, name, merged)
        except OSError as err:
            # Not persisted means not applied: a restart would silently undo it.
            return {"ok": False, "error": f"cannot persist: {err}", "applied": {}}
        self.scheduler.reconfigure(name, new_config)
        state = self.scheduler.devices[name]
        self.publish_meta(state)
        log.info("cmd/config applied device=%s values=%s", name, overrides)
        return {"ok": True, "error": None, "applied": overrides}

    def _check_unique_address(self, name: str, overrides: dict[str, Any]) -> None:
        address = overrides.get("address")
        if address is None:
            return
        for other, state in self.scheduler.devices.items():
            if other != name and state.config.address == address:
                raise ConfigError(f"{address} is already device {other!r}", key="address")

    def apply_pause(self, name: str, payload: bytes) -> None:
        try:
            raw = json.loads(payload[:4096].decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            log.warning("cmd/pause ignored device=%s reason=not JSON", name)
            return
        minutes = raw.get("minutes") if isinstance(raw, dict) else None
        if (
            isinstance(minutes, bool)
            or not isinstance(minutes, int | float)
            or not math.isfinite(minutes)
            or not 0 <= minutes <= MAX_PAUSE_MINUTES
        ):
            log.warning(
                "cmd/pause ignored device=%s reason=minutes must be 0..%d",
                name,
                MAX_PAUSE_MINUTES,
            )
            return
        self.scheduler.pause(name, float(minutes))
        log.info("cmd/pause device=%s minutes=%s", name, minutes)
        self.publish_meta(self.scheduler.devices[name])

    # -- life cycle ---------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set, then shut down cleanly (online false everywhere)."""
        self.gateway_link.set_retained(f"{self.base}/gateway/online", b"true")
        self._start_discovery()
        for state in self.scheduler.devices.values():
            # Not online until a read succeeds (docs/mqtt.md: online = last read succeeded).
            self.links[state.name].set_retained(self.topic(state.name, "online"), b"false")
            self.publish_meta(state)
        for link in [self.gateway_link, *self.links.values()]:
            link.start()
        scheduler = asyncio.create_task(self.scheduler.run(), name="scheduler")
        watchdog = asyncio.create_task(self._watchdog(), name="watchdog")
        self.notifier.send("READY=1", f"STATUS=polling {len(self.links)} device(s)")
        log.info("gateway started devices=%d", len(self.links))
        stopping = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({scheduler, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if scheduler.done() and not scheduler.cancelled() and scheduler.exception():
                self.failed = True
                log.error("scheduler ended error=%r", scheduler.exception())
        finally:
            self.notifier.send("STOPPING=1")
            stopping.cancel()
            watchdog.cancel()
            await self._shutdown(scheduler)

    async def _shutdown(self, scheduler: asyncio.Task[None]) -> None:
        scheduler.cancel()
        # Cancelling a read makes the reader release notifications and disconnect.
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            async with asyncio.timeout(SHUTDOWN_READS_S):
                await asyncio.gather(scheduler, return_exceptions=True)
                await self.settled()  # a cmd/config being saved still gets its result out
        for name, link in self.links.items():
            link.set_retained(self.topic(name, "online"), b"false")
        self.gateway_link.set_retained(f"{self.base}/gateway/online", b"false")
        links = [self.gateway_link, *self.links.values()]
        await asyncio.gather(*(link.close(SHUTDOWN_MQTT_S) for link in links))
        log.info("gateway stopped")

    async def _watchdog(self) -> None:
        interval = watchdog_interval_s()
        if interval is None:
            return
        while True:
            await asyncio.sleep(interval)
            stuck = self.scheduler.stuck()
            if stuck:
                # Not feeding the watchdog lets systemd restart a gateway that stopped reading.
                log.error("scheduler stuck devices=%s watchdog not fed", ",".join(stuck))
                continue
            self.notifier.send("WATCHDOG=1")
