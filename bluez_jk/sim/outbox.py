"""Every message the simulator sends, in order, paced by the fill level of the bus socket.

dbus-fast 5.2.0 tears its connection down when a write finds the socket full (EAGAIN in its
writer, docs/design.md, "Known library defect"). Rather than hoping bursts stay small, the outbox
asks the kernel how many bytes are still unread by dbus-daemon (TIOCOUTQ) and holds further
messages back while that is above a high-water mark.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import fcntl
import logging
import os
import socket
import termios
from collections import deque
from collections.abc import Callable

from dbus_fast import Message
from dbus_fast.aio import MessageBus

log = logging.getLogger(__name__)

HIGH_WATER_BYTES = 48 * 1024
_POLL_S = 0.002
# The socket's send buffer asked for at start (the kernel caps it at net.core.wmem_max). The
# default, ~208 KiB of kernel accounting, is ~165 small signals; on a loaded 2-core machine the
# simulator still hit a full socket in the adapter soak (2 of 2 runs beside a CPU hog, with the
# bus gone for every later call), so the margin over the high-water mark is made wide.
SEND_BUFFER_BYTES = 4 * 1024 * 1024


class Outbox:
    def __init__(self, bus: MessageBus, high_water: int = HIGH_WATER_BYTES) -> None:
        self._bus = bus
        self._high_water = high_water
        self._queue: deque[tuple[Message, Callable[[], None] | None]] = deque()
        self._drainer: asyncio.Task[None] | None = None
        self.sent = 0
        self.waits = 0
        self._widen_send_buffer()

    def _widen_send_buffer(self) -> None:
        fd = self._bus._fd
        if fd is None:
            return
        with contextlib.suppress(OSError):
            sock = socket.socket(fileno=os.dup(fd))
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
            finally:
                sock.close()

    def _unread_bytes(self) -> int:
        buf = array.array("i", [0])
        fd = self._bus._fd
        if fd is None:
            return 0
        try:
            fcntl.ioctl(fd, termios.TIOCOUTQ, buf, True)
        except OSError:
            return 0
        return buf[0]

    def send(self, msg: Message, on_sent: Callable[[], None] | None = None) -> None:
        """Queue `msg`; `on_sent` runs once it left (or failed to leave) our process."""
        if not self._queue and self._unread_bytes() < self._high_water:
            self._write(msg, on_sent)
            return
        self._queue.append((msg, on_sent))
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.get_running_loop().create_task(self._drain())

    def _write(self, msg: Message, on_sent: Callable[[], None] | None) -> None:
        if not self._bus.connected:
            if on_sent is not None:
                on_sent()
            return
        self.sent += 1
        future = self._bus.send(msg)
        if on_sent is not None:
            future.add_done_callback(lambda _f: on_sent())

    async def call(self, msg: Message) -> Message | None:
        """A method call of ours (to an agent), sent after everything queued before it."""
        if self._drainer is not None and not self._drainer.done():
            await asyncio.shield(self._drainer)
        self.sent += 1
        return await self._bus.call(msg)

    async def _drain(self) -> None:
        while self._queue:
            while self._bus.connected and self._unread_bytes() >= self._high_water:
                self.waits += 1
                await asyncio.sleep(_POLL_S)
            msg, on_sent = self._queue.popleft()
            self._write(msg, on_sent)

    async def close(self) -> None:
        if self._drainer is not None:
            self._drainer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._drainer
        for _msg, on_sent in self._queue:
            if on_sent is not None:
                on_sent()
        self._queue.clear()
