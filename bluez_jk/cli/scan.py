"""`jk-ble-scan`: discover nearby devices on an adapter and list address, name, RSSI and whether
each looks like a JK-BMS (FFE0 service or manufacturer id 0x0B65 / 0x4B4A). One JSON object on
stdout: {"adapter": ..., "devices": [...], "error": null}; exit codes as jk-ble-read."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import sys
from collections.abc import Sequence
from typing import Any

from bluez_jk.adapter_lock import AdapterLock
from bluez_jk.bluez.adapter import resolve_adapter, scan
from bluez_jk.bluez.bus import BluezBus
from bluez_jk.bluez.paths import adapter_name, validate_adapter
from bluez_jk.cli.jsonout import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    JsonArgumentParser,
    add_common,
    emit,
    positive_seconds,
    setup_logging,
)
from bluez_jk.errors import BusError, ConfigError, Interrupted, JkError

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    p = JsonArgumentParser(prog="jk-ble-scan", description=__doc__)
    p.add_argument("--adapter", help="hciN (default: the default adapter)")
    p.add_argument("--duration", type=positive_seconds, default=5.0, help="seconds (default 5)")
    p.add_argument("--jk-only", action="store_true", help="list only devices that look like JK")
    p.add_argument("--pretty", action="store_true")
    add_common(p)
    return p


async def _scan(adapter: str | None, duration_s: float, jk_only: bool) -> dict[str, Any]:
    bus = await BluezBus.connect()
    try:
        objects = await bus.managed_objects(stage="adapter")
        adapter_obj = resolve_adapter(objects, adapter)
        name = adapter_name(adapter_obj)
        # Discovery next to another process's connect attempt disturbs it: take the lock.
        async with AdapterLock(name, timeout_s=duration_s + 30.0):
            entries = await scan(bus, adapter_obj, duration_s)
    finally:
        await bus.close()
    devices = [dataclasses.asdict(e) for e in entries if e.looks_like_jk or not jk_only]
    return {"adapter": name, "devices": devices, "error": None}


def main(argv: Sequence[str] | None = None) -> int:
    pretty = "--pretty" in (sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
        setup_logging(args.log_level)
        adapter = validate_adapter(args.adapter)
    except ConfigError as err:
        emit({"adapter": None, "devices": [], "error": err.to_info()}, pretty=pretty)
        return EXIT_USAGE
    try:
        result = asyncio.run(_scan(adapter, args.duration, args.jk_only))
    except JkError as err:
        emit({"adapter": adapter, "devices": [], "error": err.to_info()}, pretty=pretty)
        return EXIT_FAILED
    except KeyboardInterrupt:
        # Still one JSON object, so a script piping the output never gets nothing.
        info = Interrupted("interrupted by Ctrl-C", stage="discover").to_info()
        emit({"adapter": adapter, "devices": [], "error": info}, pretty=pretty)
        return EXIT_INTERRUPTED
    except Exception as err:  # the process boundary: JSON, never a traceback
        log.exception("jk-ble-scan failed")
        info = BusError(f"internal error: {err!r}").to_info()
        emit({"adapter": adapter, "devices": [], "error": info}, pretty=pretty)
        return EXIT_FAILED
    emit(result, pretty=pretty)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
