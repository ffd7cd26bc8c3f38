"""When each BMS is read: intervals with jitter, per-device backoff, one BLE operation per adapter.

Every device has its own task. Reads on one adapter take turns through an `AdapterGate`, where
a healthy device goes before one that is failing, so a broken BMS (whose reads run into their
timeout) costs its neighbours at most the one read already in progress. Adapters run in
parallel. A failing device backs off exponentially (capped), only on its own schedule, counted
from the end of its failed read and at least as long as that read took.

A kept (`keep_connected`) device is watched too: a stream that delivers no Reading at all for
longer than the reader's own staleness bound plus a grace is given up (an error Reading, a
new session), and `stuck()` reports it to the systemd watchdog.

The scheduler knows the reader only through `ReaderLike` and time only through `Clock`, so
unit tests drive it with a fake reader and a fake clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Protocol, cast, runtime_checkable

from bluez_jk.errors import BusError, JkError, Timeout
from bluez_jk.gateway.adapter_health import AdapterHealth, outcome
from bluez_jk.gateway.config import AdapterRecoveryConfig, DeviceConfig
from bluez_jk.reader import ReadRequest, follow_stale_s
from bluez_jk.reading import Reading, error_reading

log = logging.getLogger(__name__)

# Longest backoff, as a multiple of the device's interval, and in absolute terms.
BACKOFF_FACTOR_CAP = 8
BACKOFF_CAP_S = 300.0
# A read that outlives its own timeout by this much means the reader is stuck.
STUCK_GRACE_S = 30.0
# Pause before restarting a device loop that died on an unexpected error.
RESTART_DELAY_S = 5.0
# Bound of one whole power cycle (lock, off, pause, on); the reader bounds each call itself.
POWER_CYCLE_BOUND_S = 60.0


class ReaderLike(Protocol):
    async def read(
        self, req: ReadRequest, *, capture: Callable[[bytes], None] | None = None
    ) -> Reading: ...

    async def follow(
        self, req: ReadRequest, on_reading: Callable[[Reading], None], interval_s: float
    ) -> None: ...


@runtime_checkable
class AdapterPower(Protocol):
    async def power_cycle(self, adapter: str | None) -> str:
        """Switch the adapter off and on again; its name. Raises JkError."""


class Clock(Protocol):
    def now(self) -> float: ...

    async def sleep_until(self, deadline: float, wake: asyncio.Event) -> None:
        """Return at `deadline` or as soon as `wake` is set, whichever comes first."""


class MonotonicClock:
    def now(self) -> float:
        return time.monotonic()

    async def sleep_until(self, deadline: float, wake: asyncio.Event) -> None:
        delay = deadline - self.now()
        if delay <= 0 or wake.is_set():
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await wake.wait()


def request_for(config: DeviceConfig) -> ReadRequest:
    return ReadRequest(
        name=config.name,
        address=config.address,
        adapter=config.adapter,
        protocol=config.protocol,
        timeout_s=config.timeout_s,
        scan_timeout_s=config.scan_timeout_s,
        notify_mode=config.notify_mode,
        pairing=config.pairing,
        passkey=config.passkey,
    )


def backoff_s(interval_s: float, consecutive_failures: int) -> float:
    """Delay before the next attempt: the interval, doubled per failure beyond the first."""
    if consecutive_failures <= 1:
        return interval_s
    cap = max(interval_s, min(BACKOFF_CAP_S, interval_s * BACKOFF_FACTOR_CAP))
    return min(cap, interval_s * 2.0 ** min(consecutive_failures - 1, 30))


class AdapterGate:
    """A lock whose waiters are served by priority (lower first), then in arrival order.

    Priority alone would starve: when the healthy devices of an adapter are always due (slow
    reads, a short interval), a failing one behind them would wait for ever. A waiter that
    later arrivals have overtaken `MAX_OVERTAKEN` times goes next unless a negative priority
    (an adapter's recovery) waits."""

    MAX_OVERTAKEN = 2

    def __init__(self) -> None:
        self._held = False
        self._waiters: list[_Waiter] = []
        self._seq = itertools.count()

    @property
    def held(self) -> bool:
        return self._held

    @contextlib.asynccontextmanager
    async def turn(self, priority: int = 0) -> AsyncIterator[None]:
        if self._held or self._waiters:
            waiter = _Waiter(priority, next(self._seq), asyncio.get_running_loop().create_future())
            self._waiters.append(waiter)
            try:
                await waiter.fut
            except asyncio.CancelledError:
                if waiter.fut.done() and not waiter.fut.cancelled():
                    # Handed the lock just as we were cancelled: pass it on.
                    self._release()
                elif waiter in self._waiters:
                    self._waiters.remove(waiter)
                raise
        else:
            self._held = True
        try:
            yield
        finally:
            self._release()

    def _next(self) -> _Waiter:
        # Few waiters per adapter (its devices): a scan is simpler than a heap with aging.
        # A negative priority (an adapter's recovery) stays ahead of every read.
        urgent = min(w.priority for w in self._waiters) < 0
        starved = [w for w in self._waiters if w.overtaken >= self.MAX_OVERTAKEN]
        if starved and not urgent:
            chosen = min(starved, key=lambda w: w.seq)
        else:
            chosen = min(self._waiters, key=lambda w: w.rank)
        for other in self._waiters:
            if other.seq < chosen.seq:
                other.overtaken += 1
        self._waiters.remove(chosen)
        return chosen

    def _release(self) -> None:
        while self._waiters:
            waiter = self._next()
            if not waiter.fut.done():
                waiter.fut.set_result(None)  # ownership moves to that waiter; _held stays True
                return
        self._held = False


@dataclass(eq=False)
class _Waiter:
    priority: int
    seq: int
    fut: asyncio.Future[None]
    overtaken: int = 0  # later arrivals served before this one

    @property
    def rank(self) -> tuple[int, int]:
        return (self.priority, self.seq)


@dataclass
class DeviceState:
    """Everything the scheduler and `meta` know about one device."""

    config: DeviceConfig
    attempts: int = 0
    successes: int = 0
    consecutive_failures: int = 0
    last_error_type: str | None = None
    last_success: float | None = None  # epoch seconds
    last_reading: Reading | None = None
    next_due: float = 0.0
    last_start: float | None = None
    busy_since: float | None = None
    last_delivery: float | None = None  # clock time of the last Reading of a kept device
    paused_until: float | None = None  # clock time
    paused_until_epoch: float | None = None
    paused_since: float | None = None  # clock time the current (or last) pause began
    attempts_at_pause: int = 0
    read_requested: bool = False
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    op: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def healthy(self) -> bool:
        return self.consecutive_failures == 0


ReadingHandler = Callable[[DeviceState, Reading], None]


class Scheduler:
    def __init__(
        self,
        reader: ReaderLike,
        devices: list[DeviceConfig],
        on_reading: ReadingHandler,
        *,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        on_progress: Callable[[], None] | None = None,
        power: AdapterPower | None = None,
        recovery: AdapterRecoveryConfig | None = None,
    ) -> None:
        self.reader = reader
        self.clock: Clock = clock or MonotonicClock()
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self.on_reading = on_reading
        self.on_progress = on_progress
        self.devices: dict[str, DeviceState] = {d.name: DeviceState(d) for d in devices}
        self._gates: dict[str | None, AdapterGate] = {}
        self.progress = 0
        # Self-healing adapters (docs/config.md "adapter_recovery"): the policy decides,
        # `_recover_adapter` carries it out through `power`.
        settings = recovery or AdapterRecoveryConfig()
        self.power = power
        self.health = AdapterHealth.for_devices(
            {d.name: d.adapter for d in devices},
            after_failures=settings.after_failures,
            min_interval_s=settings.min_interval_s,
            enabled=settings.enabled and power is not None,
        )

    def gate(self, adapter: str | None) -> AdapterGate:
        return self._gates.setdefault(adapter, AdapterGate())

    def _jitter(self, interval_s: float) -> float:
        # Symmetric, so that the mean period is the configured interval (a 0..10 % jitter
        # made a 2 s poll run every 2.1 s on average); the spread keeps devices that share an
        # adapter from settling into lock-step.
        spread = min(0.05 * interval_s, 0.5)
        return self.rng.uniform(-spread, spread)

    async def run(self) -> None:
        """Run every device until cancelled; one device's failure never ends the others."""
        async with asyncio.TaskGroup() as group:
            for state in self.devices.values():
                group.create_task(self._supervised(state), name=f"device-{state.name}")

    # -- commands -----------------------------------------------------------------------------

    def request_read(self, name: str) -> bool:
        """Read now; False when a read is already in flight (its result answers the request)."""
        state = self.devices[name]
        if state.op is not None or state.config.keep_connected:
            return False
        state.read_requested = True
        state.wake.set()
        return True

    def reconfigure(self, name: str, config: DeviceConfig) -> None:
        state = self.devices[name]
        old = state.config
        state.config = config
        self.health.place(name, config.adapter)
        if state.last_start is not None:
            state.next_due = state.last_start + backoff_s(
                config.poll_interval_s, state.consecutive_failures
            )
        if old.keep_connected and state.op is not None:
            state.op.cancel()  # the follow session restarts with the new settings
        state.wake.set()

    def pause_refusal(self, name: str, minutes: float, max_minutes: float) -> str | None:
        """Why a pause of `minutes` may not start or be renewed now, or None.

        A pause and all its renewals end at most `max_minutes` after it began, and a new
        pause needs one read attempt after the last one: a device is never kept dark
        forever by renewing the pause."""
        state = self.devices[name]
        now = self.clock.now()
        if state.paused_until is not None and now < state.paused_until:
            began = state.paused_since if state.paused_since is not None else now
            if now + minutes * 60.0 > began + max_minutes * 60.0 + 1e-6:
                return (
                    f"a pause lasts at most {max_minutes:g} minutes, renewals included; "
                    f"this one can be extended by {(began + max_minutes * 60.0 - now) / 60:.0f}"
                    " minutes more"
                )
            return None
        if state.paused_since is not None and state.attempts <= state.attempts_at_pause:
            return "the device is read once after a pause before it can be paused again"
        return None

    def pause(self, name: str, minutes: float) -> None:
        state = self.devices[name]
        if minutes <= 0:
            state.paused_until = None
            state.paused_until_epoch = None
        else:
            if state.paused_until is None or self.clock.now() >= state.paused_until:
                state.paused_since = self.clock.now()
                state.attempts_at_pause = state.attempts
            state.paused_until = self.clock.now() + minutes * 60.0
            state.paused_until_epoch = time.time() + minutes * 60.0
            if state.op is not None:
                state.op.cancel()  # release the link at once
        state.wake.set()

    def stuck(self) -> list[str]:
        """Devices whose current operation outlived its timeout by far (watchdog input)."""
        now = self.clock.now()
        stuck = []
        for s in self.devices.values():
            if s.config.keep_connected:
                # A kept device is stuck when its stream has delivered nothing, not even an
                # error Reading, for far longer than the bound after which it must give up.
                if s.op is None or s.last_delivery is None:
                    continue
                limit = follow_stale_s(s.config.poll_interval_s, s.config.timeout_s)
                if now - s.last_delivery > limit + s.config.timeout_s + 2 * STUCK_GRACE_S:
                    stuck.append(s.name)
            elif (
                s.busy_since is not None and now - s.busy_since > s.config.timeout_s + STUCK_GRACE_S
            ):
                stuck.append(s.name)
        return stuck

    # -- one device ---------------------------------------------------------------------------

    async def _supervised(self, state: DeviceState) -> None:
        """Restart a device loop that failed on a bug, so the other devices never stop."""
        while True:
            try:
                await self._device_loop(state)
            except Exception:  # the boundary between one device and the rest of the gateway
                log.exception("device loop failed, restarting device=%s", state.name)
                state.wake.clear()
                await self.clock.sleep_until(self.clock.now() + RESTART_DELAY_S, state.wake)

    async def _device_loop(self, state: DeviceState) -> None:
        # Spread the first reads so that devices sharing an adapter do not queue up together.
        state.next_due = self.clock.now() + self.rng.uniform(
            0.0, min(state.config.poll_interval_s, 2.0)
        )
        while True:
            await self._wait_turn(state)
            op = asyncio.create_task(
                self._follow(state) if state.config.keep_connected else self._read(state)
            )
            state.op = op
            try:
                await op
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise
                # Cancelled by pause or reconfigure: the reader has cleaned up; go on.
            finally:
                state.op = None
                state.busy_since = None

    async def _wait_turn(self, state: DeviceState) -> None:
        while True:
            state.wake.clear()
            now = self.clock.now()
            if state.paused_until is not None:
                if now < state.paused_until:
                    state.read_requested = False
                    await self.clock.sleep_until(state.paused_until, state.wake)
                    continue
                state.paused_until = None
                state.paused_until_epoch = None
                state.next_due = now
            # A clock may wake a hair early; never spin on such a rounding difference.
            if state.read_requested or now >= state.next_due - 1e-6:
                state.read_requested = False
                return
            await self.clock.sleep_until(state.next_due, state.wake)

    async def _read(self, state: DeviceState) -> None:
        config = state.config
        async with self.gate(config.adapter).turn(0 if state.healthy else 1):
            start = self.clock.now()
            state.last_start = start
            state.busy_since = start
            reading = await self._guarded_read(config)
        self.record(state, reading)
        # A healthy device keeps its rhythm from the start of each read. A failing one counts
        # its backoff from the end of the failed read: a read that ran into a 20 s timeout
        # would otherwise be due again the moment it let go of the adapter, and a silent BMS
        # would hold its adapter nearly all the time, starving its healthy neighbours.
        # It also waits at least as long as that read took, so that it holds a shared adapter
        # at most about half of the time, whatever its timeout.
        delay = backoff_s(config.poll_interval_s, state.consecutive_failures)
        if state.healthy:
            base = start
        else:
            base = self.clock.now()
            delay = max(delay, base - start)
        state.next_due = base + delay + self._jitter(config.poll_interval_s)
        if not state.healthy:
            await self._recover_adapter(config.adapter)

    def _kept_session_on(self, adapter: str | None) -> bool:
        return any(
            s.config.keep_connected and s.op is not None
            for s in self.devices.values()
            if s.config.adapter == adapter
        )

    async def _recover_adapter(self, adapter: str | None) -> None:
        """Power-cycle `adapter` when the policy says it is wedged (gateway/adapter_health.py).

        Holding the adapter's turn, ahead of every waiting read, so that no read of this
        gateway runs during the cycle; the reader holds the adapter's lock against other
        processes. Afterwards its devices are read at once."""
        verdict = self.health.verdict(adapter, self.clock.now())
        if verdict.decision == "too_soon":
            log.info("adapter looks wedged adapter=%s not cycled: %s", adapter, verdict.reason)
        if verdict.decision != "cycle":
            return
        async with self.gate(adapter).turn(-1):
            verdict = self.health.verdict(
                adapter, self.clock.now(), busy=self._kept_session_on(adapter)
            )
            if verdict.decision != "cycle":
                log.info("adapter not power-cycled adapter=%s reason=%s", adapter, verdict.reason)
                return
            shown = adapter or "default"
            log.warning(
                "adapter wedged, power-cycling adapter=%s devices=%s reason=%s",
                shown,
                ",".join(verdict.devices),
                verdict.reason,
            )
            ok = False
            try:
                async with asyncio.timeout(POWER_CYCLE_BOUND_S):
                    cycled = await cast(AdapterPower, self.power).power_cycle(adapter)
                ok = True
            except (JkError, TimeoutError) as err:
                log.warning("adapter power cycle failed adapter=%s error=%r", shown, err)
            except Exception:  # a bug here must not end the device loop that asked
                log.exception("adapter power cycle failed adapter=%s", shown)
            self.health.cycled(adapter, self.clock.now(), ok=ok)
            if not ok:
                return
            log.warning(
                "adapter power-cycled adapter=%s cycles=%d devices read again now",
                cycled,
                self.health.cycles(adapter),
            )
        now = self.clock.now()
        for name in verdict.devices:
            other = self.devices[name]
            other.next_due = min(other.next_due, now)
            other.wake.set()

    async def _guarded_read(self, config: DeviceConfig) -> Reading:
        started = time.monotonic()
        try:
            # The reader enforces timeout_s itself; this only catches a reader that hangs.
            async with asyncio.timeout(config.timeout_s + STUCK_GRACE_S):
                return await self.reader.read(request_for(config))
        except TimeoutError:
            error: BusError | Timeout = Timeout("the reader did not return", stage="collect")
        except Exception as err:  # the boundary that keeps one device from killing the gateway
            log.exception("reader failed device=%s", config.name)
            error = BusError(f"unexpected {type(err).__name__}: {err}")
        return error_reading(config.name, config.address, config.adapter, error, started)

    async def _follow(self, state: DeviceState) -> None:
        config = state.config
        state.last_start = state.last_delivery = self.clock.now()
        delivered = asyncio.Event()

        def on_reading(reading: Reading) -> None:
            state.last_delivery = self.clock.now()
            delivered.set()
            self.record(state, reading)

        follow = asyncio.ensure_future(
            self.reader.follow(request_for(config), on_reading, config.poll_interval_s)
        )
        follow.add_done_callback(lambda _: delivered.set())
        try:
            # The reader ends a silent stream itself; this catches a reader that does not
            # (no Reading at all for longer than its own bound plus a grace).
            limit = follow_stale_s(config.poll_interval_s, config.timeout_s) + STUCK_GRACE_S
            while not follow.done():
                delivered.clear()
                deadline = state.last_delivery + limit
                if self.clock.now() >= deadline - 1e-6:  # as in _wait_turn
                    follow.cancel()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(config.timeout_s + STUCK_GRACE_S):
                            await asyncio.wait([follow])
                    silent = Timeout(f"no Reading from the stream for {limit:g} s", stage="collect")
                    self.record(
                        state,
                        error_reading(
                            config.name, config.address, config.adapter, silent, time.monotonic()
                        ),
                    )
                    break
                await self.clock.sleep_until(deadline, delivered)
            else:
                follow.result()
                log.warning("follow session ended device=%s", config.name)
        except Exception as err:  # follow should run until cancelled; restart it, never die
            log.exception("follow session failed device=%s", config.name)
            started = time.monotonic()
            error = BusError(f"unexpected {type(err).__name__}: {err}")
            self.record(
                state, error_reading(config.name, config.address, config.adapter, error, started)
            )
        finally:
            if not follow.done():
                follow.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait([follow])
        # The session ended by itself: retry on the failure backoff.
        failures = max(state.consecutive_failures, 1)
        state.next_due = self.clock.now() + backoff_s(config.poll_interval_s, failures)

    def record(self, state: DeviceState, reading: Reading) -> None:
        """Count `reading` for its device and publish it: every Reading of a device, also one
        that came from elsewhere (a verified write reads everything), passes here."""
        state.attempts += 1
        state.last_reading = reading
        self.health.record(state.name, outcome(reading))
        error = reading.get("error")
        if error is None:
            state.successes += 1
            state.consecutive_failures = 0
            state.last_success = time.time()
        else:
            state.consecutive_failures += 1
            state.last_error_type = error["type"]
        self.progress += 1
        if self.on_progress is not None:
            self.on_progress()
        try:
            self.on_reading(state, reading)
        except Exception:  # publishing must never stop the schedule
            log.exception("publishing a reading failed device=%s", state.name)
