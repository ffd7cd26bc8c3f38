"""`cmd/set`: checked by `control.policy`, written and verified by `writer`, answered on
`cmd/set/result` and recorded in the audit trail (file and `audit` topic). docs/mqtt.md has
the payloads, README.md ("Control (off by default)") the safety model.

Every request ends in exactly one result and one audit record: refused (with the reason),
dry run (the frame and the checks, nothing written), verified, not verified, or failed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from bluez_jk.control.policy import (
    SWITCHES,
    Refused,
    SetRequest,
    check,
    frame_for,
    parse_set_request,
    register_value,
    require_enabled,
)
from bluez_jk.gateway.audit import AuditLog, utc_timestamp
from bluez_jk.gateway.scheduler import DeviceState, request_for
from bluez_jk.reader import ReadRequest
from bluez_jk.writer import WriteOutcome

if TYPE_CHECKING:
    from bluez_jk.gateway.service import Gateway

log = logging.getLogger(__name__)

WriteFn = Callable[[ReadRequest, str, float], Awaitable[WriteOutcome]]
# Outcomes of requests that went to the BMS (the others never left the gateway).
WRITE_OUTCOMES = ("verified", "not_verified", "failed")
# The writer bounds itself by timeout_s; this only catches one that hangs (as for reads).
WRITE_GRACE_S = 30.0


def request_view(payload: bytes) -> dict[str, Any]:
    """What the audit shows of a request: the parsed request, or the start of the payload."""
    try:
        return parse_set_request(payload).as_dict()
    except Refused:
        return {"payload": payload[:200].decode("utf-8", "replace")}


def result_payload(
    request: SetRequest | None,
    *,
    ok: bool,
    verified: bool = False,
    before: Any = None,
    after: Any = None,
    frame: bytes | None = None,
    checks: list[str] | None = None,
    reason: str | None = None,
    error: str | None = None,
) -> dict[str, Any]:
    return {
        "ok": ok,
        "verified": verified,
        "dry_run": request.dry_run if request is not None else False,
        "setting": request.name if request is not None else None,
        "value": request.value if request is not None else None,
        "before": before,
        "after": after,
        "frame": frame.hex() if frame is not None else None,
        "checks": checks or [],
        "reason": reason,
        "error": error,
    }


class ControlService:
    def __init__(self, gateway: Gateway, writer: WriteFn | None, audit: AuditLog) -> None:
        self.gateway = gateway
        self.writer = writer
        self.audit = audit
        self.writing: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def switches(self, name: str) -> tuple[str, ...]:
        """The switches Home Assistant may offer for `name`: enabled and allowed ones only."""
        control = self.gateway.scheduler.devices[name].config.control
        return tuple(s for s in SWITCHES if control.enabled and s in control.allow)

    # -- one request --------------------------------------------------------------------------

    def handle(self, name: str, payload: bytes, source: str = "mqtt") -> None:
        state = self.gateway.scheduler.devices[name]
        view = request_view(payload)
        request: SetRequest | None = None
        try:
            # Disabled is refused first, whatever the payload (it is only quoted in the audit).
            require_enabled(state.config.control.enabled)
            request = parse_set_request(payload)
            checks = self._checks(state, request)
        except Refused as refused:
            result = result_payload(request, ok=False, reason=refused.code, error=refused.message)
            self._finish(name, source, view, "refused", result)
            return
        protocol = self._protocol(state)
        assert protocol is not None  # the checks refuse a device without data
        before = self._current(state, request)
        if request.dry_run:
            try:
                frame = frame_for(protocol, request)
            except Refused as refused:
                result = result_payload(request, ok=False, reason=refused.code,
                                        error=refused.message)  # fmt: skip
                self._finish(name, source, view, "refused", result)
                return
            result = result_payload(request, ok=True, before=before, frame=frame,
                                    checks=[*checks, "frame"])  # fmt: skip
            self._finish(name, source, view, "dry_run", result)
            return
        self.writing.add(name)
        task = asyncio.get_running_loop().create_task(
            self._write(state, request, checks, source, view), name=f"write-{name}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _checks(self, state: DeviceState, request: SetRequest) -> list[str]:
        control = state.config.control
        last = state.last_success
        checks = check(
            request,
            enabled=control.enabled,
            allow=control.allow,
            protocol=self._protocol(state),
            age_s=None if last is None else max(time.time() - last, 0.0),
            max_age_s=control.max_age_s,
        )
        if state.paused_until is not None:
            raise Refused("busy", "the device is paused (cmd/pause); resume it to write")
        if state.config.keep_connected:
            raise Refused("unsupported", "writes are not supported with keep_connected yet")
        if state.name in self.writing:
            raise Refused("busy", "another write to this device is in progress")
        return [*checks, "idle"]

    @staticmethod
    def _protocol(state: DeviceState) -> Any:
        reading = state.last_reading
        return (reading and reading["protocol"]) or state.config.protocol

    @staticmethod
    def _current(state: DeviceState, request: SetRequest) -> Any:
        reading = state.last_reading
        return reading["status"]["settings"].get(request.writable.key) if reading else None

    async def _write(
        self,
        state: DeviceState,
        request: SetRequest,
        checks: list[str],
        source: str,
        view: dict[str, Any],
    ) -> None:
        name = state.name
        writable = request.writable
        try:
            if self.writer is None:
                result = result_payload(request, ok=False, checks=checks, reason="unsupported",
                                        error="this gateway's reader cannot write")  # fmt: skip
                self._finish(name, source, view, "failed", result)
                return
            config = state.config
            value = register_value(writable, request.value)
            # One BLE operation per adapter: the write takes its turn like a read does.
            async with self.gateway.scheduler.gate(config.adapter).turn(0):
                async with asyncio.timeout(config.timeout_s + WRITE_GRACE_S):
                    outcome = await self.writer(request_for(config), writable.key, value)
        except TimeoutError:
            result = result_payload(request, ok=False, checks=checks, reason="failed",
                                    error="the writer did not return; the frame may have gone "
                                    "out, check the settings before trying again")  # fmt: skip
            self._finish(name, source, view, "failed", result)
            return
        except asyncio.CancelledError:
            result = result_payload(request, ok=False, checks=checks, reason="failed",
                                    error="cancelled: the gateway is stopping")  # fmt: skip
            self._finish(name, source, view, "failed", result)
            raise
        finally:
            self.writing.discard(name)
        error = outcome.error
        if outcome.written and outcome.verified:
            status = "verified"
        elif outcome.written and error is None:
            status = "not_verified"
        else:
            status = "failed"
        message = None
        if error is not None:
            message = f"{error['type']}: {error['message']}"
        elif not outcome.verified:
            message = (
                f"the BMS did not take the value: {writable.key} reads {outcome.after!r} after "
                f"writing {value!r} (out of its range, or it refuses writes)"
            )
        result = result_payload(
            request,
            ok=outcome.verified,
            verified=outcome.verified,
            before=outcome.before,
            after=outcome.after,
            frame=outcome.frame,
            checks=checks,
            reason=None if outcome.verified else status,
            error=message,
        )
        self._finish(name, source, view, status, result)
        if outcome.reading is not None:
            # The session read everything: publish it as this device's latest Reading, so
            # the new switch state shows without another connection (the BMS beeps at each).
            self.gateway.scheduler.record(state, outcome.reading)

    def _finish(
        self, name: str, source: str, view: dict[str, Any], outcome: str, result: dict[str, Any]
    ) -> None:
        gateway = self.gateway
        record = {
            "time": utc_timestamp(),
            "device": name,
            "source": source,
            "request": view,
            "outcome": outcome,
            "reason": result["reason"],
            "error": result["error"],
            "before": result["before"],
            "after": result["after"],
            "frame": result["frame"],
        }
        log.info("cmd/set device=%s source=%s outcome=%s reason=%s", name, source, outcome,
                 result["reason"])  # fmt: skip
        # The audit line waits on the disk (an fsync for a write that went out): on a worker
        # thread, in order with the other state_dir writes. The answers follow it, so a result
        # is never out before its audit record is on disk.
        gateway.in_store_order(self._record(name, record, result, outcome in WRITE_OUTCOMES))

    async def _record(
        self, name: str, record: dict[str, Any], result: dict[str, Any], durable: bool
    ) -> None:
        gateway = self.gateway
        try:
            await asyncio.to_thread(self.audit.append, record, durable=durable)
        finally:  # answered even if this task is cancelled: the sender waits for a result
            link = gateway.links[name]
            link.publish(gateway.topic(name, "audit"), _compact(record), answer=True)
            link.publish(gateway.topic(name, "cmd/set/result"), _compact(result), answer=True)

    async def close(self, timeout_s: float) -> None:
        """Cancel writes in flight (their sessions clean up and are audited as failed; the
        audit lines and answers are written by `Gateway.settled`'s tasks)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout_s)


def _compact(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), allow_nan=False, default=str).encode()
