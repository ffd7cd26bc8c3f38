"""Runs inside the VM as root: real dbus-daemon + bluetoothd, bumble BMS peers, the scenarios.

Usage (from the repository root, by `vm.py` through virtme-ng): `python -m tests.realbluez.guest
WORKDIR`. Every scenario's `Outcome` is appended to WORKDIR/results.jsonl as soon as it is
known, so a run cut short by its deadline still reports what it finished; WORKDIR/done marks
a complete run. Logs of every daemon land in WORKDIR too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bumble.transport import open_transport
from dbus_fast import BusType, Message, Variant
from dbus_fast.aio import MessageBus

from bluez_jk.sim.faults import make_fault
from tests.realbluez import scenarios
from tests.realbluez.gateway_run import bluetoothd_restart, gateway_scenario
from tests.realbluez.guest_boards import ADAPTERS, BOARDS, PAIRING
from tests.realbluez.pairing import lost_bond
from tests.realbluez.peer import (
    HostController,
    PeerBms,
    RigLink,
    VhciSink,
    host_controller,
    vhci_sink,
)
from tests.realbluez.probes import all_probes
from tests.realbluez.scenarios import Bms, Outcome

log = logging.getLogger("realbluez.guest")
BLUETOOTHD = "/usr/libexec/bluetooth/bluetoothd"


class Daemons:
    """dbus-daemon (Debian's system bus policy) and bluetoothd 5.66, as on a Pi."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.bluetoothd: subprocess.Popen[bytes] | None = None
        self.btmon: subprocess.Popen[bytes] | None = None
        self.restarts = 0

    def start(self) -> None:
        subprocess.run(["modprobe", "hci_vhci"], check=True)
        # The VM shares the host's root read-only; bluetoothd's storage must be its own.
        for path in ("/var/lib/bluetooth", "/run/dbus"):
            Path(path).mkdir(parents=True, exist_ok=True)
            subprocess.run(["mount", "-t", "tmpfs", "tmpfs", path], check=True)
        subprocess.run(["dbus-daemon", "--system", "--fork"], check=True)
        if os.environ.get("REALBLUEZ_BTMON"):
            # Every controller's HCI traffic, across bluetoothd restarts (the monitor channel).
            self.btmon = subprocess.Popen(
                ["btmon", "-w", str(self.work / "hci.btsnoop")],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        self.start_bluetoothd()

    def start_bluetoothd(self) -> None:
        logfile = (self.work / "bluetoothd.log").open("ab")
        debug = bool(os.environ.get("REALBLUEZ_DEBUG"))
        if debug:
            # A crash leaves a core in the work directory (inherited limit), for gdb.
            Path("/proc/sys/kernel/core_pattern").write_text(f"{self.work}/core.%e.%p\n")
            unlimited = (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
            resource.setrlimit(resource.RLIMIT_CORE, unlimited)
        self.bluetoothd = subprocess.Popen(
            [BLUETOOTHD, "-n", *(["-d"] if debug else [])],
            stdout=logfile,
            stderr=subprocess.STDOUT,
        )

    def restart_bluetoothd(self) -> None:
        assert self.bluetoothd is not None
        self.bluetoothd.send_signal(signal.SIGTERM)
        self.bluetoothd.wait(30)
        self.restarts += 1
        self.start_bluetoothd()


class RealRig:
    kind = "real"

    def __init__(self, work: Path, daemons: Daemons) -> None:
        self.work = work
        self.daemons = daemons
        self.link = RigLink()
        self.peers: dict[str, PeerBms] = {}
        self.bms = {
            name: Bms(name, spec.address, spec.adapter, spec.protocol)
            for name, spec in BOARDS.items()
        }
        locks = work / "locks"
        locks.mkdir(exist_ok=True)
        locks.chmod(0o1777)
        self.env = dict(os.environ, BLUEZ_JK_LOCK_DIR=str(locks), PYTHONPATH=os.getcwd())
        self._transports: list[Any] = []
        # What the rig had to do beyond waiting after a restart, for the scenario's summary.
        self.restart_notes: list[str] = []
        self.controllers: dict[str, HostController] = {}
        self.sinks: dict[str, VhciSink] = {}
        self._supervisor: asyncio.Task[None] | None = None

    async def start(self) -> None:
        for index in range(len(ADAPTERS)):  # the kernel numbers vhci controllers in order
            transport = await open_transport("vhci")
            self._transports.append(transport)
            sink = vhci_sink(transport)
            self.sinks[f"hci{index}"] = sink
            self.controllers[f"hci{index}"] = host_controller(
                f"hci{index}", index, transport.source, sink, self.link
            )
            await wait_for_adapter(f"hci{index}")
        for name, spec in BOARDS.items():
            peer = PeerBms(spec, self.link, pairing=PAIRING.get(name, "none"))
            await peer.start()
            self.peers[name] = peer
        self._supervisor = asyncio.create_task(self.link.supervise())

    def peer(self, address: str) -> PeerBms:
        return next(p for p in self.peers.values() if p.spec.address == address)

    async def fault(self, name: str, address: str, on: bool) -> None:
        peer = self.peer(address)
        if name == "adapter-wedged":
            self.controllers[peer.spec.adapter].wedged = on
        elif name == "not-advertising":
            await (peer.stop_advertising() if on else peer.resume_advertising())
        elif on:
            peer.faults.add(make_fault(name, 1 if name == "drop-mid-frame" else None, address))
        else:
            peer.faults.clear(name, address)

    async def vanish(self, address: str) -> None:
        await self.peer(address).vanish()

    async def appear(self, address: str) -> None:
        await self.peer(address).appear()

    async def forget_bond(self, address: str) -> None:
        await self.peer(address).forget_bond()

    async def wait_adapters(self) -> list[str]:
        """Every adapter powered again; what it took, where more than waiting.

        bluetoothd is restarted once when it has exited (on a Pi the next D-Bus call to
        org.bluez starts it again through systemd; the VM has no systemd, so the call only
        fails with "Launch helper exited") or when an adapter will not power on: CI saw hci0
        refuse five `power on`s over 100 s after the restart scenario, then bluetoothd gone."""
        notes, self.restart_notes = self.restart_notes, []
        for attempt in (1, 2):
            try:
                for adapter in ADAPTERS:
                    note = await wait_for_adapter(adapter, ADAPTER_WAIT_S * attempt)
                    if note:
                        notes.append(note)
                return notes + self.radio_notes()
            except RuntimeError as err:
                state = self.bluetoothd_state()
                if attempt == 2:
                    tail = self.bluetoothd_log_tail()
                    raise RuntimeError(f"{err}; bluetoothd {state}; {tail}") from err
                notes.append(f"{err}; bluetoothd {state}: restarted it")
                await asyncio.to_thread(self.daemons.restart_bluetoothd)
        return notes

    def radio_notes(self) -> list[str]:
        """What the rig's radio did since the last call that a real one does too: packets the
        kernel refused (`VhciSink`), links ended by supervision timeout (`RigLink`)."""
        notes = []
        refused = {name: sink.dropped for name, sink in self.sinks.items() if sink.dropped}
        for sink in self.sinks.values():
            sink.dropped = 0
        if refused:
            listed = ", ".join(f"{name} {count}" for name, count in refused.items())
            notes.append(f"packets of a controller that was down, refused by the kernel: {listed}")
        if self.link.supervision_timeouts:
            notes.append(f"links ended by supervision timeout: {self.link.supervision_timeouts}")
            self.link.supervision_timeouts = 0
        return notes

    def bluetoothd_state(self) -> str:
        proc = self.daemons.bluetoothd
        code = None if proc is None else proc.poll()
        return "running" if proc is not None and code is None else f"exited ({code})"

    def bluetoothd_log_tail(self, lines: int = 12) -> str:
        """The end of bluetoothd's log, for a failure message that CI prints (its work
        directory stays on the CI machine)."""
        path = self.work / "bluetoothd.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "bluetoothd.log ends: " + " | ".join(text.splitlines()[-lines:])

    def pairings(self, address: str) -> int | None:
        return self.peer(address).pairings

    def bluez_alive(self) -> bool:
        return self.daemons.bluetoothd is not None and self.daemons.bluetoothd.poll() is None

    async def restart_bluez(self) -> None:
        """`systemctl restart bluetooth`, and once more if the new bluetoothd has not taken up
        every controller within REGISTER_GRACE_S, as an administrator would; the summary says
        when the rig had to. The cause seen in CI (a controller cut off from the kernel by
        bumble's transport) is gone with `VhciSink` (docs/bluez.md fact 18)."""
        await asyncio.to_thread(self.daemons.restart_bluetoothd)
        missing = await adapters_missing(ADAPTERS, REGISTER_GRACE_S)
        if missing:
            self.restart_notes.append(
                f"{', '.join(missing)} not taken up by the restarted bluetoothd within "
                f"{REGISTER_GRACE_S:.0f} s: restarted it once more"
            )
            await asyncio.to_thread(self.daemons.restart_bluetoothd)

    async def close(self) -> None:
        if self._supervisor is not None:
            self._supervisor.cancel()
        for transport in self._transports:
            with contextlib.suppress(Exception):
                await transport.close()


async def wait_for_adapter(adapter: str, within_s: float = 120.0) -> str | None:
    """bluetoothd picks the new controller up and powers it (AutoEnable, 5.66's default).

    An adapter still off after AUTO_ENABLE_GRACE_S is powered on by hand, as a user would
    (`bluetoothctl power on`): CI once saw adapters stay off for over a minute after a
    bluetoothd restart on a slow machine. Returns what was needed (None: nothing), for the
    scenario's summary."""
    deadline = time.monotonic() + within_s
    waited_since = time.monotonic()
    last = "no answer"  # what bluetoothd said last, for the failure message
    by_hand = 0
    while time.monotonic() < deadline:
        try:
            bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
            try:
                powered, last = await _adapter_power(bus, adapter)
                if powered:
                    return f"{adapter} powered on by hand ({by_hand}x)" if by_hand else None
                if time.monotonic() - waited_since > AUTO_ENABLE_GRACE_S:
                    by_hand += 1
                    waited_since = time.monotonic()
                    await bus.call(
                        Message(
                            destination="org.bluez",
                            path=f"/org/bluez/{adapter}",
                            interface="org.freedesktop.DBus.Properties",
                            member="Set",
                            signature="ssv",
                            body=["org.bluez.Adapter1", "Powered", Variant("b", True)],
                        )
                    )
            finally:
                bus.disconnect()
        except Exception as err:  # bluetoothd or the bus still starting
            last = repr(err)
        await asyncio.sleep(0.5)
    raise RuntimeError(
        f"{adapter} did not come up powered in bluetoothd within {within_s} s "
        f"(powered on by hand {by_hand}x; last: {last})"
    )


AUTO_ENABLE_GRACE_S = 20.0
# How long one attempt of `RealRig.wait_adapters` waits for each adapter (the second: twice).
ADAPTER_WAIT_S = 60.0
# A restarted bluetoothd has taken up every controller within a few seconds in every run seen.
REGISTER_GRACE_S = 30.0


async def adapters_missing(adapters: list[str] | tuple[str, ...], within_s: float) -> list[str]:
    """The adapters bluetoothd still has no object for after `within_s` (powered or not)."""
    deadline = time.monotonic() + within_s
    missing = list(adapters)
    while missing and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        with contextlib.suppress(Exception):  # bluetoothd or the bus still starting
            bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
            try:
                for adapter in list(missing):
                    _, last = await _adapter_power(bus, adapter)
                    if last.startswith(POWER_STATE):  # an answer, not an error
                        missing.remove(adapter)
            finally:
                bus.disconnect()
    return missing


async def _adapter_power(bus: MessageBus, adapter: str) -> tuple[bool, str]:
    reply = await bus.call(
        Message(
            destination="org.bluez",
            path=f"/org/bluez/{adapter}",
            interface="org.freedesktop.DBus.Properties",
            member="GetAll",
            signature="s",
            body=["org.bluez.Adapter1"],
        )
    )
    if reply is None or not reply.body:
        return False, "no reply" if reply is None else f"{reply.error_name}"
    if reply.error_name:
        return False, f"{reply.error_name}: {reply.body}"
    props = reply.body[0]
    state = props.get("PowerState")
    return bool(props.get("Powered") and props["Powered"].value), (
        f"{POWER_STATE} {state.value if state else '?'}"
    )


POWER_STATE = "PowerState"


def record(work: Path, outcome: Outcome) -> None:
    with (work / "results.jsonl").open("a") as out:
        out.write(outcome.to_json() + "\n")
    mark = "PASS" if outcome.ok else "FAIL"
    print(
        f"[{time.monotonic():8.1f}] {mark} {outcome.scenario}: {outcome.summary}"
        f" ({outcome.duration_s:.1f} s)",
        flush=True,
    )


async def run_all(work: Path) -> None:
    daemons = Daemons(work)
    daemons.start()
    rig = RealRig(work, daemons)
    await rig.start()
    print(f"[{time.monotonic():8.1f}] rig up: {', '.join(rig.bms)}", flush=True)
    only = os.environ.get("REALBLUEZ_ONLY", "")
    reads = scenarios.env_int("REALBLUEZ_READS", 100)
    gateway_s = scenarios.env_int("REALBLUEZ_GATEWAY_S", 300)
    standard = scenarios.standard(reads)
    *first, beside = standard  # the read series, faults and wedge run beside the gateway
    assert isinstance(beside, tuple)
    steps: list[scenarios.Step] = [
        *first,
        (
            [gateway_scenario(gateway_s)],
            beside[0],
            beside[1],
            [*all_probes(), *beside[2]],
        ),
        # The lost bond crashes bluetoothd 5.66 and restarts it; the restart scenario then
        # finds its own gateway gone, so it runs last.
        lost_bond,
        bluetoothd_restart,
    ]

    try:
        await scenarios.run_steps(rig, steps, lambda outcome: record(work, outcome), only)
    finally:
        await rig.close()
    (work / "done").write_text("ok\n")


def main() -> None:
    work = Path(sys.argv[1])
    logging.basicConfig(
        level=logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    (work / "booted").write_text(f"{time.time()}\n")
    shutil.rmtree(work / "results.jsonl", ignore_errors=True)
    asyncio.run(run_all(work))


if __name__ == "__main__":
    main()
