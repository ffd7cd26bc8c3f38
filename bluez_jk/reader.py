"""One read session against one JK-BMS: lock the adapter, find and connect the device, resolve
GATT, subscribe, 0x97 then 0x96, collect device info, settings and cell info until complete or
`timeout_s`, and always clean up (docs/design.md, "Concurrency and cleanup").

BlueZ trouble is handled by `bluez.recovery.decide`; this module only carries its decisions out.

Where a session is, is a `SessionStage`, changed only by `_Session._enter`; its value is the
published `stage` of an error raised there. What the session says to the subscribed BMS is a
conversation over a `Link`: `handshake` for a read, writer.py's for a verified write.
`Reader.run_session` is the one error boundary around a session.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from enum import StrEnum
from types import TracebackType
from typing import Any, NoReturn

from bluez_jk.adapter_lock import AdapterLock
from bluez_jk.bluez.adapter import (
    discover_device,
    require_powered,
    resolve_adapter,
    set_powered,
)
from bluez_jk.bluez.agent import pair_device
from bluez_jk.bluez.bus import BluezBus
from bluez_jk.bluez.device import (
    DeviceWatch,
    connect,
    disconnect,
    keep_device,
    remove_device,
    wait_services_resolved,
    watch_device,
)
from bluez_jk.bluez.errors import BluetoothdGone, ConnectAborted, LinkLost, StaleCache
from bluez_jk.bluez.gatt import (
    JkChars,
    acquired_notify,
    find_jk_chars,
    read_model_number,
    started_notify,
    write_command,
)
from bluez_jk.bluez.paths import adapter_name, adapter_path
from bluez_jk.bluez.recovery import Action, Limits, Tried, decide
from bluez_jk.bluez.version import bluez_version, default_notify_mode
from bluez_jk.errors import (
    AuthenticationRequired,
    BusError,
    Busy,
    ConnectFailed,
    DeviceNotFound,
    Disconnected,
    Interrupted,
    JkError,
    NotifyAcquired,
    NotifyStuck,
    ProtocolError,
    ServicesNotResolved,
    Stage,
    Timeout,
)
from bluez_jk.hints import stage_timeout_message
from bluez_jk.names import NotifyMode, NotifyModeSetting, PairingSetting, Passkey, device_path
from bluez_jk.protocol import (
    CMD_CELL_INFO,
    CMD_DEVICE_INFO,
    CMD_LOGBOOK,
    StreamDecoder,
    command,
    event_name,
)
from bluez_jk.reading import (
    Logbook,
    LogbookEntry,
    ProtocolName,
    Reading,
    missing_logbook,
    new_reading,
)

log = logging.getLogger(__name__)

Capture = Callable[[bytes], None]


@dataclass(frozen=True)
class ReadRequest:
    name: str
    address: str  # upper case with colons
    adapter: str | None = None  # "hciN" or None = default adapter
    protocol: ProtocolName | None = None
    timeout_s: float = 20.0
    scan_timeout_s: float = 5.0
    notify_mode: NotifyModeSetting = "auto"
    # JK firmware >= 19.30 wants a bonded link: "auto" pairs when the link demands it,
    # "never" reports AuthenticationRequired instead. A passkey (secret, never shown) is what
    # the agent answers when BlueZ asks for one; with it the reader pairs before subscribing.
    pairing: PairingSetting = "auto"
    passkey: Passkey | None = field(default=None, repr=False)
    pair: bool = False  # pair before subscribing even if the BMS has not asked (jk-ble-pair)
    logbook: bool = False  # `read` also asks for the event log (0xA1) once the values are in


@dataclass(frozen=True)
class Timing:
    """Bounds of single steps; every one is also cut to the time left in the read."""

    call_s: float = 10.0
    connect_s: float = 30.0  # the kernel's LE connect gives up after ~20 s (docs/bluez.md fact 3)
    services_s: float = 10.0
    disconnect_s: float = 5.0  # bluetoothd drops the link 2 s later (docs/bluez.md fact 5)
    # A command whose answer is lost is sent again (docs/protocol.md 3.2: replies start within
    # 40-170 ms and a frame takes ~100 ms; the first try after connecting can go unanswered).
    resend_s: float = 1.0  # ... after this long without any notification
    resend_max_s: float = 4.0  # ... and at the latest after this long
    model_read_s: float = 3.0
    pair_s: float = 30.0  # Device1.Pair: connect, SMP, GATT discovery
    subscribe_s: float = 5.0  # StartNotify / AcquireNotify
    logbook_s: float = 3.0  # wait for the 0x05 frame after 0xA1, asked at most twice


@dataclass
class DeviceMemory:
    """What a Reader learnt about each BMS (by address), for its later sessions."""

    # AcquireNotify refused once -> StartNotify for this device from then on.
    notify_modes: dict[str, NotifyMode] = field(default_factory=dict)
    # BMS that had to pair once: later reads pair before they subscribe.
    needs_pairing: set[str] = field(default_factory=set)
    # BMS whose connect took bluetoothd down while it held a bond (BlueZ 5.66 and a BMS that
    # forgot the bond, docs/bluez.md fact 19): the next read removes that bond first.
    stale_bonds: set[str] = field(default_factory=set)
    # Model numbers (0x2A24), read once per BMS: the same for the life of its firmware.
    models: dict[str, str] = field(default_factory=dict)


@dataclass
class _Collector:
    """Feeds notification chunks to the decoder and wakes the session on progress or EOF."""

    decoder: StreamDecoder
    capture: Capture | None
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    ended: bool = False
    chunks: int = 0
    last_chunk_at: float = 0.0

    def on_chunk(self, chunk: bytes) -> None:
        self.chunks += 1
        self.last_chunk_at = asyncio.get_running_loop().time()
        if self.capture is not None:
            self.capture(chunk)
        assembler = self.decoder.assembler
        before = assembler.frames + assembler.corrupt
        self.decoder.feed(chunk)
        # Waiters act on whole frames only (a chunk is ~20 bytes of a 300-byte frame): waking
        # them per chunk cost an event-loop round per chunk. The resend timer re-reads
        # last_chunk_at when it fires, so a stream that is slow but steady still holds it off.
        if assembler.frames + assembler.corrupt != before:
            self.changed.set()

    def on_end(self) -> None:
        self.ended = True
        self.changed.set()


@dataclass
class Link:
    """A connected BMS whose notifications arrive: what a conversation with it works with (the
    handshake; writer.py's verified register write)."""

    bus: BluezBus
    chars: JkChars
    watch: DeviceWatch
    decoder: StreamDecoder
    collector: _Collector
    timing: Timing
    enter: Callable[[SessionStage], None]  # the session's stage transition
    budget: Budget  # the session's time: `bound` a step's limit, `left` until the deadline

    @property
    def complete(self) -> bool:
        got = self.decoder.got
        return bool(got["device_info"] and got["cell_info"] and got["settings"])

    def check_connected(self, doing: str) -> None:
        if self.collector.ended or not self.watch.connected or not self.watch.exists:
            raise LinkLost(f"link dropped while {doing}", stage="collect")

    async def send(self, frame: bytes, limit_s: float | None = None) -> None:
        """Write `frame` to the BMS (bounded by `limit_s`, by default `timing.call_s`)."""
        call_s = self.timing.call_s if limit_s is None else limit_s
        await write_command(self.bus, self.chars.write, frame, self.budget.bound(call_s))

    async def command(self, code: int, limit_s: float | None = None) -> None:
        """Send command `code`; the session then collects its answer."""
        self.enter(SessionStage.WRITE)
        await self.send(command(code), limit_s)
        self.enter(SessionStage.COLLECT)

    async def wait(self, until: float) -> None:
        """Until a notification (or the end of the subscription), at most to loop time `until`."""
        self.collector.changed.clear()
        try:
            async with asyncio.timeout_at(until):
                await self.collector.changed.wait()
        except TimeoutError:
            pass


async def handshake(link: Link) -> None:
    """0x97 first, then 0x96 (docs/protocol.md 3.1). A command is sent again when its answer
    is evidently lost: the link went quiet for `resend_s`, or three frames (or corrupt
    ones) came without completing the set, or `resend_max_s` passed. A slow but steady
    stream therefore never triggers duplicate requests."""
    timing = link.timing
    loop = asyncio.get_running_loop()
    assembler = link.decoder.assembler

    def frames_seen() -> int:
        return int(assembler.frames) + int(assembler.corrupt)

    async def send(code: int) -> tuple[float, int]:
        await link.command(code)
        return loop.time(), frames_seen()

    code = CMD_DEVICE_INFO
    tries = 1
    sent_at, frames_at_send = await send(code)
    while not link.complete:
        link.check_connected("collecting frames")
        if code == CMD_DEVICE_INFO and (link.decoder.got["device_info"] or tries > 2):
            code, tries = CMD_CELL_INFO, 1
            sent_at, frames_at_send = await send(code)
            continue
        quiet_from = max(sent_at, link.collector.last_chunk_at)
        resend_at = min(quiet_from + timing.resend_s, sent_at + timing.resend_max_s)
        if frames_seen() - frames_at_send >= 3 or loop.time() >= resend_at:
            tries += 1
            log.info("answer to 0x%02X looks lost, sending it again (try %d)", code, tries)
            sent_at, frames_at_send = await send(code)
            continue
        await link.wait(resend_at)


@dataclass
class LogbookRead:
    """The conversation of a read that also asks for the logbook (`ReadRequest.logbook`):
    the handshake, then 0xA1 (docs/protocol.md 5.6), asked again once if no 0x05 frame came.
    A BMS without an answer costs this step only: the read has its values, and the wait
    ends a second before the session's deadline so that it cannot fail the read."""

    decoder: StreamDecoder | None = None  # the session's, once connected
    note: str | None = None  # why no logbook came, once asked

    async def __call__(self, link: Link) -> None:
        self.decoder = link.decoder
        await handshake(link)
        if link.decoder.protocol == "JK04" or link.decoder.logbook is not None:
            return
        loop = asyncio.get_running_loop()
        wait_s = link.timing.logbook_s
        for _ in range(2):
            wait_s = min(wait_s, link.budget.left() - 1.0)
            if wait_s <= 0:
                self.note = "no time left in the read for the logbook (raise timeout_s)"
                return
            await link.command(CMD_LOGBOOK, wait_s)
            until = loop.time() + wait_s
            while link.decoder.logbook is None and loop.time() < until:
                link.check_connected("waiting for the logbook")
                await link.wait(until)
            if link.decoder.logbook is not None:
                return
        self.note = f"the BMS did not answer 0xA1 (twice {wait_s:g} s)"

    def result(self) -> Logbook:
        """The Reading's `logbook`: the entries of the 0x05 frame, or why there are none."""
        values = self.decoder.logbook if self.decoder is not None else None
        if values is not None:
            entries: list[LogbookEntry] = [
                {"t": int(e["t"]), "code": int(e["code"]), "event": event_name(int(e["code"]))}
                for e in values["entries"]
            ]
            return {"status": "ok", "message": None, "entries": entries}
        if self.decoder is not None and self.decoder.protocol == "JK04":
            message = "JK04 boards have no logbook (docs/protocol.md 5.6)"
            return {"status": "unsupported", "message": message, "entries": []}
        return missing_logbook(self.note or "the read ended before the logbook was asked for")


# What a session does with the BMS once it is connected and subscribed.
Conversation = Callable[[Link], Awaitable[None]]


class Unrecoverable(Exception):
    """Raised by a conversation for a failure that no retry can cure: the session ends at once
    and its Reading carries `error`."""

    def __init__(self, error: JkError) -> None:
        super().__init__(error.message)
        self.error = error


class Reader:
    """Reads JK-BMS devices over one system-bus connection, reopened when it is lost.

    `read` never raises a JkError: failures come back in the Reading's `error`, together with
    every frame decoded before the failure. Cancellation cleans up, then propagates."""

    def __init__(self, *, timing: Timing | None = None, limits: Limits | None = None) -> None:
        self.timing = timing or Timing()
        self.limits = limits or Limits()
        self._bus: BluezBus | None = None
        self._bus_guard = asyncio.Lock()
        self.memory = DeviceMemory()
        # The last session that was cancelled, filled as far as it got (jk-ble-read on Ctrl-C).
        self.interrupted: Reading | None = None

    async def __aenter__(self) -> Reader:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._bus is not None:
            await self._bus.close()
            self._bus = None

    def notify_mode(self, address: str) -> NotifyMode | None:
        return self.memory.notify_modes.get(address)

    async def default_notify_mode(self) -> NotifyMode:
        """What `notify_mode: auto` means on this machine's BlueZ (bluez/version.py)."""
        return default_notify_mode(await bluez_version())

    async def get_bus(self, *, failed: BluezBus | None = None) -> BluezBus:
        """The shared connection; a new one when it is closed or is the one that `failed`
        (another session may already have replaced it)."""
        async with self._bus_guard:
            if self._bus is not None and (self._bus is failed or not self._bus.connected):
                await self._bus.close()
                self._bus = None
            if self._bus is None:
                self._bus = await BluezBus.connect(timeout_s=self.timing.call_s)
            return self._bus

    async def power_cycle(
        self, adapter: str | None, *, off_s: float = 1.0, timeout_s: float = 10.0
    ) -> str:
        """Adapter1.Powered false, then `off_s` later true, holding the adapter's lock so that
        no read of any process runs meanwhile (the gateway's adapter_recovery). Returns the
        adapter's name. Power on is asked for even when switching off failed or the caller is
        cancelled: a cycle never leaves the adapter off by our hand.

        Raises:
            AdapterNotFound: no such adapter (gone), or it refused (NotReady).
            Busy: another process holds the adapter's lock for `timeout_s`.
            BusLost, Timeout, JkError: as `BluezBus.call`.
        """
        bus = await self.get_bus()
        objects = await bus.managed_objects(stage="adapter", timeout_s=timeout_s)
        adapter_obj = resolve_adapter(objects, adapter)
        name = adapter_name(adapter_obj)
        async with AdapterLock(name, timeout_s):
            try:
                await set_powered(bus, adapter_obj, False, timeout_s)
                await asyncio.sleep(off_s)
            finally:
                await _to_the_end(_power_on(bus, adapter_obj, timeout_s))
        return name

    async def read(self, req: ReadRequest, *, capture: Capture | None = None) -> Reading:
        if req.logbook:
            logbook = LogbookRead()
            reading = await self.run_session(req, logbook, capture=capture)
            reading["logbook"] = logbook.result()
        else:
            reading = await self.run_session(req, capture=capture)
        log.info(
            "read name=%s ok=%s got=%s duration_s=%.2f error=%s",
            req.name,
            reading["error"] is None,
            reading["got"],
            reading["duration_s"],
            reading["error"] and reading["error"]["type"],
        )
        return reading

    async def follow(
        self, req: ReadRequest, on_reading: Callable[[Reading], None], interval_s: float
    ) -> None:
        """Stay connected and call `on_reading` every `interval_s` with the latest values of
        the BMS's own stream; after a failure, an error Reading, then a new session one
        interval later. Runs until cancelled; cleans up like `read`."""
        while True:
            on_reading(await self.run_session(req, on_reading=on_reading, interval_s=interval_s))
            await asyncio.sleep(interval_s)

    async def run_session(
        self,
        req: ReadRequest,
        conversation: Conversation = handshake,
        *,
        capture: Capture | None = None,
        on_reading: Callable[[Reading], None] | None = None,
        interval_s: float = 0.0,
    ) -> Reading:
        """One session (see `_Session`) inside the error boundary of `read`, `follow` and
        writer.py: never raises a JkError, the Reading carries it. Cancellation cleans up,
        keeps the Reading in `interrupted`, then propagates."""
        started = time.monotonic()
        reading = new_reading(req.name, req.address, req.adapter)
        mode = await self.default_notify_mode()
        follow = None if on_reading is None else _Follow(on_reading, interval_s)
        session = _Session(self, req, conversation, mode, capture=capture, follow=follow)
        try:
            await session.run()
        except JkError as err:
            reading["error"] = err.to_info()
        except Unrecoverable as err:
            reading["error"] = err.error.to_info()
        except asyncio.CancelledError:
            # Kept (filled below) for a caller that cancelled us and still reports (jk-ble-read
            # on Ctrl-C), with the stage the read had really reached.
            reading["error"] = Interrupted("interrupted", stage=session.stage.published).to_info()
            self.interrupted = reading
            raise
        except Exception as err:  # the boundary: anything unexpected leaves as a typed error
            log.exception("session failed unexpectedly name=%s", req.name)
            error = BusError(f"internal error: {err!r}", stage=session.stage.published)
            reading["error"] = error.to_info()
        finally:
            session.fill(reading)
            reading["duration_s"] = round(time.monotonic() - started, 3)
        return reading


def follow_stale_s(interval_s: float, timeout_s: float) -> float:
    """How long a followed stream may stay without a frame before the session is given up."""
    return max(3.0 * interval_s, timeout_s)


async def read_once(
    req: ReadRequest,
    *,
    capture: Capture | None = None,
    timing: Timing | None = None,
    limits: Limits | None = None,
) -> Reading:
    """One read with a Reader of its own (a fresh bus connection, closed afterwards)."""
    async with Reader(timing=timing, limits=limits) as reader:
        return await reader.read(req, capture=capture)


async def _power_on(bus: BluezBus, adapter_obj: str, timeout_s: float, tries: int = 3) -> None:
    """Powered true, asked again after a failure: an adapter left off by our power cycle reads
    `AdapterNotFound` from then on, and the gateway never powers on such an adapter itself."""
    for attempt in range(1, tries + 1):
        try:
            await set_powered(bus, adapter_obj, True, timeout_s)
        except JkError as err:
            log.warning(
                "power on failed adapter=%s try=%d error=%r",
                adapter_name(adapter_obj),
                attempt,
                err,
            )
            if attempt == tries:
                raise
            await asyncio.sleep(0.5 * attempt)
        else:
            return


async def _bounded_cleanup(stack: AsyncExitStack) -> None:
    """Close `stack` even if the caller is cancelled meanwhile; a second cancellation (the
    gateway's shutdown deadline) ends the wait, so that a dead bus's call timeouts never hold
    up an exit. Every step inside is bounded."""
    task = asyncio.ensure_future(stack.aclose())
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait([task])
        raise


async def _to_the_end(step: Awaitable[None]) -> None:
    """Await `step` to its end even if the caller is cancelled meanwhile, once or again (the
    gateway's shutdown cancels once, then once more when its own deadline passes); then the
    cancellation goes on. For the power-on only: an adapter left off is worse than a late
    exit, and the power-on is bounded (`_power_on`'s tries)."""
    task = asyncio.ensure_future(step)
    cancelled = False
    while not task.done():
        try:
            await asyncio.wait([task])
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        if not task.cancelled():
            task.exception()  # seen (and logged where it happened): the caller was cancelled
        raise asyncio.CancelledError
    task.result()


_RESTART_HINT = (
    "only a restart of bluetoothd clears it: `sudo systemctl restart bluetooth`. "
    "notify_mode auto avoids AcquireNotify on BlueZ before 5.84"
)
# A subscription call unanswered for this long when the read's time runs out is taken for
# BlueZ holding it while it pairs (docs/bluez.md fact 16); one sent just before is not.
_HELD_FOR_PAIRING_S = 1.0
_ACQUIRE_NO_REPLY = (
    "BlueZ never answered AcquireNotify: bluetoothd before 5.84 does this when the BMS refuses "
    "the subscription (it may want pairing) or the link drops during the call, and then keeps "
    "FFE1 'Notify acquired' for every client; " + _RESTART_HINT
)
_START_NO_REPLY = (
    "StartNotify got no reply: BlueZ holds it while it tries to pair, which it does when the "
    "BMS refuses the subscription (JK firmware >= 19.30 wants pairing; see the README on "
    "pairing)"
)
_STUCK_AFTER_RESET = (
    "FFE1 still reports 'Notify acquired' after the link was dropped, so no client holds it: "
    "bluetoothd lost track of a failed AcquireNotify; " + _RESTART_HINT
)


class SessionStage(StrEnum):
    """Where a read session is. The value is what an error raised there publishes as its
    `stage` (one of errors.Stage, a contract of the Reading and MQTT: docs/design.md)."""

    BUS = "bus"
    ADAPTER = "adapter"
    LOCK = "lock"
    DISCOVER = "discover"
    CONNECT = "connect"
    RESOLVE = "resolve"
    PAIR = "pair"
    SUBSCRIBE = "subscribe"
    WRITE = "write"
    COLLECT = "collect"

    @property
    def published(self) -> Stage:
        # mypy checks that every value is one of the Literal's.
        return self.value


# Stages at which the BMS is connected and subscribed: a deadline there is about the frames.
_TALKING = frozenset({SessionStage.SUBSCRIBE, SessionStage.WRITE, SessionStage.COLLECT})
# What a read that ran out of time elsewhere failed with, if no attempt failed before.
_DEADLINE_ERRORS: dict[SessionStage, type[JkError]] = {
    SessionStage.BUS: BusError,
    SessionStage.ADAPTER: BusError,
    SessionStage.LOCK: Busy,
    SessionStage.DISCOVER: DeviceNotFound,
    SessionStage.CONNECT: ConnectFailed,
    SessionStage.RESOLVE: ServicesNotResolved,
}


class Budget:
    """A session's time: one deadline, `timeout_s` after the start (again after a followed
    stream dropped), that every step's own limit is cut to."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.deadline = 0.0
        self._timeout: asyncio.Timeout | None = None

    def start(self) -> asyncio.Timeout:
        """The deadline as a context manager that raises TimeoutError when it passes."""
        self.deadline = asyncio.get_running_loop().time() + self.timeout_s
        self._timeout = asyncio.timeout_at(self.deadline)
        return self._timeout

    def restart(self) -> None:
        self.deadline = asyncio.get_running_loop().time() + self.timeout_s
        if self._timeout is not None:
            self._timeout.reschedule(self.deadline)

    def suspend(self) -> None:
        """No deadline while a followed stream runs (it has a staleness bound of its own)."""
        if self._timeout is not None:
            self._timeout.reschedule(None)

    def left(self) -> float:
        return max(self.deadline - asyncio.get_running_loop().time(), 0.0)

    def bound(self, limit_s: float) -> float:
        return max(min(limit_s, self.left()), 0.05)


class _AdapterLockHold:
    """A session's adapter lock: taken once the adapter is known, held to the end of the
    session; `follow` gives it back while it only listens to the stream."""

    def __init__(self) -> None:
        self._stack = AsyncExitStack()
        self.held = False

    async def take(self, adapter: str, timeout_s: float) -> None:
        await self._stack.enter_async_context(AdapterLock(adapter, timeout_s))
        self.held = True

    async def release(self) -> None:
        await self._stack.aclose()
        self.held = False


@dataclass(frozen=True)
class _Follow:
    """`follow`'s part of a session: after the handshake, stay and hand out Readings."""

    on_reading: Callable[[Reading], None]
    interval_s: float


class _Session:
    """One read: lock the adapter, find and connect the device, resolve GATT, subscribe, then
    the conversation (and for `follow` the stream), retried as `bluez.recovery.decide` says
    until it succeeds or the budget runs out. Its stage changes only in `_enter`."""

    def __init__(
        self,
        reader: Reader,
        req: ReadRequest,
        conversation: Conversation,
        default_mode: NotifyMode,
        *,
        capture: Capture | None = None,
        follow: _Follow | None = None,
    ) -> None:
        self.reader = reader
        self.req = req
        self.conversation = conversation
        self.decoder = StreamDecoder(req.protocol)
        self.collector = _Collector(self.decoder, capture)
        self._stage = SessionStage.BUS
        self.budget = Budget(req.timeout_s)
        self.last_error: JkError | None = None
        self.model_nbr: str | None = None
        self.adapter: str | None = req.adapter
        self.connected = False
        self.mode: NotifyMode = (
            req.notify_mode
            if req.notify_mode != "auto"
            else reader.notify_mode(req.address) or default_mode
        )
        self.lock = _AdapterLockHold()
        self.follow = follow
        self.streamed = False
        self.subscribing = False  # an AcquireNotify / StartNotify call awaits its answer
        self.subscribing_since = 0.0  # time.monotonic() as that call went out
        self.bus: BluezBus | None = None
        self.adapter_obj: str | None = None
        self.paired: bool | None = None  # Device1.Paired once connected
        # As the last Connect was sent: bluetoothd's unique name, and whether it held a bond.
        self.owner_at_connect: str | None = None
        self.bonded_at_connect = False

    @property
    def stage(self) -> SessionStage:
        return self._stage

    def _enter(self, stage: SessionStage) -> None:
        """The one place the session changes stage."""
        if stage is not self._stage:
            log.debug("stage %s -> %s name=%s", self._stage, stage, self.req.name)
        self._stage = stage

    def fill(self, reading: Reading) -> None:
        reading["adapter"] = self.adapter
        reading["connected"] = self.connected
        reading["model_nbr"] = self.model_nbr
        reading["paired"] = self.paired
        reading["protocol"] = self.decoder.protocol
        reading["detected_by"] = self.decoder.detected_by
        reading["got"] = {
            "device_info": bool(self.decoder.got["device_info"]),
            "cell_info": bool(self.decoder.got["cell_info"]),
            "settings": bool(self.decoder.got["settings"]),
        }
        status: Any = self.decoder.status
        reading["status"] = status

    def snapshot(self) -> Reading:
        reading = new_reading(self.req.name, self.req.address, self.adapter)
        self.fill(reading)
        return reading

    async def run(self) -> None:
        try:
            async with self.budget.start():
                await self._run()
        except TimeoutError:
            # On a worker thread: a lock timeout names the lock's holder from /proc/locks.
            err = await asyncio.to_thread(self._deadline_error)
            if isinstance(err, NotifyStuck):
                await self._keep_wedged()
            raise err from None
        finally:
            await self.lock.release()

    async def _run(self) -> None:
        tried = Tried(may_pair=self.req.pairing != "never")
        stale = self.req.address in self.reader.memory.stale_bonds
        pending: Action | None = "repair" if stale and tried.may_pair else None
        if pending == "repair":
            log.warning(
                "removing the stale bond of %s and pairing again: bluetoothd exited while "
                "connecting to it last time",
                self.req.name,
            )
        while True:
            try:
                await self._attempt(pending)
            except JkError as err:
                tried, pending = await self._recover(await self._bluetoothd_gone(err), tried)
            else:
                self.reader.memory.stale_bonds.discard(self.req.address)
                return

    async def _bluetoothd_gone(self, err: JkError) -> JkError:
        """`err`, or BluetoothdGone when bluetoothd left the bus while it connected a BMS it
        holds a bond with: BlueZ 5.66 crashes so when the BMS forgot the bond (fact 19)."""
        if (
            self.bus is None
            or self.owner_at_connect is None
            or not self.bonded_at_connect
            or self.stage not in (SessionStage.CONNECT, SessionStage.RESOLVE)
            or isinstance(err, BluetoothdGone)
        ):
            return err
        try:
            owner = await self.bus.name_owner(timeout_s=self.budget.bound(2.0))
        except JkError:
            return err  # the bus itself is in trouble: that is the error to report
        if owner == self.owner_at_connect:
            return err
        self.reader.memory.stale_bonds.add(self.req.address)
        name, address = self.req.name, self.req.address
        by_hand = f"jk-ble-pair --address {address} --unpair, then jk-ble-pair --address {address}"
        if self.req.pairing == "never":
            cure = f"pairing is off for this BMS: {by_hand}"
        else:
            cure = f"its next read removes the old bond and pairs again (by hand: {by_hand})"
        return BluetoothdGone(
            f"bluetoothd exited while connecting to {name}, which it holds a bond with "
            f"(BlueZ 5.66 does when the BMS forgot the bond: reset, or paired with another "
            f"host); {cure}. If systemd does not restart bluetoothd: "
            f"sudo systemctl restart bluetooth",
            stage=self.stage.published,
        )

    async def _attempt(self, pending: Action | None) -> None:
        """One try, after carrying out what the recovery policy asked for (`pending`)."""
        if self.bus is None or pending == "reconnect_bus":
            self._enter(SessionStage.BUS)
            failed = self.bus if pending == "reconnect_bus" else None
            self.bus = await self.reader.get_bus(failed=failed)
        if self.adapter_obj is None:
            self.adapter_obj = await self._resolve_adapter(self.bus)
        await self._take_lock()
        stack = AsyncExitStack()
        try:
            await self._connected_session(stack, self.bus, self.adapter_obj, pending)
        finally:
            await _bounded_cleanup(stack)

    async def _recover(self, err: JkError, tried: Tried) -> tuple[Tried, Action]:
        """What the policy makes of a failed attempt: the next one's action, after its delay.
        Raises the error when the policy gives up."""
        self.last_error = err
        tried.paired = bool(self.paired)
        if self.streamed:
            # A link that streamed for a while and then dropped starts a fresh
            # budget: the limits are per incident, not per lifetime.
            tried, self.streamed = Tried(), False
            self.budget.restart()
        decision = decide(err, tried, self.budget.left(), self.reader.limits)
        log.info(
            "attempt failed name=%s stage=%s error=%r next=%s delay_s=%.2f",
            self.req.name,
            self.stage,
            err,
            decision.action,
            decision.delay_s,
        )
        if decision.action == "give_up":
            await self._give_up(err)
        if decision.action in ("pair", "repair"):
            # Remembered: the next reads of this BMS pair before they subscribe.
            self.reader.memory.needs_pairing.add(self.req.address)
        if decision.action == "start_notify":
            if self.req.notify_mode == "acquire":
                raise err
            self.mode = "start"
            if self.req.notify_mode == "auto":
                self.reader.memory.notify_modes[self.req.address] = "start"
        if decision.delay_s:
            await asyncio.sleep(decision.delay_s)
        return tried, decision.action

    async def _give_up(self, err: JkError) -> NoReturn:
        if isinstance(err, NotifyAcquired) and await self._wedged():
            err = NotifyStuck(_STUCK_AFTER_RESET, stage=self.stage.published)
        if isinstance(err, NotifyStuck):
            await self._keep_wedged()
            raise err from self.last_error
        raise err

    async def _keep_wedged(self) -> None:
        """A wedged device must not be removed (bluetoothd 5.66 crashes): keep it Trusted."""
        if self.bus is None or self.adapter_obj is None:
            return
        dev_obj = device_path(self.adapter_obj, self.req.address)
        try:
            await keep_device(self.bus, dev_obj, self.budget.bound(2.0))
        except JkError as err:
            log.warning("could not mark the wedged device Trusted: %s", err)

    async def _wedged(self) -> bool:
        """A "Notify acquired" on a link that is down: a disconnect ends every acquisition
        (docs/bluez.md fact 8), so nobody holds it - bluetoothd lost track (fact 16)."""
        if self.bus is None or self.adapter_obj is None:
            return False
        dev_obj = device_path(self.adapter_obj, self.req.address)
        try:
            objects = await self.bus.managed_objects(
                stage=self.stage.published, timeout_s=self.budget.bound(2.0)
            )
        except JkError:
            return False
        device = objects.get(dev_obj, {}).get("org.bluez.Device1", {})
        if device.get("Connected"):
            return False
        prefix = dev_obj + "/"
        return any(
            ifaces.get("org.bluez.GattCharacteristic1", {}).get("NotifyAcquired") is True
            for path, ifaces in objects.items()
            if path.startswith(prefix)
        )

    async def _resolve_adapter(self, bus: BluezBus) -> str:
        self._enter(SessionStage.ADAPTER)
        if self.req.adapter is not None:
            # A named adapter's path is known; the device watch's snapshot checks that it is
            # there (AdapterNotFound otherwise), which saves a GetManagedObjects per read.
            self.adapter = self.req.adapter
            return adapter_path(self.req.adapter)
        # A busy bluetoothd (a Pi Zero, many devices in range) takes seconds for this.
        objects = await bus.managed_objects(stage="adapter", timeout_s=self.budget.bound(10.0))
        adapter_obj = resolve_adapter(objects, self.req.adapter)
        self.adapter = adapter_name(adapter_obj)
        require_powered(objects, adapter_obj)
        return adapter_obj

    async def _take_lock(self) -> None:
        if self.lock.held or self.adapter is None:
            return
        self._enter(SessionStage.LOCK)
        await self.lock.take(self.adapter, self.budget.left())

    def _unanswered_subscription(self) -> JkError:
        """AcquireNotify / StartNotify without an answer: what BlueZ 5.66 does when the BMS
        refuses the CCCD write (the real-BlueZ tier, docs/bluez.md fact 16)."""
        if self.mode == "acquire":
            return NotifyStuck(_ACQUIRE_NO_REPLY, stage="subscribe")
        return AuthenticationRequired(_START_NO_REPLY, stage="subscribe")

    def _deadline_error(self) -> JkError:
        """What failed, when the session's deadline passed at its current stage."""
        if self.subscribing:
            held_s = time.monotonic() - self.subscribing_since
            if held_s < _HELD_FOR_PAIRING_S and self.last_error is not None:
                # Just sent when the time ran out: it says nothing about pairing, what went
                # wrong before it does (a link that kept dropping, under load).
                return self.last_error
            return self._unanswered_subscription()
        left = f"within {self.req.timeout_s:.1f} s"
        if self.stage in _TALKING:
            return self._collect_error(left)
        if self.last_error is not None:
            return self.last_error
        cls = _DEADLINE_ERRORS.get(self.stage, Timeout)
        return cls(
            stage_timeout_message(self.stage, left, self.adapter), stage=self.stage.published
        )

    def _collect_error(self, left: str) -> JkError:
        """The deadline passed while the BMS was connected and subscribed."""
        got = self.decoder.got
        if isinstance(self.last_error, Disconnected):
            # The link kept dropping; the cut frames it left are not a protocol problem.
            return self.last_error
        if self.decoder.errors and not got["cell_info"]:
            return ProtocolError(
                f"no valid frame {left}: {self.decoder.errors[-1]['message']}", stage="collect"
            )
        if self.collector.chunks == 0:
            return Timeout(f"the BMS sent nothing {left}", stage=self.stage.published)
        missing = ", ".join(k for k in ("device_info", "cell_info", "settings") if not got[k])
        return Timeout(f"missing {missing} {left}", stage=self.stage.published)

    async def _connected_session(
        self, stack: AsyncExitStack, bus: BluezBus, adapter_obj: str, pending: Action | None
    ) -> None:
        """Find, connect, resolve and subscribe; then the conversation (and the stream).
        Everything that needs undoing goes on `stack`."""
        dev_obj = device_path(adapter_obj, self.req.address)
        self._enter(SessionStage.CONNECT)
        watch = await stack.enter_async_context(watch_device(bus, adapter_obj, dev_obj))
        await self._find(bus, adapter_obj, watch, pending)
        # Registered before Connect: a Connect abandoned on our side stays pending in
        # bluetoothd and only a Disconnect cancels it (docs/bluez.md fact 4).
        stack.push_async_callback(disconnect, bus, watch, self.reader.timing.disconnect_s)
        await self._connect(bus, watch)
        chars = await self._resolve(bus, watch, pending)
        self._enter(SessionStage.SUBSCRIBE)
        await self._subscribe(stack, bus, chars)
        watch.listeners.append(self.collector.changed.set)
        link = Link(
            bus,
            chars,
            watch,
            self.decoder,
            self.collector,
            self.reader.timing,
            self._enter,
            self.budget,
        )
        await self.conversation(link)
        if self.follow is not None:
            await self._stream(link, self.follow)

    async def _find(
        self, bus: BluezBus, adapter_obj: str, watch: DeviceWatch, pending: Action | None
    ) -> None:
        """The device object, present and as the recovery policy wants it (`pending`): the
        link dropped, the cached GATT database or a stale bond removed."""
        if pending in ("reset_cache", "reset_link") and watch.connected:
            await disconnect(bus, watch, self.budget.bound(self.reader.timing.disconnect_s))
        if pending == "reset_cache" and watch.exists:
            self._enter(SessionStage.RESOLVE)
            if await self._wedged():
                # RemoveDevice on a wedged FFE1 crashes bluetoothd 5.66 (fact 16).
                raise NotifyStuck(_STUCK_AFTER_RESET, stage="resolve")
            await self._remove(bus, adapter_obj, watch)
        if not watch.exists:
            await self._discover(bus, adapter_obj, watch)
        self._enter(SessionStage.CONNECT)
        if watch.connected:
            # Nobody else may use the adapter while we hold its lock: this link was left by
            # a predecessor that died (docs/bluez.md fact 5). Reuse it and release it at the end.
            log.warning("device already connected, taking over the link path=%s", watch.path)
        if pending == "repair" and watch.exists:
            # The BMS forgot the bond (reset, paired with another host): BlueZ's half of it
            # is stale. Removing the device deletes it; then discover, connect, pair anew.
            self._enter(SessionStage.PAIR)
            if watch.connected:
                await disconnect(bus, watch, self.budget.bound(self.reader.timing.disconnect_s))
            await self._remove(bus, adapter_obj, watch)
            await self._discover(bus, adapter_obj, watch)
            self._enter(SessionStage.CONNECT)

    async def _remove(self, bus: BluezBus, adapter_obj: str, watch: DeviceWatch) -> None:
        call_s = self.budget.bound(self.reader.timing.call_s)
        await remove_device(bus, adapter_obj, watch.path, call_s)
        await watch.wait_for(lambda w: not w.exists, self.budget.bound(2.0))

    async def _connect(self, bus: BluezBus, watch: DeviceWatch) -> None:
        if watch.connected:
            return
        self.owner_at_connect = bus.bluez_owner
        self.bonded_at_connect = bool(watch.props.get("Paired", False))
        try:
            await connect(bus, watch, self.budget.bound(self.reader.timing.connect_s))
        except ConnectAborted:
            # BlueZ flaps Connected after an abort; retry only once it settled (bleak#1255).
            await watch.wait_for(lambda w: not w.connected, self.budget.bound(2.0))
            raise

    async def _resolve(self, bus: BluezBus, watch: DeviceWatch, pending: Action | None) -> JkChars:
        """Services resolved, paired if it should be, the JK characteristics found."""
        timing = self.reader.timing
        self._enter(SessionStage.RESOLVE)
        # Leave room in the read for the stale-cache cure (RemoveDevice + a second try).
        services_s = min(timing.services_s, max(self.req.timeout_s * 0.4, 1.0))
        await wait_services_resolved(watch, self.budget.bound(services_s))
        self.connected = True
        self.paired = bool(watch.props.get("Paired", False))
        if not self.paired and self._pair_first(pending):
            await self._pair(bus, watch)
        chars = await self._find_chars(bus, watch)
        models = self.reader.memory.models
        if self.model_nbr is None:
            self.model_nbr = models.get(self.req.address)
        if self.model_nbr is None and chars.model_number is not None:
            # Before subscribing: with StartNotify a read also arrives as a Value signal.
            self.model_nbr = await read_model_number(
                bus, chars.model_number, self.budget.bound(timing.model_read_s)
            )
            if self.model_nbr is not None:
                models[self.req.address] = self.model_nbr
        return chars

    async def _find_chars(self, bus: BluezBus, watch: DeviceWatch) -> JkChars:
        """The JK characteristics from the watch's view of the device's GATT objects; only
        when they are not all there (a stale cache, or signals not seen) from a fresh
        GetManagedObjects, which also decides the StaleCache error."""
        try:
            return find_jk_chars(watch.objects, watch.path)
        except StaleCache:
            call_s = self.budget.bound(self.reader.timing.call_s)
            objects = await bus.managed_objects(stage="resolve", timeout_s=call_s)
            return find_jk_chars(objects, watch.path)

    def _pair_first(self, pending: Action | None) -> bool:
        """Pair before subscribing: asked to by the policy, or known to be needed (a passkey
        is configured, or an earlier read of this BMS had to pair)."""
        if self.req.pairing == "never":
            return False
        return (
            pending in ("pair", "repair")
            or self.req.pair
            or self.req.passkey is not None
            or self.req.address in self.reader.memory.needs_pairing
        )

    async def _pair(self, bus: BluezBus, watch: DeviceWatch) -> None:
        self._enter(SessionStage.PAIR)
        timing = self.reader.timing
        # Trusted first: a failed pairing then does not turn the device temporary again.
        try:
            await keep_device(bus, watch.path, self.budget.bound(timing.call_s))
        except JkError as err:
            log.warning("could not mark the device Trusted before pairing: %s", err)
        pair_s = self.budget.bound(timing.pair_s)
        await pair_device(bus, watch.path, self.req.address, self.req.passkey, pair_s)
        self.paired = True

    async def _stream(self, link: Link, follow: _Follow) -> None:
        """`follow`: stay connected and hand out a Reading every `interval_s` from the BMS's
        own cell-info stream, until the link drops (LinkLost) or the caller cancels."""
        await self.lock.release()
        self.budget.suspend()
        self.streamed = True
        self._enter(SessionStage.COLLECT)
        loop = asyncio.get_running_loop()
        assembler = self.decoder.assembler
        # A BMS can fall silent without the link dropping (hung firmware): the values held
        # here then freeze. A snapshot goes out only when a frame arrived since the last one,
        # and a stream silent for `stale_s` ends the session (an error Reading, a reconnect).
        stale_s = follow_stale_s(follow.interval_s, self.req.timeout_s)
        published = -1
        last_frame_at = loop.time()
        while True:
            frames = int(assembler.frames)
            if frames != published:
                published = frames
                last_frame_at = loop.time()
                follow.on_reading(self.snapshot())
            elif loop.time() - last_frame_at >= stale_s:
                raise Timeout(f"the BMS sent no frame for {stale_s:g} s", stage="collect")
            next_at = min(loop.time() + follow.interval_s, last_frame_at + stale_s)
            while loop.time() < next_at:
                link.check_connected("following the stream")
                await link.wait(next_at)

    async def _discover(self, bus: BluezBus, adapter_obj: str, watch: DeviceWatch) -> None:
        self._enter(SessionStage.DISCOVER)
        scan_s = self.budget.bound(self.req.scan_timeout_s)
        found = await discover_device(bus, adapter_obj, watch.path, self.req.address, scan_s)
        if not found or not await watch.wait_for(lambda w: w.exists, self.budget.bound(1.0)):
            raise DeviceNotFound(
                f"{self.req.address} not seen during {scan_s:.1f} s of discovery on "
                f"{adapter_name(adapter_obj)}: check that the BMS is powered and in range "
                "(jk-ble-scan --jk-only lists what advertises) and that no other central "
                "(the phone app) is connected to it",
                stage="discover",
            )

    async def _subscribe(self, stack: AsyncExitStack, bus: BluezBus, chars: JkChars) -> None:
        # A CCCD write takes one ATT round trip; no answer for seconds means BlueZ is pairing
        # (docs/bluez.md fact 16), and the read should get on with pairing itself.
        call_s = self.budget.bound(self.reader.timing.subscribe_s)
        self.collector.ended = False
        self.subscribing, self.subscribing_since = True, time.monotonic()
        try:
            if self.mode == "acquire":
                await stack.enter_async_context(
                    acquired_notify(
                        bus, chars.notify, self.collector.on_chunk, self.collector.on_end, call_s
                    )
                )
            else:
                await stack.enter_async_context(
                    started_notify(bus, chars.notify, self.collector.on_chunk, call_s)
                )
        except Timeout as err:
            raise self._unanswered_subscription() from err
        except JkError:
            # Answered after all (the link dropped under it, say): a deadline later in the
            # read must not take this attempt's subscription for an unanswered one.
            self.subscribing = False
            raise
        # Not in a `finally`: the read's own deadline must still see the call unanswered.
        self.subscribing = False
        log.debug("subscribed mode=%s path=%s", self.mode, chars.notify)
