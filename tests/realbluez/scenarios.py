"""One list of BLE scenarios, run against real bluetoothd (in the VM) and against our simulator.

A scenario only talks to the system bus the way a user's tools do (the reader in-process,
`jk-ble-read` / `jk-ble-scan` as processes) and to a `Rig`, which plays the BMS side: its
faults, its disappearance, a bluetoothd restart. `guest.py` gives the real rig (bumble
peripherals behind vhci controllers), `sim_rig.py` the simulator. Every scenario returns an
`Outcome`; the tier's table compares the two columns.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from dbus_fast import BusType, Message, MessageType
from dbus_fast.aio import MessageBus

from bluez_jk.reader import Reader, ReadRequest
from tests.realbluez.guest_boards import BOARDS


@dataclass(frozen=True)
class Bms:
    name: str
    address: str
    adapter: str
    protocol: str


class Rig(Protocol):
    """The BMS side of a scenario and what the scenario needs to know about the machine."""

    kind: str  # "real" | "sim"
    bms: dict[str, Bms]
    env: dict[str, str]  # environment for the tools (bus address, lock dir)

    async def fault(self, name: str, address: str, on: bool) -> None: ...
    async def vanish(self, address: str) -> None: ...
    async def appear(self, address: str) -> None: ...
    def bluez_alive(self) -> bool: ...


@dataclass
class Outcome:
    scenario: str
    ok: bool
    summary: str  # one line for the table: what happened
    duration_s: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), default=str)


Scenario = Callable[[Rig], Awaitable[Outcome]]


def labelled(label: str, fn: Scenario) -> Scenario:
    """Scenarios carry their table label, known before they run (test ids)."""
    fn.label = label  # type: ignore[attr-defined]
    return fn


def label_of(fn: Scenario) -> str:
    return str(getattr(fn, "label", getattr(fn, "__name__", "scenario")))


# ---- helpers -------------------------------------------------------------------------------


def error_of(reading: dict[str, Any]) -> str:
    """`ok`, or `Type (dbus error name)`: what the table shows for one read."""
    err = reading.get("error")
    if not err:
        return "ok"
    text = str(err.get("type"))
    if err.get("dbus_error"):
        text += f" ({err['dbus_error'].removeprefix('org.bluez.Error.')})"
    return text


async def leftovers(bus: MessageBus, address: str) -> list[str]:
    """What is still up for this device: Connected, Notifying, NotifyAcquired (must be none)."""
    reply = await bus.call(
        Message(
            destination="org.bluez",
            path="/",
            interface="org.freedesktop.DBus.ObjectManager",
            member="GetManagedObjects",
        )
    )
    if reply is None or reply.message_type != MessageType.METHOD_RETURN:
        return [f"GetManagedObjects failed: {reply.body if reply else None}"]
    found: list[str] = []
    dev = "dev_" + address.replace(":", "_")
    for path, ifaces in reply.body[0].items():
        if dev not in path:
            continue
        d1 = ifaces.get("org.bluez.Device1")
        if d1 is not None and d1.get("Connected") is not None and d1["Connected"].value:
            found.append(f"{path.rsplit('/', 1)[-1]} Connected")
        ch = ifaces.get("org.bluez.GattCharacteristic1")
        if ch is not None:
            for prop in ("Notifying", "NotifyAcquired"):
                if prop in ch and ch[prop].value:
                    found.append(f"{path.split(dev)[-1]} {prop}")
    return found


async def settle_leftovers(bus: MessageBus, address: str, within_s: float = 6.0) -> list[str]:
    """BlueZ drops the link 2 s after the last client lets go (DISCONNECT_TIMER): wait it out."""
    deadline = time.monotonic() + within_s
    while True:
        left = await leftovers(bus, address)
        if not left or time.monotonic() > deadline:
            return left
        await asyncio.sleep(0.25)


async def system_bus(rig: Rig) -> MessageBus:
    address = rig.env.get("DBUS_SYSTEM_BUS_ADDRESS")
    # Unix fds: AcquireNotify's reply carries one (without them it never arrives).
    if address:
        return await MessageBus(bus_address=address, negotiate_unix_fd=True).connect()
    return await MessageBus(bus_type=BusType.SYSTEM, negotiate_unix_fd=True).connect()


def request(bms: Bms, **kw: Any) -> ReadRequest:
    return ReadRequest(name=bms.name, address=bms.address, adapter=bms.adapter, **kw)


async def run_tool(rig: Rig, *argv: str, timeout_s: float = 180.0) -> tuple[int, dict[str, Any]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        *argv,
        env=rig.env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    try:
        return proc.returncode or 0, json.loads(out)
    except ValueError:
        return proc.returncode or 0, {"stdout": out.decode()[-500:], "stderr": err.decode()[-800:]}


def read_timeout(rig: Rig) -> float:
    """A read's own deadline: emulated radios under TCG are slow, the simulator is not."""
    return 45.0 if rig.kind == "real" else 15.0


def fault_timeout(rig: Rig) -> float:
    """Faults that end in a deadline (silent, gone) cost the whole of it: keep it short."""
    return 25.0 if rig.kind == "real" else 8.0


# ---- scenarios -----------------------------------------------------------------------------


async def scan(rig: Rig) -> Outcome:
    """jk-ble-scan on every adapter a BMS is configured on: each BMS with name and RSSI."""
    seen: dict[str, dict[str, Any]] = {}
    # The simulator's devices each belong to one adapter; on the rig's single radio link every
    # adapter hears every BMS, so one adapter is enough there.
    adapters = sorted({b.adapter for b in rig.bms.values()}) if rig.kind == "sim" else ["hci0"]
    results = await asyncio.gather(
        *(
            run_tool(rig, "bluez_jk.cli.scan", "--adapter", a, "--duration", "8", "--jk-only")
            for a in adapters
        )
    )
    for _, out in results:
        seen.update({d["address"]: d for d in out.get("devices", [])})
    code = max(code for code, _ in results)
    out = {"devices": list(seen.values()), "errors": [o.get("error") for _, o in results]}
    missing = [b.name for b in rig.bms.values() if b.address not in seen]
    unnamed = [a for a, d in seen.items() if not d.get("name") or d.get("rssi") is None]
    ok = code == 0 and not missing and not unnamed
    summary = f"{len(seen)} found" + (f", missing {missing}" if missing else "")
    if unnamed:
        summary += f", no name/RSSI: {unnamed}"
    return Outcome("jk-ble-scan", ok, summary, details={"exit": code, "out": out})


def profile_read(name: str, mode: str) -> Scenario:
    label = f"read {name} ({BOARDS[name].protocol}) notify={mode}"

    async def run(rig: Rig) -> Outcome:
        bms = rig.bms[name]
        bus = await system_bus(rig)
        try:
            async with Reader() as reader:
                t0 = time.monotonic()
                reading = await reader.read(
                    request(bms, timeout_s=read_timeout(rig), notify_mode=mode)  # type: ignore[arg-type]
                )
                took = time.monotonic() - t0
            left = await settle_leftovers(bus, bms.address)
        finally:
            bus.disconnect()
        got = reading.get("got", {})
        ok = reading.get("error") is None and got.get("cell_info") and got.get("device_info")
        ok = bool(ok) and reading.get("protocol") == bms.protocol and not left
        summary = error_of(reading) + (f", left {left}" if left else "")
        return Outcome(
            label,
            ok,
            summary,
            took,
            {"got": got, "protocol": reading.get("protocol"), "error": reading.get("error")},
        )

    return labelled(label, run)


def cli_read(name: str) -> Scenario:
    label = f"jk-ble-read {name} ({BOARDS[name].protocol})"

    async def run(rig: Rig) -> Outcome:
        bms = rig.bms[name]
        t0 = time.monotonic()
        code, out = await run_tool(
            rig,
            "bluez_jk.cli.read",
            "--address",
            bms.address,
            "--adapter",
            bms.adapter,
            "--timeout",
            str(read_timeout(rig)),
        )
        took = time.monotonic() - t0
        ok = code == 0 and out.get("error") is None and out.get("protocol") == bms.protocol
        return Outcome(label, ok, error_of(out), took, {"exit": code, "out": out})

    return labelled(label, run)


def consecutive_reads(name: str, count: int) -> Scenario:
    label = f"{count} consecutive reads of {name}, one Reader"

    async def run(rig: Rig) -> Outcome:
        bms = rig.bms[name]
        durations: list[float] = []
        failures: list[str] = []
        t_start = time.monotonic()
        async with Reader() as reader:
            for _ in range(count):
                t0 = time.monotonic()
                reading = await reader.read(request(bms, timeout_s=read_timeout(rig)))
                durations.append(time.monotonic() - t0)
                if reading.get("error") is not None:
                    failures.append(error_of(reading))
        bus = await system_bus(rig)
        try:
            left = await settle_leftovers(bus, bms.address)
        finally:
            bus.disconnect()
        ok = not failures and not left
        summary = f"{count - len(failures)}/{count} ok, median {statistics.median(durations):.2f} s"
        if failures:
            summary += f", failures {sorted(set(failures))}"
        return Outcome(
            label,
            ok,
            summary,
            time.monotonic() - t_start,
            {
                "failures": failures,
                "median_s": statistics.median(durations),
                "max_s": max(durations),
                "left": left,
            },
        )

    return labelled(label, run)


def parallel_adapters(first: str, second: str, rounds: int) -> Scenario:
    label = f"{first} and {second} in parallel on two adapters"

    async def run(rig: Rig) -> Outcome:
        a, b = rig.bms[first], rig.bms[second]
        assert a.adapter != b.adapter
        failures: list[str] = []
        t0 = time.monotonic()
        async with Reader() as reader:
            for _ in range(rounds):
                readings = await asyncio.gather(
                    reader.read(request(a, timeout_s=read_timeout(rig))),
                    reader.read(request(b, timeout_s=read_timeout(rig))),
                )
                failures += [error_of(r) for r in readings if r.get("error") is not None]
        ok = not failures
        summary = f"{2 * rounds - len(failures)}/{2 * rounds} ok on {a.adapter}+{b.adapter}"
        return Outcome(label, ok, summary, time.monotonic() - t0)

    return labelled(label, run)


def peer_fault(
    name: str,
    fault: str,
    expect: tuple[str, ...],
    *,
    mode: str = "auto",
    label: str | None = None,
) -> Scenario:
    """The BMS misbehaves; the read ends in one of `expect` (`ok` or an error type) within
    its deadline, and nothing stays connected or subscribed afterwards."""
    label = label or f"peer fault {fault} ({name}, notify={mode})"

    async def run(rig: Rig) -> Outcome:
        bms = rig.bms[name]
        timeout = fault_timeout(rig)
        bus = await system_bus(rig)
        try:
            if fault == "vanish":
                await rig.vanish(bms.address)
            else:
                await rig.fault(fault, bms.address, True)
            try:
                async with Reader() as reader:
                    t0 = time.monotonic()
                    reading = await reader.read(
                        request(bms, timeout_s=timeout, notify_mode=mode)  # type: ignore[arg-type]
                    )
                    took = time.monotonic() - t0
            finally:
                if fault == "vanish":
                    await rig.appear(bms.address)
                else:
                    await rig.fault(fault, bms.address, False)
            left = await settle_leftovers(bus, bms.address)
            # After the fault the same BMS must read again (nothing wedged).
            async with Reader() as reader:
                after = await reader.read(request(bms, timeout_s=read_timeout(rig)))
            left_after = await settle_leftovers(bus, bms.address)
        finally:
            bus.disconnect()
        result = error_of(reading)
        kind = "ok" if reading.get("error") is None else str(reading["error"]["type"])
        # The deadline ends the work; the cleanup after it waits for BlueZ's 2 s disconnect
        # grace, which takes longer under TCG.
        in_time = took <= timeout + (6.0 if rig.kind == "real" else 3.0)
        ok = kind in expect and in_time and not left and after.get("error") is None
        ok = ok and not left_after
        summary = f"{result} in {took:.1f} s"
        if left:
            summary += f", left {left}"
        if after.get("error") is not None:
            summary += f", next read {error_of(after)}"
        return Outcome(
            label,
            ok,
            summary,
            took,
            {"error": reading.get("error"), "expect": expect, "after": error_of(after)},
        )

    return labelled(label, run)


async def bleak_read(rig: Rig) -> Outcome:
    """An unmodified Bleak against the same BMS: tells a rig problem from a client problem."""
    bms = rig.bms["jk1"]
    code, out = await run_tool(rig, "tests.realbluez.bleak_probe", bms.address, bms.adapter)
    ok = code == 0 and out.get("frames", 0) >= 2
    return Outcome(label_of(bleak_read), ok, str(out.get("summary", out))[:120], details=out)


async def stuck_acquire(rig: Rig) -> Outcome:
    """BlueZ 5.66: AcquireNotify on a BMS that refuses the CCCD write never replies and
    leaves FFE1 "Notify acquired" for good. The reader names it (NotifyStuck, with the
    restart hint) instead of a bare timeout, and so does the next read, whatever its mode."""
    bms = rig.bms["jk6"]
    await rig.fault("auth-required", bms.address, True)
    try:
        async with Reader() as reader:
            first = await reader.read(
                request(bms, timeout_s=fault_timeout(rig), notify_mode="acquire")
            )
    finally:
        await rig.fault("auth-required", bms.address, False)
    async with Reader() as reader:
        second = await reader.read(request(bms, timeout_s=fault_timeout(rig)))
    bus = await system_bus(rig)
    try:
        left = await settle_leftovers(bus, bms.address)
    finally:
        bus.disconnect()
    # bluetoothd 5.66 crashes when it drops a wedged temporary device (~30 s after the
    # link went down); the reader keeps the device Trusted so that this never happens.
    if rig.kind == "real":
        await asyncio.sleep(45)
    alive = rig.bluez_alive()
    kinds = [(r.get("error") or {}).get("type", "ok") for r in (first, second)]
    ok = kinds == ["NotifyStuck", "NotifyStuck"] and alive
    summary = f"acquire: {error_of(first)}; next read: {error_of(second)}; left {left}"
    summary += "; bluetoothd alive after 45 s" if alive else "; bluetoothd DIED"
    return Outcome(
        label_of(stuck_acquire),
        ok,
        summary,
        details={"first": first.get("error"), "second": second.get("error"), "left": left},
    )


labelled("jk-ble-scan", scan)
labelled("AcquireNotify refused by the BMS wedges FFE1 (jk6)", stuck_acquire)
labelled("Bleak 3.1 reads jk1 (unmodified client)", bleak_read)


Step = Scenario | tuple[list[Scenario], ...]  # one scenario, or lanes run at the same time


def standard(reads: int) -> list[Step]:
    """What both rigs run, in order: reads of every profile and mode (two adapters side by
    side), then the long read series, the peer faults and the wedge, each on an adapter of
    its own (they run beside the gateway on the real rig)."""
    hci0: list[Scenario] = [profile_read(n, m) for n in ("jk1", "jk2") for m in MODES]
    hci0 += [cli_read("jk1"), cli_read("jk2"), bleak_read]
    hci1: list[Scenario] = [profile_read("jk3", m) for m in MODES] + [cli_read("jk3")]
    faults: list[Scenario] = [
        peer_fault("jk5", "slow", ("ok",)),
        peer_fault("jk5", "drop-mid-frame", ("ok", "Disconnected")),
        peer_fault("jk5", "silent", ("Timeout",)),
        # 5.66 answers the refused CCCD write by pairing on its own; without an agent the
        # StartNotify call then hangs (no reply) until the pairing gives up.
        peer_fault("jk5", "auth-required", ("AuthenticationRequired", "Timeout")),
        peer_fault("jk5", "not-advertising", ("ConnectFailed", "DeviceNotFound")),
        peer_fault("jk5", "vanish", ("ConnectFailed", "DeviceNotFound", "Disconnected")),
        stuck_acquire,
    ]
    from tests.realbluez.pairing import all_pairing  # noqa: PLC0415 - it imports this module

    faults += all_pairing()
    return [
        scan,
        (hci0, hci1),
        parallel_adapters("jk1", "jk4", 3),
        ([consecutive_reads("jk7", reads)], faults),
    ]


MODES = ("acquire", "start", "auto")


def flatten(steps: list[Step]) -> list[Scenario]:
    out: list[Scenario] = []
    for step in steps:
        if isinstance(step, tuple):
            for lane in step:
                out += lane
        else:
            out.append(step)
    return out


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    return int(value) if value.isdigit() else default


async def run_one(item: Scenario, rig: Rig) -> Outcome:
    t0 = time.monotonic()
    try:
        outcome = await item(rig)
    except Exception as exc:
        outcome = Outcome(label_of(item), False, f"scenario crashed: {exc!r}")
        outcome.details["traceback"] = traceback.format_exc()
    if not outcome.duration_s:
        outcome.duration_s = time.monotonic() - t0
    return outcome


async def run_steps(
    rig: Rig, steps: list[Step], record: Callable[[Outcome], None], only: str = ""
) -> None:
    """Steps in order; the lanes of a step side by side, each lane in order."""

    async def lane(items: list[Scenario]) -> None:
        for item in items:
            label = label_of(item)
            if only and not any(part in label for part in only.split("|")):
                continue
            record(await run_one(item, rig))

    for step in steps:
        lanes = list(step) if isinstance(step, tuple) else [[step]]
        await asyncio.gather(*(lane(items) for items in lanes))
