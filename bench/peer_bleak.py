"""The same read with an unmodified Bleak and with `Reader.read`, side by side in one run.

One read: connect to a device BlueZ already knows, subscribe to FFE1, write 0x97 and 0x96,
wait until device info, settings and cell info are decoded (the same `StreamDecoder` on both
sides, so only the BlueZ transport differs), unsubscribe, disconnect.

Each side runs in a long-lived worker process of its own (a Bleak process never sees the
reader's D-Bus traffic, nor the reverse): two warm-up reads, then `--reads` timed ones. The
rounds alternate the sides and the figures are medians over `--rounds`. Reported per read:

  - CPU: the worker's process time (user + sys) over all timed reads, divided by their number;
  - wall: the median of the reads' wall times;
  - D-Bus messages: what crosses the worker's bus connections during the timed reads, sent
    plus received, counted inside dbus-fast (every message buffered for sending, every message
    unmarshalled), on every connection of the process (Bleak opens one per client besides its
    manager's; connection set-up is counted too).

A third side, the floor, makes the same calls on bare dbus-fast with none of a client's
guarantees (`floor_reads`): what any client of this transport costs at least, Bleak included.

Both notify mechanisms are measured: StartNotify (the default of Bleak, and of the reader's
`auto` on the simulated BlueZ 5.66) and AcquireNotify.

    python bench/peer_bleak.py [--reads 20] [--rounds 3] [--timing zero]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bleak import BleakClient  # noqa: E402
from bleak.backends.device import BLEDevice  # noqa: E402
from dbus_fast import BusType, Message, MessageType, Variant  # noqa: E402
from dbus_fast.aio import MessageBus, message_bus  # noqa: E402

from bench.read import simulator  # noqa: E402
from bluez_jk.protocol import CMD_CELL_INFO, CMD_DEVICE_INFO, StreamDecoder, command  # noqa: E402
from bluez_jk.reader import Reader, ReadRequest  # noqa: E402

ADDRESS = "C8:47:80:37:02:E8"
ADAPTER = "hci0"
FFE1 = "0000ffe1-0000-1000-8000-00805f9b34fb"
SIDES = ("bleak", "reader", "floor")
LABELS = {"bleak": "Bleak", "reader": "Reader.read", "floor": "floor (bare dbus-fast)"}
GATT_CHAR = "org.bluez.GattCharacteristic1"
MODES = ("start", "acquire")


class MessageCounter:
    """Counts the messages of every dbus-fast connection of this process (sent + received)."""

    def __init__(self) -> None:
        self.sent = 0
        self.received = 0

    def install(self) -> None:
        original_reader = message_bus.build_message_reader
        original_buffer = message_bus._MessageWriter.buffer_message
        counter = self

        def build_message_reader(sock: Any, process: Any, finalize: Any, fds: bool) -> Any:
            def counted(message: Any) -> None:
                counter.received += 1
                process(message)

            return original_reader(sock, counted, finalize, fds)

        def buffer_message(writer: Any, msg: Any, future: Any = None) -> None:
            counter.sent += 1
            original_buffer(writer, msg, future)

        message_bus.build_message_reader = build_message_reader  # type: ignore[assignment]
        message_bus._MessageWriter.buffer_message = buffer_message  # type: ignore[method-assign]

    @property
    def total(self) -> int:
        return self.sent + self.received


async def bleak_reads(mode: str) -> Callable[[], Awaitable[None]]:
    path = f"/org/bluez/{ADAPTER}/dev_{ADDRESS.replace(':', '_')}"
    device = BLEDevice(ADDRESS, None, {"path": path, "props": {}})

    async def one() -> None:
        decoder = StreamDecoder(None)
        changed = asyncio.Event()

        def on_chunk(_: Any, data: bytearray) -> None:
            decoder.feed(bytes(data))
            changed.set()

        def complete() -> bool:
            got = decoder.got
            return bool(got["device_info"] and got["cell_info"] and got["settings"])

        async with BleakClient(device, timeout=10) as client:
            write = next(
                c
                for c in client.services.characteristics.values()
                if c.uuid == FFE1 and "write-without-response" in c.properties
            )
            notify = next(
                c
                for c in client.services.characteristics.values()
                if c.uuid == FFE1 and "notify" in c.properties
            )
            await client.start_notify(notify, on_chunk, bluez={"use_start_notify": mode == "start"})
            for code in (CMD_DEVICE_INFO, CMD_CELL_INFO):
                await client.write_gatt_char(write, command(code), response=False)
            async with asyncio.timeout(10):
                while not complete():
                    changed.clear()
                    await changed.wait()
            await client.stop_notify(notify)

    return one


async def reader_reads(mode: str) -> Callable[[], Awaitable[None]]:
    reader = Reader()
    notify_mode: Any = "auto" if mode == "start" else mode
    request = ReadRequest(
        name="bench", address=ADDRESS, adapter=ADAPTER, timeout_s=10, notify_mode=notify_mode
    )
    if mode == "start":
        assert await reader.default_notify_mode() == "start", "auto is not StartNotify here"

    async def one() -> None:
        reading = await reader.read(request)
        if reading["error"] is not None:
            raise SystemExit(f"read failed: {reading['error']}")

    return one


async def floor_reads(mode: str) -> Callable[[], Awaitable[None]]:
    """The fewest calls a read can make on dbus-fast, with none of the reader's guarantees
    (no adapter lock, no deadlines, no checks of replies or state, no cleanup on error): one
    connection, one match rule on the device for the process's life, the characteristic found
    once. Not a usable client: the floor under any client of this transport, Bleak or ours."""
    bus = await MessageBus(bus_type=BusType.SYSTEM, negotiate_unix_fd=True).connect()
    loop = asyncio.get_running_loop()
    device = f"/org/bluez/{ADAPTER}/dev_{ADDRESS.replace(':', '_')}"

    def call(
        path: str, interface: str, member: str, sig: str = "", *body: Any, to: str = "org.bluez"
    ) -> Any:
        return bus.call(
            Message(
                destination=to,
                path=path,
                interface=interface,
                member=member,
                signature=sig,
                body=list(body),
            )
        )

    objects = (await call("/", "org.freedesktop.DBus.ObjectManager", "GetManagedObjects")).body[0]
    char = next(
        path
        for path, ifaces in objects.items()
        if path.startswith(device + "/")
        and ifaces.get(GATT_CHAR, {}).get("UUID", Variant("s", "")).value == FFE1
    )
    resolved = asyncio.Event()
    state: dict[str, Callable[[bytes], None]] = {}

    def on_message(message: Message) -> None:
        if message.message_type != MessageType.SIGNAL or message.member != "PropertiesChanged":
            return
        changed = message.body[1]
        if message.path == device and changed.get("ServicesResolved", Variant("b", False)).value:
            resolved.set()
        elif message.path == char and "Value" in changed:
            state["chunk"](bytes(changed["Value"].value))

    bus.add_message_handler(on_message)
    rule = f"type='signal',sender='org.bluez',path_namespace='{device}'"
    dbus = "org.freedesktop.DBus"
    await call("/org/freedesktop/DBus", dbus, "AddMatch", "s", rule, to=dbus)

    async def one() -> None:
        decoder = StreamDecoder(None)
        done = loop.create_future()

        def on_chunk(data: bytes) -> None:
            decoder.feed(data)
            got = decoder.got
            if got["device_info"] and got["cell_info"] and got["settings"] and not done.done():
                done.set_result(None)

        state["chunk"] = on_chunk
        resolved.clear()
        await call(device, "org.bluez.Device1", "Connect")
        await resolved.wait()
        fd = -1
        if mode == "acquire":
            fd = (await call(char, GATT_CHAR, "AcquireNotify", "a{sv}", {})).unix_fds[0]
            os.set_blocking(fd, False)
            loop.add_reader(fd, lambda: on_chunk(os.read(fd, 512)))
        else:
            await call(char, GATT_CHAR, "StartNotify")
        for code in (CMD_DEVICE_INFO, CMD_CELL_INFO):
            options = {"type": Variant("s", "command")}
            await call(char, GATT_CHAR, "WriteValue", "aya{sv}", command(code), options)
        async with asyncio.timeout(10):
            await done
        if mode == "acquire":
            loop.remove_reader(fd)
            os.close(fd)
        else:
            await call(char, GATT_CHAR, "StopNotify")
        await call(device, "org.bluez.Device1", "Disconnect")

    return one


async def worker(side: str, mode: str, reads: int, counter: MessageCounter) -> dict[str, Any]:
    one = await {"bleak": bleak_reads, "reader": reader_reads, "floor": floor_reads}[side](mode)
    for _ in range(2):  # warm-up: imports, caches, Bleak's manager, our bus connection
        await one()
    walls = []
    sent0, received0 = counter.sent, counter.received
    usage0 = resource.getrusage(resource.RUSAGE_SELF)
    cpu0 = time.process_time()
    for _ in range(reads):
        t0 = time.perf_counter()
        await one()
        walls.append(time.perf_counter() - t0)
    cpu = time.process_time() - cpu0
    usage1 = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "cpu_ms": 1000 * cpu / reads,
        "sys_ms": 1000 * (usage1.ru_stime - usage0.ru_stime) / reads,
        "wall_ms": 1000 * statistics.median(walls),
        "sent": (counter.sent - sent0) / reads,
        "received": (counter.received - received0) / reads,
    }


def run_worker(side: str, mode: str, reads: int, env: dict[str, str]) -> dict[str, Any]:
    argv = [sys.executable, __file__, "--worker", side, "--mode", mode, "--reads", str(reads)]
    done = subprocess.run(argv, env=env, capture_output=True, check=False, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"{side}/{mode} worker failed: {done.stderr.decode()[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.decode().strip().splitlines()[-1])
    return result


def median_of(rounds: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reads", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--timing", default="zero", choices=("zero", "fast", "real"))
    parser.add_argument("--modes", default=",".join(MODES), help="start,acquire or one of them")
    parser.add_argument("--worker", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=MODES, default="start", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        counter = MessageCounter()
        counter.install()
        print(json.dumps(asyncio.run(worker(args.worker, args.mode, args.reads, counter))))
        return

    modes = [m for m in args.modes.split(",") if m]
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    with simulator(args.timing) as address, tempfile.TemporaryDirectory() as lock_dir:
        env = {
            **os.environ,
            "DBUS_SYSTEM_BUS_ADDRESS": address,
            "BLUEZ_JK_LOCK_DIR": lock_dir,
            # The simulator plays BlueZ 5.66: what `auto` then means (bluez/version.py).
            "BLUEZ_JK_BLUEZ_VERSION": "5.66",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        }
        for _ in range(args.rounds):
            for mode in modes:
                for side in SIDES:
                    results.setdefault((side, mode), []).append(
                        run_worker(side, mode, args.reads, env)
                    )
    print(
        f"{args.reads} reads per round, median of {args.rounds} rounds, simulator timing "
        f"{args.timing}, one JK02_32S on {ADAPTER}, device known to BlueZ"
    )
    print(
        "| notify | side | CPU per read (of it sys) | wall per read "
        "| D-Bus messages per read (sent + received) |"
    )
    print("| --- | --- | --- | --- | --- |")
    for mode in modes:
        for side in SIDES:
            rounds = results[(side, mode)]
            sent, received = median_of(rounds, "sent"), median_of(rounds, "received")
            print(
                f"| {mode} | {LABELS[side]} | "
                f"{median_of(rounds, 'cpu_ms'):.2f} ms ({median_of(rounds, 'sys_ms'):.2f} ms) | "
                f"{median_of(rounds, 'wall_ms'):.1f} ms | "
                f"{sent + received:.0f} ({sent:.0f} + {received:.0f}) |"
            )
    for mode in modes:
        ours = median_of(results[("reader", mode)], "cpu_ms")
        theirs = median_of(results[("bleak", mode)], "cpu_ms")
        floor = median_of(results[("floor", mode)], "cpu_ms")
        print(
            f"{mode}: Reader.read CPU / Bleak CPU = {ours / theirs:.2f}; "
            f"floor / Bleak = {floor / theirs:.2f}; Reader.read / floor = {ours / floor:.2f}"
        )


if __name__ == "__main__":
    main()
