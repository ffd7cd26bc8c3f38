"""`jk-ble-pair`: pair with a JK-BMS once by hand (firmware >= 19.30 wants a bonded link), or
remove the bond with --unpair. One JSON object on stdout, also on error: {"address", "adapter",
"paired", "action", "error"}. Pairing connects, pairs through bluez-jk's own agent (answering
with the passkey of --passkey-file when BlueZ asks for one) and reads once to prove the bond
works. Exit 0 done, 1 failed, 2 usage error, 130 interrupted. README: "Firmware 19.30 and
later: pairing"."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from typing import Any

from bluez_jk.bluez.adapter import resolve_adapter
from bluez_jk.bluez.bus import BluezBus
from bluez_jk.bluez.device import remove_device
from bluez_jk.bluez.paths import adapter_name, normalize_mac, validate_adapter
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
from bluez_jk.cli.read import read_passkey
from bluez_jk.errors import ConfigError, Interrupted, JkError
from bluez_jk.names import device_path
from bluez_jk.reader import Reader, ReadRequest


def build_parser() -> JsonArgumentParser:
    p = JsonArgumentParser(prog="jk-ble-pair", description=__doc__)
    p.add_argument("--address", required=True, help="BMS Bluetooth address")
    p.add_argument("--adapter", help="hciN (default: the default adapter)")
    p.add_argument(
        "--passkey-file",
        help="file holding the BMS's passkey ('-': stdin); not needed for "
        "a BMS that pairs without one",
    )
    p.add_argument("--timeout", type=positive_seconds, default=60.0, help="seconds (default 60)")
    p.add_argument("--unpair", action="store_true", help="remove the bond (and BlueZ's object)")
    p.add_argument("--pretty", action="store_true", help="indent the JSON")
    add_common(p)
    return p


async def _pair(address: str, adapter: str | None, args: Any) -> dict[str, Any]:
    passkey = read_passkey(args.passkey_file) if args.passkey_file else None
    request = ReadRequest(
        name=address, address=address, adapter=adapter, timeout_s=args.timeout,
        pairing="auto", passkey=passkey, pair=True,
    )  # fmt: skip
    async with Reader() as reader:
        reading = await reader.read(request)
    return {
        "address": address,
        "adapter": reading["adapter"],
        "action": "pair",
        "paired": reading["paired"],
        "error": reading["error"],
    }


async def _unpair(address: str, adapter: str | None) -> dict[str, Any]:
    bus = await BluezBus.connect()
    try:
        objects = await bus.managed_objects(stage="adapter")
        adapter_obj = resolve_adapter(objects, adapter)
        path = device_path(adapter_obj, address)
        known = path in objects
        if known:
            await remove_device(bus, adapter_obj, path, 10.0)
        return {
            "address": address,
            "adapter": adapter_name(adapter_obj),
            "action": "unpair",
            "paired": False,
            "removed": known,
            "error": None,
        }
    finally:
        await bus.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    result: dict[str, Any] = {"address": None, "adapter": None, "paired": None, "error": None}
    pretty = False
    try:
        args = parser.parse_args(argv)
        pretty = args.pretty
        setup_logging(args.log_level)
        address = normalize_mac(args.address)
        adapter = validate_adapter(args.adapter) if args.adapter else None
        result["address"] = address
        job = _unpair(address, adapter) if args.unpair else _pair(address, adapter, args)
        result = asyncio.run(job)
    except ConfigError as err:
        result["error"] = err.to_info()
        emit(result, pretty=pretty)
        return EXIT_USAGE
    except JkError as err:
        result["error"] = err.to_info()
    except KeyboardInterrupt:
        result["error"] = Interrupted("interrupted (Ctrl-C)").to_info()
        emit(result, pretty=pretty)
        return EXIT_INTERRUPTED
    emit(result, pretty=pretty)
    return EXIT_OK if result["error"] is None else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
