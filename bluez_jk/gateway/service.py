"""The gateway process: scheduler + MQTT links + commands + state + systemd notification.

Topics and payloads are those of docs/mqtt.md. Every device has its own MQTT link (see
mqtt.py for why); the gateway link carries `B/gateway/online` and Home Assistant discovery.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import math
import time
from collections.abc import Callable, Coroutine
from typing import Any

from bluez_jk import __version__
from bluez_jk.errors import ConfigError, Paused
from bluez_jk.gateway import discovery
from bluez_jk.gateway.audit import AuditLog
from bluez_jk.gateway.config import (
    DeviceConfig,
    GatewayConfig,
    parse_remote_config,
)
from bluez_jk.gateway.control import ControlService, WriteFn
from bluez_jk.gateway.derived import TICK_S, DerivedOutputs, Message
from bluez_jk.gateway.logbook_cmd import LogbookService
from bluez_jk.gateway.metrics import Number, to_metrics
from bluez_jk.gateway.mqtt import MqttLink, default_client_id, node_name
from bluez_jk.gateway.notify import Notifier, watchdog_interval_s
from bluez_jk.gateway.overrides import resolve
from bluez_jk.gateway.scheduler import AdapterPower, Clock, DeviceState, ReaderLike, Scheduler
from bluez_jk.gateway.state import StateStore
from bluez_jk.reader import Reader
from bluez_jk.reading import Reading, error_reading
from bluez_jk.writer import write_and_verify

log = logging.getLogger(__name__)
COMMANDS = ("cmd/read", "cmd/config", "cmd/pause", "cmd/set", "cmd/logbook")

# One pause, renewals included, lasts at most this long (see Scheduler.pause_refusal).
MAX_PAUSE_MINUTES = 24 * 60
# Commands per device: COMMAND_BURST at once, then COMMAND_RATE_PER_S; the rest is dropped
# (counted in meta, logged at most every COMMAND_LOG_EVERY_S). A person or an automation
# never comes near this; a flood of 20,000 commands in 3 s does.
COMMAND_RATE_PER_S = 5.0
COMMAND_BURST = 20.0
COMMAND_LOG_EVERY_S = 10.0
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
        writer: WriteFn | None = None,
    ) -> None:
        self.config = config
        self.base = config.mqtt.base_topic
        # The discovery node id keeps its old default (Home Assistant entity ids hang on it);
        # the MQTT client ids get one unique per installation.
        self.node_id = config.mqtt.client_id or node_name()
        client_id = config.mqtt.client_id or default_client_id(self.base)
        self.notifier = notifier or Notifier()
        self.store = StateStore(config.state_dir)
        self.store.load()
        # File values per device; runtime overrides are layered on top of these.
        self.file_devices = {d.name: d for d in config.devices}
        self.overrides = self._startup_overrides()
        devices = [self._effective(d) for d in config.devices]
        self.scheduler = Scheduler(
            reader,
            devices,
            self._on_reading,
            clock=clock,
            power=reader if isinstance(reader, AdapterPower) else None,
            recovery=config.adapter_recovery,
        )
        self.gateway_link = link_factory(
            config.mqtt,
            client_id=f"{client_id}-gateway",
            will_topic=f"{self.base}/gateway/online",
            on_health=self.report_health,
        )
        self.links: dict[str, MqttLink] = {}
        self._command_tokens: dict[str, tuple[float, float]] = {}
        self._dropped_logged: dict[str, float] = {}
        self.commands_dropped: dict[str, int] = {}
        self.failed = False
        self._status: str | None = None
        # Home Assistant device identifier -> the device that claimed it first.
        self._ha_identifiers: dict[str, str] = {}
        self._ha_collisions: set[str] = set()
        # What each device's discovery configs were last built from (discovery.discovery_key).
        self._discovery_keys: dict[str, tuple[object, ...]] = {}
        # State file writes wait on the disk (two fsyncs), so they run on a worker thread, one
        # at a time and in the order asked; the tasks are kept so that shutdown can wait.
        self._store_lock = asyncio.Lock()
        self._store_tasks: set[asyncio.Task[None]] = set()
        for device in devices:
            prefix = self.topic(device.name, "")
            self.links[device.name] = link_factory(
                config.mqtt,
                client_id=f"{client_id}-{device.name}",
                will_topic=f"{prefix}online",
                subscriptions=[prefix + command for command in COMMANDS],
                on_message=self.handle_message,
                on_health=self.report_health,
            )
        if writer is None and isinstance(reader, Reader):
            writer = functools.partial(write_and_verify, reader)
        self.control = ControlService(self, writer, AuditLog(config.state_dir))
        # Victron output and banks (off unless configured): docs/mqtt.md, "Banks".
        self.derived = DerivedOutputs(
            config,
            self.topic,
            _dumps,
            publish_discovery=self._publish_configs,
            node_id=self.node_id,
        )
        self.logbook = LogbookService(self)

    def topic(self, name: str, leaf: str) -> str:
        return f"{self.base}/jk/{name}/{leaf}"

    def _startup_overrides(self) -> dict[str, dict[str, Any]]:
        """The stored overrides that apply now (overrides.py has the rules); every override
        in force or set aside is logged, and what was dropped is saved."""
        found = resolve(
            self.file_devices,
            self.store.overrides,
            self.store.bases,
            allowed=self.config.allow_remote_config,
        )
        for note in found.notes:
            log.info("runtime config %s", note)
        for name in sorted(found.changed):
            try:
                self.store.set_overrides(name, found.kept[name], found.kept_bases[name])
            except OSError as err:
                log.warning("state not saved (runtime config) device=%s error=%s", name, err)
        return found.effective

    def _effective(self, device: DeviceConfig) -> DeviceConfig:
        overrides = self.overrides.get(device.name, {})
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
            "logbook": self.logbook.meta(state.name),
            "counters": {
                "attempts": state.attempts,
                "successes": state.successes,
                "consecutive_failures": state.consecutive_failures,
                "last_error_type": state.last_error_type,
                "last_success": state.last_success,
                "mqtt_dropped": link.dropped,
                "mqtt_answers_dropped": link.answers_dropped,
                "commands_dropped": self.commands_dropped.get(state.name, 0),
                "mqtt_queued": link.queued,
                "adapter_power_cycles": self.scheduler.health.cycles(state.config.adapter),
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
        metrics = to_metrics(reading) if ok else None
        if metrics is not None:
            link.publish(self.topic(state.name, "metrics"), _dumps(metrics))
        link.set_retained(self.topic(state.name, "online"), b"true" if ok else b"false")
        self.publish_meta(state)
        warnings = reading["status"].get("warnings") or {}
        now = self.scheduler.clock.now()
        self._publish_derived(lambda: self.derived.on_reading(state.name, metrics, warnings, now))
        if metrics is not None and self.config.homeassistant.enabled:
            self._publish_discovery(state.name, reading, metrics)

    def _ha_by_address(self, name: str, reading: Reading) -> bool:
        """True when another device of this gateway already uses this reading's identifier
        (two BMS reporting one serial): Home Assistant would merge or reject them, so this one
        is identified by its MAC instead."""
        wanted = discovery.device_identifier(reading)
        owner = self._ha_identifiers.setdefault(wanted, name)
        if owner == name:
            return False
        if name not in self._ha_collisions:
            self._ha_collisions.add(name)
            log.warning(
                "home assistant identifier collision device=%s other=%s identifier=%s: "
                "both report serial %s, identifying %s by its address %s instead",
                name,
                owner,
                wanted,
                reading["status"]["device_info"].get("serial_number"),
                name,
                reading["address"],
            )
        return True

    def _publish_derived(self, produce: Callable[[], list[Message]]) -> None:
        """Publish what the Victron/bank outputs produce; a bug there is logged and must not
        stop the readings or the other devices."""
        try:
            messages = produce()
        except Exception:
            log.exception("victron/bank outputs failed")
            return
        for message in messages:
            link = self.links[message.device] if message.device else self.gateway_link
            if message.retained:
                link.set_retained(message.topic, message.payload)
            else:
                link.publish(message.topic, message.payload)

    async def _derived_ticks(self) -> None:
        while self.derived.active:
            await asyncio.sleep(TICK_S)
            self._publish_derived(lambda: self.derived.tick(self.scheduler.clock.now()))

    def _publish_discovery(
        self, name: str, reading: Reading, metrics: dict[str, Number] | None = None
    ) -> None:
        """`metrics`: the reading's, when the caller has them already."""
        ha = self.config.homeassistant
        if metrics is None:
            metrics = to_metrics(reading)
        switches = self.control.switches(name)
        by_address = self._ha_by_address(name, reading)
        key = discovery.discovery_key(reading, metrics, switches=switches, by_address=by_address)
        if self._discovery_keys.get(name) == key:
            return  # the same configs as last time, all retained on the broker already
        configs = discovery.discovery_configs(
            name,
            reading,
            base_topic=self.base,
            prefix=ha.prefix,
            node_id=self.node_id,
            switches=switches,
            by_address=by_address,
        )
        self._publish_configs(name, configs)
        self._discovery_keys[name] = key

    def _publish_configs(self, name: str, configs: dict[str, str]) -> None:
        """Publish a device's (or bank's) discovery set; clear what it no longer has."""
        for topic, payload in configs.items():
            self.gateway_link.set_retained(topic, payload)
        previous = set(self.store.discovery.get(name, []))
        for gone in sorted(previous - set(configs)):
            self.gateway_link.clear_retained(gone)
        if previous != set(configs):
            self._save_discovery(name, list(configs))

    def _save_discovery(self, name: str, topics: list[str]) -> None:
        self.in_store_order(self._write_discovery(name, topics))

    async def _write_discovery(self, name: str, topics: list[str]) -> None:
        try:
            await asyncio.to_thread(self.store.set_discovery, name, topics)
        except OSError as err:
            log.warning("state not saved (discovery) error=%s", err)

    def in_store_order(self, job: Coroutine[Any, Any, None]) -> None:
        """Run `job` after every state_dir write asked for before it (state file, audit
        trail); `settled` waits for it."""

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
        keep = set(self.links) | self.derived.bank_names() if ha.enabled else set()
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
        if command not in COMMANDS or not self._allow_command(name):
            return
        try:
            if command == "cmd/read":
                if self._paused(name):
                    self._answer_paused(name)
                    return
                coalesced = not self.scheduler.request_read(name)
                log.info("cmd/read device=%s coalesced=%s", name, coalesced)
            elif command == "cmd/config":
                self.in_store_order(self._config_command(name, payload))
            elif command == "cmd/pause":
                self._answer(name, "cmd/pause/result", self.apply_pause(name, payload))
            elif command == "cmd/set":
                self.control.handle(name, payload)
            elif command == "cmd/logbook":
                self.logbook.handle(name, payload)
        except Exception:  # a command handler bug must not reach paho's thread or the loop
            log.exception("command failed device=%s topic=%s", name, topic)
            if command != "cmd/read":  # still answered: the sender is waiting for a result
                failed: dict[str, Any] = {"ok": False, "error": "internal error, see the log"}
                if command == "cmd/config":
                    failed["applied"] = {}
                elif command == "cmd/pause":
                    failed["paused_until"] = self.scheduler.devices[name].paused_until_epoch
                self._answer(name, f"{command}/result", failed)

    def _answer(self, name: str, leaf: str, result: dict[str, Any]) -> None:
        self.links[name].publish(self.topic(name, leaf), _dumps(result), answer=True)

    def _paused(self, name: str) -> bool:
        state = self.scheduler.devices[name]
        return state.paused_until is not None and self.scheduler.clock.now() < state.paused_until

    def _answer_paused(self, name: str) -> None:
        """A read request on a paused device gets a `raw` with a Paused error at once, instead
        of silence that a waiting client can only take for a timeout."""
        state = self.scheduler.devices[name]
        until = state.paused_until_epoch or time.time()
        error = Paused.until(name, until, self.topic(name, "cmd/pause"))
        config = state.config
        reading = error_reading(name, config.address, config.adapter, error)
        self.links[name].publish(self.topic(name, "raw"), _dumps(reading))
        log.info("cmd/read device=%s answered=Paused until_epoch=%.0f", name, until)

    async def _config_command(self, name: str, payload: bytes) -> None:
        try:
            result = await self.apply_remote_config(name, payload)
        except Exception:  # a handler bug must not end the task silently; still answered
            log.exception("command failed device=%s topic=cmd/config", name)
            result = {"ok": False, "error": "internal error, see the log", "applied": {}}
        self._answer(name, "cmd/config/result", result)

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
        file_device = self.file_devices[name]
        merged = {**self.overrides.get(name, {}), **overrides}
        bases = {
            **self.store.bases.get(name, {}),
            **{key: getattr(file_device, key) for key in overrides},
        }
        new_config = file_device.with_overrides(merged)
        try:
            await asyncio.to_thread(self.store.set_overrides, name, merged, bases)
        except OSError as err:
            # Not persisted means not applied: a restart would silently undo it.
            return {"ok": False, "error": f"cannot persist: {err}", "applied": {}}
        self.overrides[name] = merged
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

    def apply_pause(self, name: str, payload: bytes) -> dict[str, Any]:
        """Validate and apply one cmd/pause; the result payload (`cmd/pause/result`)."""
        state = self.scheduler.devices[name]

        def refused(reason: str) -> dict[str, Any]:
            log.warning("cmd/pause refused device=%s reason=%s", name, reason)
            return {"ok": False, "error": reason, "paused_until": state.paused_until_epoch}

        if not self.config.allow_remote_config:
            return refused("remote configuration is disabled (allow_remote_config: false)")
        try:
            raw = json.loads(payload[:4096].decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            return refused("not valid JSON")
        minutes = raw.get("minutes") if isinstance(raw, dict) else None
        if (
            isinstance(minutes, bool)
            or not isinstance(minutes, int | float)
            # A float only: math.isfinite() of a 400-digit int raises OverflowError.
            or (isinstance(minutes, float) and not math.isfinite(minutes))
            or not 0 <= minutes <= MAX_PAUSE_MINUTES
        ):
            return refused(f"minutes must be a number from 0 to {MAX_PAUSE_MINUTES}")
        if minutes > 0:
            reason = self.scheduler.pause_refusal(name, float(minutes), MAX_PAUSE_MINUTES)
            if reason is not None:
                return refused(reason)
        self.scheduler.pause(name, float(minutes))
        log.info("cmd/pause device=%s minutes=%s", name, minutes)
        self.publish_meta(state)
        return {"ok": True, "error": None, "paused_until": state.paused_until_epoch}

    def _allow_command(self, name: str) -> bool:
        """Per-device token bucket: a flood of commands costs little and is logged rarely."""
        now = self.scheduler.clock.now()
        tokens, last = self._command_tokens.get(name, (COMMAND_BURST, now))
        tokens = min(COMMAND_BURST, tokens + (now - last) * COMMAND_RATE_PER_S)
        if tokens < 1.0:
            self._command_tokens[name] = (tokens, now)
            dropped = self.commands_dropped.get(name, 0) + 1
            self.commands_dropped[name] = dropped
            if now - self._dropped_logged.get(name, -math.inf) >= COMMAND_LOG_EVERY_S:
                self._dropped_logged[name] = now
                log.warning(
                    "commands ignored device=%s dropped=%d reason=more than %g per second",
                    name,
                    dropped,
                    COMMAND_RATE_PER_S,
                )
            return False
        self._command_tokens[name] = (tokens - 1.0, now)
        return True

    # -- health -------------------------------------------------------------------------------

    def status_line(self) -> str:
        """The one-line health systemd shows (`systemctl status`, sd_notify STATUS)."""
        links = [self.gateway_link, *self.links.values()]
        line = f"polling {len(self.links)} device(s)"
        problems = [link.problem for link in links if link.problem]
        mqtt = self.config.mqtt
        if problems:
            return f"{line}; MQTT {mqtt.host}:{mqtt.port} NOT CONNECTED: {problems[0]}"
        if all(link.connected for link in links):
            return f"{line}; MQTT {mqtt.host}:{mqtt.port} connected"
        return f"{line}; MQTT {mqtt.host}:{mqtt.port} connecting"

    def report_health(self) -> None:
        line = self.status_line()
        if line != self._status:
            self._status = line
            self.notifier.send(f"STATUS={line}")

    # -- life cycle ---------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set, then shut down cleanly (online false everywhere)."""
        self.gateway_link.set_retained(f"{self.base}/gateway/online", b"true")
        self._start_discovery()
        for state in self.scheduler.devices.values():
            # Not online until a read succeeds (docs/mqtt.md: online = last read succeeded).
            self.links[state.name].set_retained(self.topic(state.name, "online"), b"false")
            self.publish_meta(state)
        self._publish_derived(self.derived.startup)
        for link in [self.gateway_link, *self.links.values()]:
            link.start()
        scheduler = asyncio.create_task(self.scheduler.run(), name="scheduler")
        ticks = asyncio.create_task(self._derived_ticks(), name="derived")
        watchdog = asyncio.create_task(self._watchdog(), name="watchdog")
        logbook = asyncio.create_task(self.logbook.run(), name="logbook")
        self._status = self.status_line()
        self.notifier.send("READY=1", f"STATUS={self._status}")
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
            ticks.cancel()
            logbook.cancel()
            await self._shutdown(scheduler)

    async def _shutdown(self, scheduler: asyncio.Task[None]) -> None:
        await self.control.close(1.0)  # a cancelled write session cleans up within ~0.1 s
        await self.logbook.close(1.0)  # a cancelled read session, as well
        scheduler.cancel()
        # Cancelling a read makes the reader release notifications and disconnect.
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            async with asyncio.timeout(SHUTDOWN_READS_S):
                await asyncio.gather(scheduler, return_exceptions=True)
                await self.settled()  # a cmd/config being saved still gets its result out
        for name, link in self.links.items():
            link.set_retained(self.topic(name, "online"), b"false")
        self._publish_derived(self.derived.offline)
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
