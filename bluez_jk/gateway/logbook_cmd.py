"""The BMS's event log in the gateway: `cmd/logbook` reads it now and answers with every entry
kept, and a device with `logbook.interval_s` is read that often; either way the entries not
seen before are stored (logbook.py) and published on `<name>/logbook`, one message each, not
retained. docs/mqtt.md has the payloads, docs/config.md the `logbook` keys.

A logbook read is a read session of its own (0x97, 0x96, then 0xA1), taking its turn on the
adapter like a scheduled read; its values are published as the device's latest Reading.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from typing import TYPE_CHECKING, Any

from bluez_jk.gateway.logbook import LogbookStore, StoredEntry
from bluez_jk.gateway.scheduler import DeviceState, request_for

if TYPE_CHECKING:
    from bluez_jk.gateway.service import Gateway

log = logging.getLogger(__name__)

MAX_PAYLOAD_BYTES = 4096
# The reader bounds itself by timeout_s; this only catches one that hangs (as for reads).
READ_GRACE_S = 30.0
# The first periodic read after a start waits for at most this long (or interval_s if
# shorter), unless the stored last read says the logbook is not due yet.
FIRST_DELAY_S = 10.0


class BadRequest(ValueError):
    """A cmd/logbook payload that is not `{}`, `{"read": true|false}` or empty."""


def parse_request(payload: bytes) -> bool:
    """Whether the request wants the BMS read now (else: only the stored entries)."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise BadRequest(f"payload of {len(payload)} bytes is larger than {MAX_PAYLOAD_BYTES}")
    if not payload.strip():
        return True
    try:
        raw = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise BadRequest("not valid JSON") from None
    if not isinstance(raw, dict):
        raise BadRequest('must be a JSON object such as {"read": true}')
    unknown = sorted(str(k)[:40] for k in raw if k != "read")
    if unknown:
        raise BadRequest(f"unknown key {unknown[0]!r} (allowed: read)")
    read = raw.get("read", True)
    if not isinstance(read, bool):
        raise BadRequest("read must be true or false")
    return read


class LogbookService:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.stores: dict[str, LogbookStore] = {}
        self._store_locks: dict[str, asyncio.Lock] = {}
        self._reads: dict[str, asyncio.Task[tuple[list[StoredEntry], str | None]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # -- the store ----------------------------------------------------------------------------

    async def store(self, name: str) -> LogbookStore:
        """The device's store, loaded from disk (on a worker thread) on first use."""
        lock = self._store_locks.setdefault(name, asyncio.Lock())
        async with lock:
            store = self.stores.get(name)
            if store is None:
                store = LogbookStore(self.gateway.config.state_dir, name)
                await asyncio.to_thread(store.load)
                self.stores[name] = store
            return store

    # -- cmd/logbook --------------------------------------------------------------------------

    def handle(self, name: str, payload: bytes) -> None:
        task = asyncio.get_running_loop().create_task(
            self._command(name, payload), name=f"logbook-cmd-{name}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _command(self, name: str, payload: bytes) -> None:
        try:
            result = await self.answer(name, payload)
        except asyncio.CancelledError:
            # Answered even now: the sender waits for a result.
            self._answer(name, _result(False, "cancelled: the gateway is stopping"))
            raise
        except Exception:  # a handler bug must not end the task silently; still answered
            log.exception("command failed device=%s topic=cmd/logbook", name)
            result = _result(False, "internal error, see the log")
        self._answer(name, result)

    def _answer(self, name: str, result: dict[str, Any]) -> None:
        gateway = self.gateway
        topic = gateway.topic(name, "cmd/logbook/result")
        gateway.links[name].publish(topic, _compact(result), answer=True)

    async def answer(self, name: str, payload: bytes) -> dict[str, Any]:
        """The `cmd/logbook/result` payload for one request."""
        state = self.gateway.scheduler.devices[name]
        if not state.config.logbook.enabled:
            return _refused(name, "the logbook is off for this device (logbook.enabled: false)")
        try:
            read = parse_request(payload)
        except BadRequest as err:
            return _refused(name, str(err))
        store = await self.store(name)
        new: list[StoredEntry] = []
        error = None
        if read:
            reason = self.refusal(state)
            if reason is not None:
                log.warning("cmd/logbook refused device=%s reason=%s", name, reason)
                return _result(False, reason, read=False, entries=store.entries)
            new, error = await self.refresh(name)
        log.info("cmd/logbook device=%s read=%s new=%d error=%s", name, read, len(new), error)
        return _result(error is None, error, read=read, new=len(new), entries=store.entries)

    def refusal(self, state: DeviceState) -> str | None:
        """Why the BMS cannot be read for its logbook now, or None."""
        now = self.gateway.scheduler.clock.now()
        if state.paused_until is not None and now < state.paused_until:
            return "the device is paused (cmd/pause); resume it to read the logbook"
        if state.config.keep_connected:
            return "the logbook cannot be read with keep_connected yet"
        return None

    # -- reading it ---------------------------------------------------------------------------

    async def refresh(self, name: str) -> tuple[list[StoredEntry], str | None]:
        """Read the logbook now (requests that come meanwhile share this read); the new
        entries, and why the read failed or None."""
        task = self._reads.get(name)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._refresh(name))
            self._reads[name] = task
            task.add_done_callback(lambda _: self._reads.pop(name, None))
        return await asyncio.shield(task)

    async def _refresh(self, name: str) -> tuple[list[StoredEntry], str | None]:
        scheduler = self.gateway.scheduler
        state = scheduler.devices[name]
        config = state.config
        request = dataclasses.replace(request_for(config), logbook=True)
        try:
            # One BLE operation per adapter: the logbook read takes its turn like a read.
            async with scheduler.gate(config.adapter).turn(0 if state.healthy else 1):
                async with asyncio.timeout(config.timeout_s + READ_GRACE_S):
                    reading = await scheduler.reader.read(request)
        except TimeoutError:
            return [], "the reader did not return"
        logbook = reading.pop("logbook", None)
        # The session read everything: its values are the device's latest (the raw payload
        # stays as documented, without the logbook).
        scheduler.record(state, reading)
        if logbook is None or logbook["status"] != "ok":
            error = reading["error"]
            if logbook is not None and logbook["status"] == "unsupported":
                return [], str(logbook["message"])
            if error is not None:
                return [], f"{error['type']}: {error['message']}"
            return [], str(logbook["message"] if logbook else "the reader gave no logbook")
        store = await self.store(name)
        try:
            new = await asyncio.to_thread(store.merge, logbook["entries"])
        except OSError as err:
            log.warning("logbook not saved device=%s error=%s", name, err)
            return [], f"cannot persist: {err}"
        link = self.gateway.links[name]
        topic = self.gateway.topic(name, "logbook")
        for entry in new:
            link.publish(topic, _compact(entry))
        self.gateway.publish_meta(state)  # its `logbook` count and last read
        return new, None

    # -- periodic reads -----------------------------------------------------------------------

    async def run(self) -> None:
        """Load the stores of the devices that keep a logbook (a damaged file is reported at
        start), then read every device with `logbook.interval_s` > 0 that often, until
        cancelled."""
        enabled = {
            name: state.config.logbook
            for name, state in self.gateway.scheduler.devices.items()
            if state.config.logbook.enabled
        }
        for name in enabled:
            await self.store(name)
        async with asyncio.TaskGroup() as group:
            for name, logbook in enabled.items():
                if logbook.interval_s > 0:
                    group.create_task(self._periodic(name), name=f"logbook-{name}")

    def meta(self, name: str) -> dict[str, Any] | None:
        """`meta`'s `logbook`: entries kept and the last read that got the logbook."""
        if not self.gateway.scheduler.devices[name].config.logbook.enabled:
            return None
        store = self.stores.get(name)
        if store is None:
            return {"count": None, "last_read": None}
        return {"count": len(store.entries), "last_read": store.last_read}

    async def _periodic(self, name: str) -> None:
        store = await self.store(name)
        interval = self.gateway.scheduler.devices[name].config.logbook.interval_s
        due = time.time() + min(FIRST_DELAY_S, interval)
        if store.last_read is not None:
            due = max(due, store.last_read + interval)
        while True:
            await asyncio.sleep(max(due - time.time(), 0.0))
            reason = self.refusal(self.gateway.scheduler.devices[name])
            try:
                if reason is None:
                    new, error = await self.refresh(name)
                    log.info("logbook read device=%s new=%d error=%s", name, len(new), error)
                else:
                    log.info("logbook read skipped device=%s reason=%s", name, reason)
            except Exception:  # one failed round must not end the periodic reads
                log.exception("logbook read failed device=%s", name)
            due = time.time() + interval

    async def close(self, timeout_s: float) -> None:
        """Cancel commands in flight (each still answers)."""
        tasks: list[asyncio.Task[Any]] = [*self._tasks, *self._reads.values()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout_s)


def _result(
    ok: bool,
    error: str | None,
    *,
    read: bool = False,
    new: int = 0,
    entries: list[StoredEntry] | None = None,
) -> dict[str, Any]:
    entries = entries or []
    return {
        "ok": ok,
        "error": error,
        "read": read,
        "new": new,
        "count": len(entries),
        "entries": entries,
    }


def _refused(name: str, reason: str) -> dict[str, Any]:
    log.warning("cmd/logbook refused device=%s reason=%s", name, reason)
    return _result(False, reason)


def _compact(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()
