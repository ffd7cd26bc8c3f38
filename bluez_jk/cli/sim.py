"""`jk-ble-sim`: the BlueZ simulator with emulated JK-BMS devices (docs/simulator.md)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys

from bluez_jk import __version__
from bluez_jk.sim.devices import PAIRING_HELP, DeviceSpec, parse_device
from bluez_jk.sim.faults import FAULT_HELP, Fault, parse_fault
from bluez_jk.sim.server import Simulator
from bluez_jk.sim.spawn import PrivateBus
from bluez_jk.sim.timing import TIMINGS, TimingName, describe_timing
from bluez_jk.sim.versions import BLUEZ_NAMES, BluezName

DEFAULT_DEVICE = "C8:47:80:37:02:E8,adapter=hci0,protocol=JK02_32S,name=JK_PB2A16S20P,cells=16"


def _epilog() -> str:
    faults = "\n".join(f"  {name:<24} {text}" for name, text in FAULT_HELP.items())
    pairing = "\n".join(f"  {name:<24} {text}" for name, text in PAIRING_HELP.items())
    timings = "\n".join(f"  {name:<6} {describe_timing(TIMINGS[name])}" for name in TIMINGS)
    return (
        f"faults (--fault NAME[:N][@MAC]; also at run time via org.bluezjk.Simulator1):\n"
        f"{faults}\n\ndevice option pairing= (agents, Pair, CancelPairing, ForgetBond: "
        f'docs/simulator.md "Pairing"):\n{pairing}\n\n'
        f"timings (--timing, default real):\n{timings}\n\n"
        "Devices, faults, timings and the control interface: docs/simulator.md.\n"
    )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="jk-ble-sim",
        description="Serve org.bluez with emulated JK-BMS devices on a D-Bus bus.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_epilog(),
    )
    p.add_argument(
        "--spawn-bus",
        action="store_true",
        help="start a private dbus-daemon and print DBUS_SYSTEM_BUS_ADDRESS=... first",
    )
    p.add_argument(
        "--device",
        action="append",
        default=[],
        metavar="MAC[,adapter=hciN][,protocol=P][,name=N][,cells=N][,sw=X.Y][,layout=old|new]"
        "[,pairing=none|justworks|passkey:NNNNNN|rejects]",
        help=f"an emulated BMS (repeatable; default: {DEFAULT_DEVICE})",
    )
    p.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="NAME[:N][@MAC]",
        help="repeatable; N = times before it clears (none: persistent), @MAC = one device "
        "(none: all); the faults are listed below",
    )
    p.add_argument(
        "--timing",
        choices=sorted(TIMINGS),
        default="real",
        help="link delays (default real): "
        + "; ".join(f"{name}: {describe_timing(TIMINGS[name])}" for name in sorted(TIMINGS)),
    )
    p.add_argument(
        "--bluez",
        choices=BLUEZ_NAMES,
        default="5.66",
        help="BlueZ version whose D-Bus behaviour to play (default 5.66, Debian 12 / Pi OS "
        "bookworm): before 5.84 a failed AcquireNotify never replies and wedges the notify",
    )
    p.add_argument(
        "--log-level",
        default="WARNING",
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="default WARNING (any case)",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s"
    )
    try:
        devices = [parse_device(text) for text in (args.device or [DEFAULT_DEVICE])]
        faults = [parse_fault(text) for text in args.fault]
    except ValueError as err:
        print(f"jk-ble-sim: {err}", file=sys.stderr)
        return 2
    timing: TimingName = args.timing
    # Until the event loop installs its handlers, SIGTERM unwinds like Ctrl-C so that the
    # private bus is still stopped and its directory removed.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        if args.spawn_bus:
            with PrivateBus(die_with_parent=True) as bus:
                return asyncio.run(_serve(devices, faults, timing, bus.address, args.bluez))
        address = os.environ.get("DBUS_SYSTEM_BUS_ADDRESS")
        if not address:
            print("jk-ble-sim: set DBUS_SYSTEM_BUS_ADDRESS or use --spawn-bus", file=sys.stderr)
            return 2
        return asyncio.run(_serve(devices, faults, timing, address, args.bluez))
    except KeyboardInterrupt:
        return 0


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(0)


async def _serve(
    devices: list[DeviceSpec],
    faults: list[Fault],
    timing: TimingName,
    address: str,
    bluez: BluezName = "5.66",
) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with Simulator(devices, faults, timing, bus_address=address, bluez=bluez) as sim:
        # Printed once org.bluez is owned, so whoever reads it can use the bus at once.
        print(f"DBUS_SYSTEM_BUS_ADDRESS={address}", flush=True)
        closed = asyncio.ensure_future(sim.wait_closed())
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait({closed, stopping}, return_when=asyncio.FIRST_COMPLETED)
        # Shutting down from here on: a further Ctrl-C or SIGTERM (a shell's trap after the
        # terminal's SIGINT) must not interrupt the cleanup and leave the private bus's
        # directory behind; the loop's own handlers are gone once asyncio.run returns.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        for fut in (closed, stopping):
            fut.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await fut
        if closed.done() and not stopping.done():
            return 1
    return 0
