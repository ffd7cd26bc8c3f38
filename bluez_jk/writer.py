"""One register write, verified: a read session (same adapter lock, same recovery policy as
`Reader.read`) that, once device info, settings and cell info are in, writes one register frame
and sends 0x96 again until the settings frame shows the value (docs/protocol.md 2.4: the BMS
has no error answer, a refused write is simply not reflected).

The frame is built here, for the layout detected in this very session, never for a remembered
one: the registers of 24S and 32S differ (docs/protocol.md 2.3).

At most one write per call: a session that fails after the frame went out (the link dropped,
the reply of WriteValue got lost) is retried by the recovery policy as a read only, and what
it reads back decides `verified`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from bluez_jk.bluez.bus import BluezBus
from bluez_jk.bluez.device import DeviceWatch
from bluez_jk.bluez.errors import LinkLost
from bluez_jk.bluez.gatt import JkChars, NotifyMode, write_command
from bluez_jk.control.policy import same_value
from bluez_jk.errors import BusError, ErrorInfo, JkError, ProtocolError
from bluez_jk.protocol import CMD_CELL_INFO, REGISTERS, command
from bluez_jk.protocol.commands import write_command as register_frame
from bluez_jk.protocol.errors import FrameError
from bluez_jk.reader import Reader, ReadRequest, SessionStage, _Session
from bluez_jk.reading import ProtocolName, Reading, new_reading

log = logging.getLogger(__name__)

# The BMS applies a write within a few hundred ms; a read-back that still shows the old value
# is asked again after a pause, this many times in all.
SETTLE_S = 0.3
READBACK_TRIES = 3


@dataclass
class WriteOutcome:
    key: str
    value: float
    written: bool = False  # the frame went out (it may still have been ignored)
    verified: bool = False  # the settings frame read back afterwards shows the value
    before: Any = None
    after: Any = None
    frame: bytes | None = None
    protocol: ProtocolName | None = None
    error: ErrorInfo | None = None
    duration_s: float = 0.0
    reading: Reading | None = None


class _NotWritable(Exception):
    """The detected layout has no such register: nothing is written, nothing is retried."""


class _WriteSession(_Session):
    def __init__(
        self, reader: Reader, req: ReadRequest, outcome: WriteOutcome, default_mode: NotifyMode
    ) -> None:
        super().__init__(reader, req, None, default_mode)
        self.outcome = outcome

    async def _handshake(self, bus: BluezBus, chars: JkChars, watch: DeviceWatch) -> None:
        await super()._handshake(bus, chars, watch)
        out = self.outcome
        protocol = self.decoder.protocol
        if protocol is None:  # complete implies a layout; kept as a guard for the type
            raise _NotWritable("the layout is unknown")
        if not out.written:
            try:
                frame = register_frame(protocol, out.key, out.value)
            except FrameError as err:
                raise _NotWritable(str(err)) from err
            out.protocol, out.frame = protocol, frame
            out.before = self.decoder.status["settings"].get(out.key)
            self._enter(SessionStage.WRITE)
            # Counted as written before the call returns: a lost reply may hide a write that
            # reached the BMS, and a second write is never sent.
            out.written = True
            log.info("writing name=%s key=%s value=%s", self.req.name, out.key, out.value)
            await write_command(bus, chars.write, frame, self.bound(self.reader.timing.call_s))
        await self._read_back(bus, chars, watch, protocol)

    async def _read_back(
        self, bus: BluezBus, chars: JkChars, watch: DeviceWatch, protocol: ProtocolName
    ) -> None:
        out = self.outcome
        timing = self.reader.timing
        loop = asyncio.get_running_loop()
        for attempt in range(READBACK_TRIES):
            await asyncio.sleep(SETTLE_S * (attempt + 1))
            self.decoder.got["settings"] = False
            self._enter(SessionStage.WRITE)
            await write_command(bus, chars.write, command(CMD_CELL_INFO), self.bound(5.0))
            self._enter(SessionStage.COLLECT)
            sent_at = loop.time()
            while not self.decoder.got["settings"]:
                if self.collector.ended or not watch.connected or not watch.exists:
                    raise LinkLost("link dropped while reading the settings back", stage="collect")
                if loop.time() - sent_at >= timing.resend_max_s:
                    await write_command(bus, chars.write, command(CMD_CELL_INFO), self.bound(5.0))
                    sent_at = loop.time()
                self.collector.changed.clear()
                try:
                    async with asyncio.timeout(timing.resend_s):
                        await self.collector.changed.wait()
                except TimeoutError:
                    pass
            out.after = self.decoder.status["settings"].get(out.key)
            out.verified = same_value(protocol, out.key, out.value, out.after)
            if out.verified:
                return
            log.info("read back %s=%r, expected %r (try %d)", out.key, out.after, out.value,
                     attempt + 1)  # fmt: skip


async def write_and_verify(
    reader: Reader, req: ReadRequest, key: str, value: float
) -> WriteOutcome:
    """Write settings key `key` (docs/protocol.md 2.3, published units) and read it back.

    Never raises a JkError: failures come back in `error`, with `written` telling whether the
    frame may have reached the BMS. Cancellation cleans up, then propagates."""
    started = time.monotonic()
    outcome = WriteOutcome(key=key, value=float(value))
    reading = new_reading(req.name, req.address, req.adapter)
    if not any(key in registers for registers in REGISTERS.values()):
        outcome.error = ProtocolError(f"no register is named {key!r}", stage="write").to_info()
        return outcome
    session = _WriteSession(reader, req, outcome, await reader.default_notify_mode())
    try:
        await session.run()
    except _NotWritable as err:
        outcome.error = ProtocolError(f"{err}; nothing written", stage="write").to_info()
    except JkError as err:
        outcome.error = err.to_info()
    except Exception as err:  # the boundary, as in Reader.read
        log.exception("write failed unexpectedly name=%s", req.name)
        outcome.error = BusError(
            f"internal error: {err!r}", stage=session.stage.published
        ).to_info()
    finally:
        session.fill(reading)
        outcome.duration_s = reading["duration_s"] = round(time.monotonic() - started, 3)
        reading["error"] = outcome.error
        outcome.reading = reading
    log.info(
        "write name=%s key=%s written=%s verified=%s before=%r after=%r error=%s",
        req.name,
        key,
        outcome.written,
        outcome.verified,
        outcome.before,
        outcome.after,
        outcome.error and outcome.error["type"],
    )
    return outcome
