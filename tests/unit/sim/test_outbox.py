"""The outbox holds messages back while the bus socket is full, and keeps their order."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from dbus_fast import Message

from bluez_jk.sim.outbox import HIGH_WATER_BYTES, Outbox


class _FakeBus:
    """Just what the outbox uses of a MessageBus: the socket fd, `connected`, `send`."""

    def __init__(self, sock: socket.socket) -> None:
        self._fd = sock.fileno()
        self.connected = True
        self.sent: list[str] = []

    def send(self, msg: Message) -> asyncio.Future[None]:
        self.sent.append(msg.member or "")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


def _signal(name: str) -> Message:
    return Message.new_signal("/", "org.example.Test", name)


async def test_full_socket_queues_until_the_peer_reads() -> None:
    ours, peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with ours, peer:
        ours.setblocking(False)
        bus = _FakeBus(ours)
        outbox = Outbox(bus, high_water=4096)  # type: ignore[arg-type]
        outbox.send(_signal("First"))
        assert bus.sent == ["First"]
        ours.send(b"x" * 8192)  # unread by the peer: the kernel reports it in TIOCOUTQ
        sent_callbacks: list[Any] = []
        outbox.send(_signal("Second"), on_sent=lambda: sent_callbacks.append(1))
        outbox.send(_signal("Third"))
        await asyncio.sleep(0.02)
        assert bus.sent == ["First"]
        assert outbox.waits > 0
        peer.recv(65536)
        while len(bus.sent) < 3:
            await asyncio.sleep(0.005)
        assert bus.sent == ["First", "Second", "Third"]
        assert sent_callbacks == [1]
        await outbox.close()


async def test_close_runs_callbacks_of_unsent_messages() -> None:
    ours, peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with ours, peer:
        ours.setblocking(False)
        bus = _FakeBus(ours)
        outbox = Outbox(bus, high_water=1)  # type: ignore[arg-type]
        ours.send(b"x" * 64)
        closed: list[int] = []
        outbox.send(_signal("Held"), on_sent=lambda: closed.append(1))
        await outbox.close()
        assert closed == [1]
        assert bus.sent == []


async def test_the_send_buffer_is_widened_at_start() -> None:
    """A full socket kills dbus-fast's connection (docs/design.md, "Known library defect"):
    the simulator's bus socket gets a send buffer far above the high-water mark."""
    ours, peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with ours, peer:
        before = ours.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        Outbox(_FakeBus(ours))  # type: ignore[arg-type]
        after = ours.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        assert after > before
        assert after >= 8 * HIGH_WATER_BYTES
