"""How fast the simulator serves notifications, and whether pacing ever had to hold back.

Starts `jk-ble-sim --spawn-bus --timing zero` with N devices, connects one dbus-fast client
per device (StartNotify) or acquires the notify fd, runs the JK handshake and counts what
arrives for a few seconds. Prints one line of figures per mode.

    python bench/sim_throughput.py [--devices 4] [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time

from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from bluez_jk.protocol import command
from bluez_jk.protocol.stream import StreamDecoder


def _mac(i: int) -> str:
    return f"C8:47:80:00:00:{i + 1:02X}"


def _path(i: int) -> str:
    return f"/org/bluez/hci0/dev_{_mac(i).replace(':', '_')}"


async def _call(
    bus: MessageBus,
    path: str,
    iface: str,
    member: str,
    sig: str = "",
    body: list[object] | None = None,
) -> Message:
    reply = await bus.call(
        Message(
            destination="org.bluez",
            path=path,
            interface=iface,
            member=member,
            signature=sig,
            body=body or [],
        )
    )
    assert reply is not None
    if reply.message_type is MessageType.ERROR:
        raise RuntimeError(f"{member}: {reply.error_name} {reply.body}")
    return reply


async def _one_device(address: str, index: int, mode: str, seconds: float) -> dict[str, float]:
    bus = await MessageBus(bus_address=address, negotiate_unix_fd=True).connect()
    dev = _path(index)
    char = dev + "/service0010/char0011"
    decoder = StreamDecoder()
    chunks = 0
    t0 = time.monotonic()
    await _call(bus, dev, "org.bluez.Device1", "Connect")
    for _ in range(2000):  # bounded: 10 s
        resolved = await _call(
            bus,
            dev,
            "org.freedesktop.DBus.Properties",
            "Get",
            "ss",
            ["org.bluez.Device1", "ServicesResolved"],
        )
        if resolved.body[0].value:
            break
        await asyncio.sleep(0.005)
    connected_s = time.monotonic() - t0
    first_cell: float | None = None

    def feed(chunk: bytes) -> None:
        nonlocal chunks, first_cell
        chunks += 1
        for decoded in decoder.feed(chunk):
            if decoded.kind == "cell_info" and first_cell is None:
                first_cell = time.monotonic() - t0

    sock: socket.socket | None = None
    if mode == "start":
        rule = f"type='signal',sender='org.bluez',path='{char}'"
        await bus.call(
            Message(
                destination="org.freedesktop.DBus",
                path="/org/freedesktop/DBus",
                interface="org.freedesktop.DBus",
                member="AddMatch",
                signature="s",
                body=[rule],
            )
        )

        def on_message(msg: Message) -> None:
            if msg.member == "PropertiesChanged" and msg.path == char and "Value" in msg.body[1]:
                feed(bytes(msg.body[1]["Value"].value))

        bus.add_message_handler(on_message)
        await _call(bus, char, "org.bluez.GattCharacteristic1", "StartNotify")
    else:
        reply = await _call(
            bus, char, "org.bluez.GattCharacteristic1", "AcquireNotify", "a{sv}", [{}]
        )
        sock = socket.socket(fileno=reply.unix_fds[reply.body[0]])
        sock.setblocking(False)
        loop = asyncio.get_running_loop()

        def readable() -> None:
            assert sock is not None
            try:
                while True:
                    data = sock.recv(1024)
                    if not data:
                        loop.remove_reader(sock.fileno())
                        return
                    feed(data)
            except BlockingIOError:
                return

        loop.add_reader(sock.fileno(), readable)
    for code in (0x97, 0x96):
        await _call(
            bus,
            char,
            "org.bluez.GattCharacteristic1",
            "WriteValue",
            "aya{sv}",
            [command(code), {"type": Variant("s", "command")}],
        )
    start_frames = decoder.assembler.frames
    start = time.monotonic()
    await asyncio.sleep(seconds)
    elapsed = time.monotonic() - start
    frames = decoder.assembler.frames - start_frames
    if sock is not None:
        asyncio.get_running_loop().remove_reader(sock.fileno())
        sock.close()
    await _call(bus, dev, "org.bluez.Device1", "Disconnect")
    bus.disconnect()
    return {
        "connect_s": connected_s,
        "first_cell_s": first_cell or float("nan"),
        "frames_per_s": frames / elapsed,
        "chunks": chunks,
        "corrupt": decoder.assembler.corrupt,
    }


async def _stats(address: str) -> dict[str, int]:
    bus = await MessageBus(bus_address=address).connect()
    reply = await bus.call(
        Message(
            destination="org.bluez",
            path="/org/bluezjk/simulator",
            interface="org.bluezjk.Simulator1",
            member="GetStats",
        )
    )
    bus.disconnect()
    assert reply is not None
    return dict(json.loads(reply.body[0]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    for mode in ("start", "acquire"):
        cmd = [sys.executable, "-m", "bluez_jk.sim", "--spawn-bus", "--timing", "zero"]
        for i in range(args.devices):
            cmd += ["--device", f"{_mac(i)},protocol=JK02_32S"]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE)
        assert proc.stdout is not None
        select.select([proc.stdout], [], [], 20)
        address = proc.stdout.readline().decode().strip().split("=", 1)[1]
        try:

            async def run(
                addr: str = address, how: str = mode
            ) -> tuple[list[dict[str, float]], dict[str, int]]:
                results = await asyncio.gather(
                    *(_one_device(addr, i, how, args.seconds) for i in range(args.devices))
                )
                return list(results), await _stats(addr)

            results, stats = asyncio.run(run())
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(10)
            proc.stdout.close()
        total = sum(r["frames_per_s"] for r in results)
        print(
            f"mode={mode} devices={args.devices} timing=zero "
            f"frames_per_s_total={total:.1f} "
            f"frames_per_s_per_device={total / args.devices:.1f} "
            f"connect_s_max={max(r['connect_s'] for r in results):.3f} "
            f"first_cell_s_max={max(r['first_cell_s'] for r in results):.3f} "
            f"corrupt={sum(int(r['corrupt']) for r in results)} "
            f"sim_messages_sent={stats['messages_sent']} outbox_waits={stats['outbox_waits']}"
        )
        os.environ.pop("DBUS_SYSTEM_BUS_ADDRESS", None)


if __name__ == "__main__":
    main()
