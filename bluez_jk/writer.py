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

from bluez_jk.control.policy import same_value
from bluez_jk.errors import ErrorInfo, ProtocolError
from bluez_jk.protocol import CMD_CELL_INFO, REGISTERS, command
from bluez_jk.protocol.commands import write_command as register_frame
from bluez_jk.protocol.errors import FrameError
from bluez_jk.reader import Link, Reader, ReadRequest, SessionStage, Unrecoverable, handshake
from bluez_jk.reading import ProtocolName, Reading

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


@dataclass
class _RegisterWrite:
    """The conversation of a verified write: the read's handshake, then the register frame
    (at most once per call), then 0x96 until the settings frame shows the value."""

    name: str
    outcome: WriteOutcome

    async def __call__(self, link: Link) -> None:
        await handshake(link)
        out = self.outcome
        protocol = link.decoder.protocol
        if protocol is None:  # complete implies a layout; kept as a guard for the type
            raise _not_writable("the layout is unknown")
        if not out.written:
            try:
                frame = register_frame(protocol, out.key, out.value)
            except FrameError as err:
                raise _not_writable(str(err)) from err
            out.protocol, out.frame = protocol, frame
            out.before = link.decoder.status["settings"].get(out.key)
            link.enter(SessionStage.WRITE)
            # Counted as written before the call returns: a lost reply may hide a write that
            # reached the BMS, and a second write is never sent.
            out.written = True
            log.info("writing name=%s key=%s value=%s", self.name, out.key, out.value)
            await link.send(frame)
        await self._read_back(link, protocol)

    async def _read_back(self, link: Link, protocol: ProtocolName) -> None:
        out = self.outcome
        timing = link.timing
        loop = asyncio.get_running_loop()
        for attempt in range(READBACK_TRIES):
            await asyncio.sleep(SETTLE_S * (attempt + 1))
            link.decoder.got["settings"] = False
            await link.command(CMD_CELL_INFO, 5.0)
            sent_at = loop.time()
            while not link.decoder.got["settings"]:
                link.check_connected("reading the settings back")
                if loop.time() - sent_at >= timing.resend_max_s:
                    await link.send(command(CMD_CELL_INFO), 5.0)
                    sent_at = loop.time()
                await link.wait(loop.time() + timing.resend_s)
            out.after = link.decoder.status["settings"].get(out.key)
            out.verified = same_value(protocol, out.key, out.value, out.after)
            if out.verified:
                return
            log.info("read back %s=%r, expected %r (try %d)", out.key, out.after, out.value,
                     attempt + 1)  # fmt: skip


def _not_writable(why: str) -> Unrecoverable:
    """The detected layout has no such register: nothing is written, nothing is retried."""
    return Unrecoverable(ProtocolError(f"{why}; nothing written", stage="write"))


async def write_and_verify(
    reader: Reader, req: ReadRequest, key: str, value: float
) -> WriteOutcome:
    """Write settings key `key` (docs/protocol.md 2.3, published units) and read it back.

    Never raises a JkError: failures come back in `error`, with `written` telling whether the
    frame may have reached the BMS. Cancellation cleans up, then propagates."""
    started = time.monotonic()
    outcome = WriteOutcome(key=key, value=float(value))
    if not any(key in registers for registers in REGISTERS.values()):
        outcome.error = ProtocolError(f"no register is named {key!r}", stage="write").to_info()
        return outcome
    reading = await reader.run_session(req, _RegisterWrite(req.name, outcome))
    outcome.error = reading["error"]
    outcome.duration_s = reading["duration_s"] = round(time.monotonic() - started, 3)
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
