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
from dbus_fast.aio import message_bus  # noqa: E402

from bench.read import simulator  # noqa: E402
from bluez_jk.protocol import CMD_CELL_INFO, CMD_DEVICE_INFO, StreamDecoder, command  # noqa: E402
from bluez_jk.reader import Reader, ReadRequest  # noqa: E402

ADDRESS = "C8:47:80:37:02:E8"
ADAPTER = "hci0"
FFE1 = "0000ffe1-0000-1000-8000-00805f9b34fb"
SIDES = ("bleak", "reader")
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


async def worker(side: str, mode: str, reads: int, counter: MessageCounter) -> dict[str, Any]:
    one = await (bleak_reads if side == "bleak" else reader_reads)(mode)
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
                f"| {mode} | {'Bleak' if side == 'bleak' else 'Reader.read'} | "
                f"{median_of(rounds, 'cpu_ms'):.2f} ms ({median_of(rounds, 'sys_ms'):.2f} ms) | "
                f"{median_of(rounds, 'wall_ms'):.1f} ms | "
                f"{sent + received:.0f} ({sent:.0f} + {received:.0f}) |"
            )
    for mode in modes:
        ours = median_of(results[("reader", mode)], "cpu_ms")
        theirs = median_of(results[("bleak", mode)], "cpu_ms")
        print(f"{mode}: Reader.read CPU / Bleak CPU = {ours / theirs:.2f}")


if __name__ == "__main__":
    main()
