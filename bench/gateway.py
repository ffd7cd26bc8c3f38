"""The gateway against the one-process-per-poll design, on the BlueZ simulator.

Both designs poll the same emulated BMS (default: 8 devices on 2 adapters, every 2 s, for 60 s)
over the same private D-Bus and report CPU seconds per read, memory, missed deadlines and, for
the gateway, the latency it adds between `cmd/read` and the `raw` message.

    python bench/gateway.py [--devices 8] [--adapters 2] [--interval 2] [--duration 60]

Also measured on the same simulator: `Reader.read` alone over the same devices on the same
schedule (one Reader in a process of its own, each device read at the gateway's times, the
reads of an adapter one at a time: what the gateway adds per read beyond its reader), and the
gateway with every device on `keep_connected` (CPU per second next to polling's). The gateway
and the reader alone run `--rounds` times in alternation and their medians are compared: on a
shared machine one 40 s window differs from the next by 10-20 %, more than the difference
measured.

"CPU per read" counts only the poller (gateway process, or every reader process it started),
never the simulator or the broker. "Added latency" is the time from publishing `cmd/read` to
receiving `raw`, minus the read's own `duration_s` (the time the BLE session took on the
simulated link), i.e. what the gateway, MQTT and the scheduler add. A deadline is missed when a
device's next reading is more than `interval + 1 s` after the previous one (or never comes).

The broker runs with `set_tcp_nodelay true` and the probe sets TCP_NODELAY: with mosquitto's
default, Nagle's algorithm meeting delayed ACKs adds about 40 ms to every request/answer
exchange on loopback, for any MQTT client. That is the broker's setting, not the gateway's cost.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.fixtures.bluez import SimHandle  # noqa: E402
from tests.fixtures.mqtt import Broker, MqttProbe  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
TARGET_CPU_RATIO = 50.0
TARGET_RSS_MIB = 35.0
TARGET_GATEWAY_OVERHEAD_MS = 1.0  # gateway CPU per read beyond the reader's (issue 13)
TARGET_LATENCY_MS = 20.0


def device_specs(count: int, adapters: int) -> list[tuple[str, str, str]]:
    """(name, address, adapter) for `count` devices spread over `adapters` adapters."""
    return [
        (f"jk{i + 1}", f"C8:47:80:00:00:{i + 1:02X}", f"hci{i % adapters}") for i in range(count)
    ]


def sim_devices(specs: list[tuple[str, str, str]]) -> list[str]:
    return [f"{addr},adapter={adapter},protocol=JK02_32S,cells=16" for _, addr, adapter in specs]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def rss_mib(pid: int, key: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def missed_deadlines(
    times: dict[str, list[float]], start: float, end: float, interval: float
) -> int:
    missed = 0
    for stamps in times.values():
        previous = start
        for t in [*sorted(s for s in stamps if start <= s <= end), end]:
            if t - previous > interval + 1.0:
                missed += int((t - previous) // (interval + 1.0))
            previous = t
    return missed


def gateway_config(
    broker: Broker,
    specs: list[tuple[str, str, str]],
    interval: float,
    state_dir: Path,
    *,
    keep_connected: bool = False,
) -> dict[str, Any]:
    return {
        "mqtt": {"host": broker.host, "port": broker.port, "base_topic": "bms", "keepalive": 10},
        "poll_interval_s": interval,
        "timeout_s": 10,
        "scan_timeout_s": 3,
        "state_dir": str(state_dir),
        "devices": [
            {"name": n, "address": a, "adapter": h, "keep_connected": keep_connected}
            for n, a, h in specs
        ],
    }


def start_gateway(config: dict[str, Any], sim: SimHandle, work: Path) -> subprocess.Popen[bytes]:
    path = work / f"gateway-{time.monotonic_ns()}.json"
    path.write_text(json.dumps(config))
    env = {**sim.env, "BLUEZ_JK_LOCK_DIR": str(work)}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bluez_jk.cli.gateway",
            "--config",
            str(path),
            "--log-level",
            "WARNING",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(work / "gateway.log").open("ab"),
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def raw_times(probe: MqttProbe, names: list[str]) -> dict[str, list[float]]:
    return {n: [m.received for m in probe.on_topic(f"bms/jk/{n}/raw")] for n in names}


def bench_gateway(
    args: argparse.Namespace,
    sim: SimHandle,
    broker: Broker,
    work: Path,
    *,
    keep_connected: bool = False,
) -> dict[str, Any]:
    specs = device_specs(args.devices, args.adapters)
    names = [n for n, _, _ in specs]
    state = work / ("state-stream" if keep_connected else "state")
    config = gateway_config(broker, specs, args.interval, state, keep_connected=keep_connected)
    with MqttProbe(broker, ["bms/jk/+/raw"]) as probe:
        proc = start_gateway(config, sim, work)
        try:
            for name in names:  # warm-up: every device read once
                probe.wait_topic(f"bms/jk/{name}/raw", timeout_s=60)
            start, cpu0 = time.monotonic(), cpu_seconds(proc.pid)
            peak = 0.0
            while time.monotonic() - start < args.duration:
                peak = max(peak, rss_mib(proc.pid))
                time.sleep(1.0)  # sampling RSS once a second for a fixed benchmark window
            end, cpu1 = time.monotonic(), cpu_seconds(proc.pid)
            peak = max(peak, rss_mib(proc.pid))
            hwm = rss_mib(proc.pid, "VmHWM")
        finally:
            stop(proc)
        times = raw_times(probe, names)
        window = [m for m in probe.messages if start <= m.received <= end]
        errors = sum(1 for m in window if m.json()["error"] is not None)
    reads = len(window)
    return {
        "reads": reads,
        "failed_reads": errors,
        "cpu_s": cpu1 - cpu0,
        "cpu_ms_per_read": 1000 * (cpu1 - cpu0) / max(reads, 1),
        "cpu_ms_per_s": 1000 * (cpu1 - cpu0) / (end - start),
        "rss_mib_peak": peak,
        "rss_mib_hwm": hwm,
        "missed_deadlines": missed_deadlines(times, start, end, args.interval),
    }


def bench_latency(
    args: argparse.Namespace, sim: SimHandle, broker: Broker, work: Path
) -> dict[str, Any]:
    """cmd/read -> raw with scheduled polling out of the way (interval of an hour)."""
    specs = device_specs(args.devices, args.adapters)
    config = gateway_config(broker, specs, 3600, work / "state-latency")
    added: list[float] = []
    with MqttProbe(broker, ["bms/jk/+/raw"]) as probe:
        probe.client.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        proc = start_gateway(config, sim, work)
        try:
            for name, _, _ in specs:
                probe.wait_topic(f"bms/jk/{name}/raw", timeout_s=60)
            for i in range(args.latency_samples):
                name = specs[i % len(specs)][0]
                t0 = time.monotonic()
                probe.publish(f"bms/jk/{name}/cmd/read", b"")
                msg = probe.wait_topic(f"bms/jk/{name}/raw", timeout_s=30, after=t0)
                reading = msg.json()
                if reading["error"] is None:
                    added.append(msg.received - t0 - float(reading["duration_s"]))
        finally:
            stop(proc)
    added_ms = sorted(1000 * a for a in added)
    return {
        "samples": len(added_ms),
        "added_latency_ms_median": statistics.median(added_ms) if added_ms else float("nan"),
        "added_latency_ms_p95": added_ms[int(0.95 * (len(added_ms) - 1))]
        if added_ms
        else float("nan"),
    }


def bench_process_per_poll(args: argparse.Namespace, sim: SimHandle, work: Path) -> dict[str, Any]:
    """A fresh `python -m bluez_jk.cli.read` per poll, one poller thread per adapter."""
    specs = device_specs(args.devices, args.adapters)
    env = {**sim.env, "BLUEZ_JK_LOCK_DIR": str(work)}
    times: dict[str, list[float]] = {n: [] for n, _, _ in specs}
    failures = [0]
    lock = threading.Lock()
    start = time.monotonic()
    end = start + args.duration
    usage0 = resource.getrusage(resource.RUSAGE_CHILDREN)

    def poll_adapter(adapter: str) -> None:
        mine = [(n, a) for n, a, h in specs if h == adapter]
        due = {n: start for n, _ in mine}
        while True:
            name, address = min(mine, key=lambda d: due[d[0]])
            wait = due[name] - time.monotonic()
            if due[name] >= end:
                return
            if wait > 0:
                time.sleep(wait)  # a fixed-rate poller, as the seed's cron-style gateway was
            cmd = [sys.executable, "-m", "bluez_jk.cli.read", "--address", address]
            cmd += ["--adapter", adapter, "--timeout", "10"]
            done = subprocess.run(cmd, env=env, capture_output=True, check=False)
            with lock:
                times[name].append(time.monotonic())
                if done.returncode != 0:
                    failures[0] += 1
            due[name] += args.interval

    adapters = sorted({h for _, _, h in specs})
    threads = [threading.Thread(target=poll_adapter, args=(a,)) for a in adapters]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    finish = time.monotonic()
    usage1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (usage1.ru_utime + usage1.ru_stime) - (usage0.ru_utime + usage0.ru_stime)
    reads = sum(len(v) for v in times.values())
    return {
        "reads": reads,
        "failed_reads": failures[0],
        "cpu_s": cpu,
        "cpu_ms_per_read": 1000 * cpu / max(reads, 1),
        "rss_mib_hwm_per_process": usage1.ru_maxrss / 1024,
        "missed_deadlines": missed_deadlines(times, start, max(finish, end), args.interval),
    }


async def _reader_reads(
    specs: list[tuple[str, str, str]], interval: float, duration: float
) -> dict[str, float]:
    """`Reader.read` on the gateway's schedule without the gateway: one Reader, each device
    read by a loop of its own at the gateway's times (a first read at a random offset within
    the first interval, then every `interval` +/- the gateway's jitter, counted from the
    start of the previous read), the reads of one adapter one at a time in arrival order
    (an asyncio.Lock per adapter, as the gateway's adapter gate; no lock-file polling between
    the reads of one process). CPU seconds of this process over the window (idle time
    included, as for the gateway), per read finished in it, after one warm-up read of each
    device."""
    from bluez_jk.reader import Reader, ReadRequest  # noqa: PLC0415 - only in the worker

    requests = [ReadRequest(name=n, address=a, adapter=h, timeout_s=10) for n, a, h in specs]
    loop = asyncio.get_running_loop()
    rng = random.Random(13)  # the gateway's jitter, the same in every run
    gates = {h: asyncio.Lock() for _, _, h in specs}
    spread = min(0.05 * interval, 0.5)  # scheduler.Scheduler._jitter
    reads = failed = 0

    async with Reader() as reader:

        async def poll(request: ReadRequest, end: float) -> None:
            nonlocal reads, failed
            due = loop.time() + rng.uniform(0.0, min(interval, 2.0))
            while True:
                await asyncio.sleep(max(0.0, due - loop.time()))
                if loop.time() >= end:
                    return
                async with gates[request.adapter]:
                    start = loop.time()
                    failed += (await reader.read(request))["error"] is not None
                reads += 1
                due = start + interval + rng.uniform(-spread, spread)

        await asyncio.gather(*(reader.read(request) for request in requests))  # warm-up
        cpu0, end = time.process_time(), loop.time() + duration
        await asyncio.gather(*(poll(request, end) for request in requests))
        cpu = time.process_time() - cpu0
    return {"reads": reads, "failed_reads": failed, "cpu_ms_per_read": 1000 * cpu / max(reads, 1)}


def median_run(runs: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """The run whose `key` is the median (the lower middle one of an even number)."""
    return sorted(runs, key=lambda r: float(r[key]))[(len(runs) - 1) // 2]


def bench_reader(args: argparse.Namespace, sim: SimHandle, work: Path) -> dict[str, Any]:
    """The reader alone on the same simulator, in a process of its own."""
    env = {**sim.env, "BLUEZ_JK_LOCK_DIR": str(work)}
    argv = [sys.executable, __file__, "--reader-worker", "--devices", str(args.devices)]
    argv += ["--adapters", str(args.adapters), "--interval", str(args.interval)]
    argv += ["--duration", str(args.duration)]
    done = subprocess.run(argv, env=env, capture_output=True, check=True)
    result: dict[str, Any] = json.loads(done.stdout.decode().strip().splitlines()[-1])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=8)
    parser.add_argument("--adapters", type=int, default=2)
    parser.add_argument("--interval", type=float, default=2.0)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--latency-samples", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3, help="gateway / reader-alone pairs")
    parser.add_argument("--timing", default="zero", choices=["zero", "fast", "real"])
    parser.add_argument("--reader-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.reader_worker:
        specs = device_specs(args.devices, args.adapters)
        print(json.dumps(asyncio.run(_reader_reads(specs, args.interval, args.duration))))
        return 0

    with tempfile.TemporaryDirectory(prefix="bench-gw-") as tmp:
        work = Path(tmp)
        specs = device_specs(args.devices, args.adapters)
        sim = SimHandle(sim_devices(specs), timing=args.timing).start()
        broker = Broker(workdir=work / "mosquitto", extra_conf="set_tcp_nodelay true\n")
        broker.start()
        try:
            pairs = [
                (bench_gateway(args, sim, broker, work), bench_reader(args, sim, work))
                for _ in range(args.rounds)
            ]
            gw = median_run([g for g, _ in pairs], "cpu_ms_per_read")
            alone = median_run([a for _, a in pairs], "cpu_ms_per_read")
            stream = bench_gateway(args, sim, broker, work, keep_connected=True)
            lat = bench_latency(args, sim, broker, work)
            ppp = bench_process_per_poll(args, sim, work)
        finally:
            broker.stop()
            sim.stop()

    ratio = ppp["cpu_ms_per_read"] / max(gw["cpu_ms_per_read"], 1e-9)
    peak_rss = max(g["rss_mib_hwm"] for g, _ in pairs)
    print(
        f"setup: {args.devices} BMS on {args.adapters} adapters, every {args.interval} s, "
        f"{args.duration} s, simulator timing {args.timing}; gateway and reader alone: median "
        f"of {args.rounds} alternating rounds"
    )
    print(
        "  rounds (gateway / reader alone, ms CPU per read): "
        + ", ".join(f"{g['cpu_ms_per_read']:.2f} / {a['cpu_ms_per_read']:.2f}" for g, a in pairs)
    )
    print(
        f"gateway:          {gw['reads']} reads ({gw['failed_reads']} failed), "
        f"CPU {gw['cpu_ms_per_read']:.2f} ms/read, RSS peak {gw['rss_mib_peak']:.1f} MiB "
        f"(HWM {gw['rss_mib_hwm']:.1f}; of every round {peak_rss:.1f}), "
        f"missed deadlines {gw['missed_deadlines']}"
    )
    print(
        f"keep_connected:   {stream['reads']} readings ({stream['failed_reads']} failed), "
        f"CPU {stream['cpu_ms_per_s']:.1f} ms per second (polling: {gw['cpu_ms_per_s']:.1f}), "
        f"{stream['cpu_ms_per_read']:.2f} ms per reading, RSS peak {stream['rss_mib_peak']:.1f} "
        f"MiB, missed deadlines {stream['missed_deadlines']}"
    )
    print(
        f"reader alone:     {alone['reads']} reads ({alone['failed_reads']} failed), "
        f"CPU {alone['cpu_ms_per_read']:.2f} ms/read; the gateway adds "
        f"{gw['cpu_ms_per_read'] - alone['cpu_ms_per_read']:.2f} ms/read"
    )
    print(
        f"gateway latency:  cmd/read -> raw minus link time, median "
        f"{lat['added_latency_ms_median']:.1f} ms, p95 {lat['added_latency_ms_p95']:.1f} ms "
        f"({lat['samples']} samples)"
    )
    print(
        f"process-per-poll: {ppp['reads']} reads ({ppp['failed_reads']} failed), "
        f"CPU {ppp['cpu_ms_per_read']:.2f} ms/read, max RSS of one reader "
        f"{ppp['rss_mib_hwm_per_process']:.1f} MiB, missed deadlines {ppp['missed_deadlines']}"
    )
    print(f"CPU per read ratio (process-per-poll / gateway): {ratio:.1f}x")
    checks = {
        f"CPU ratio >= {TARGET_CPU_RATIO:.0f}x": ratio >= TARGET_CPU_RATIO,
        f"RSS < {TARGET_RSS_MIB:.0f} MiB (every round)": peak_rss < TARGET_RSS_MIB,
        f"median added latency < {TARGET_LATENCY_MS:.0f} ms": lat["added_latency_ms_median"]
        < TARGET_LATENCY_MS,
        "zero missed deadlines (every round)": all(g["missed_deadlines"] == 0 for g, _ in pairs),
        f"gateway adds <= {TARGET_GATEWAY_OVERHEAD_MS:.0f} ms CPU per read to the reader's": (
            gw["cpu_ms_per_read"] - alone["cpu_ms_per_read"] <= TARGET_GATEWAY_OVERHEAD_MS
        ),
    }
    for what, ok in checks.items():
        print(f"target {what}: {'met' if ok else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
