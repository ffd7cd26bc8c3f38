"""Cost of one read against the simulator with a zero-delay link (`--timing zero`).

Prints median and p95 wall time and CPU time per read for:
  - `jk-ble-read` as a process (CPU = the child's user+sys),
  - a process that only imports the runtime dependencies (the floor of any CLI),
  - the reader called in-process, one Reader reused (CPU = this process),
  - `read_once` in-process (a fresh bus connection per read).
The simulator runs in its own process and is not counted.

    python bench/read.py [--reads 30] [--timing zero]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bluez_jk.reader import Reader, ReadRequest, read_once  # noqa: E402

ADDRESS = "C8:47:80:37:02:E8"


@contextmanager
def simulator(timing: str) -> Iterator[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bluez_jk.sim", "--spawn-bus", "--timing", timing],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode().strip()
        if not line.startswith("DBUS_SYSTEM_BUS_ADDRESS="):
            raise SystemExit(f"simulator did not start: {line!r}")
        yield line.split("=", 1)[1]
    finally:
        proc.terminate()
        proc.wait(10)


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_process(argv: list[str], env: dict[str, str], check_json: bool) -> tuple[float, float]:
    cpu0, t0 = children_cpu(), time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, check=False)
    wall, cpu = time.perf_counter() - t0, children_cpu() - cpu0
    if done.returncode != 0 or (check_json and b'"error": null' not in done.stdout):
        raise SystemExit(f"{argv[0]} failed rc={done.returncode}: {done.stdout[:300]!r}")
    return wall, cpu


def summary(label: str, samples: list[tuple[float, float]]) -> str:
    def p95(values: list[float]) -> float:
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]

    walls = [s[0] * 1000 for s in samples]
    cpus = [s[1] * 1000 for s in samples]
    return (
        f"{label:<34} wall median {statistics.median(walls):7.1f} ms  p95 {p95(walls):7.1f} ms"
        f"   cpu median {statistics.median(cpus):7.1f} ms  p95 {p95(cpus):7.1f} ms"
    )


async def in_process(
    reads: int, make: Callable[[], ReadRequest], reuse: bool
) -> list[tuple[float, float]]:
    samples = []
    async with Reader() as reader:
        for _ in range(reads):
            cpu0, t0 = time.process_time(), time.perf_counter()
            reading = await (reader.read(make()) if reuse else read_once(make()))
            samples.append((time.perf_counter() - t0, time.process_time() - cpu0))
            if reading["error"] is not None:
                raise SystemExit(f"read failed: {reading['error']}")
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reads", type=int, default=30)
    parser.add_argument("--timing", default="zero", choices=("zero", "fast", "real"))
    args = parser.parse_args()
    with simulator(args.timing) as address, tempfile.TemporaryDirectory() as lock_dir:
        os.environ["DBUS_SYSTEM_BUS_ADDRESS"] = address
        os.environ["BLUEZ_JK_LOCK_DIR"] = lock_dir
        env = dict(os.environ)
        cli = [sys.executable, str(ROOT / "tools" / "jk_ble_read.py"), "--address", ADDRESS]
        imports = [sys.executable, "-c", "import dbus_fast.aio, construct, paho.mqtt.client"]
        run_process(cli, env, True)  # warm the page cache and the simulator's GATT cache
        cli_samples = [run_process(cli, env, True) for _ in range(args.reads)]
        import_samples = [run_process(imports, env, False) for _ in range(args.reads)]

        def request() -> ReadRequest:
            return ReadRequest(name="bench", address=ADDRESS, timeout_s=10)

        reused = asyncio.run(in_process(args.reads, request, reuse=True))
        fresh = asyncio.run(in_process(args.reads, request, reuse=False))
    print(f"reads per figure: {args.reads}, simulator timing: {args.timing}")
    print(summary("jk-ble-read (process)", cli_samples))
    print(summary("import dbus_fast+construct+paho", import_samples))
    print(summary("Reader.read in-process (reused)", reused))
    print(summary("read_once in-process (new bus)", fresh))


if __name__ == "__main__":
    main()
