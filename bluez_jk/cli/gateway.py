"""`jk-ble-mqtt-gateway`: the long-running BLE poller that publishes every BMS over MQTT.

Exit codes: 0 clean stop (SIGTERM/SIGINT) or a valid `--check-config`; 1 the gateway failed or
`--probe` could not connect to the broker; 2 usage or configuration error (the message names the
key and the reason).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import signal
import sys
from collections.abc import Sequence

from bluez_jk import __version__
from bluez_jk.errors import ConfigError
from bluez_jk.gateway.config import ConfigProblems, GatewayConfig, load_config
from bluez_jk.gateway.service import Gateway
from bluez_jk.reader import Reader

log = logging.getLogger("bluez_jk.gateway")

DEFAULT_CONFIG = "/etc/bluez-jk/jk_ble_gateway.json"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jk-ble-mqtt-gateway", description="Poll JK-BMS over BlueZ and publish over MQTT."
    )
    parser.add_argument("--config", default=DEFAULT_CONFIG, help=f"default {DEFAULT_CONFIG}")
    parser.add_argument(
        "--check-config", action="store_true", help="validate the config, print problems, exit"
    )
    parser.add_argument(
        "--probe",
        action="store_true",
        help="with --check-config: also connect to the broker (credentials, TLS, will) and "
        "report what happened (exit 1 when it fails)",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--log-level",
        default="INFO",
        type=str.upper,  # jk-ble-read takes lower case; accept both spellings everywhere
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
    )
    return parser


def _problems(err: ConfigError) -> list[str]:
    if isinstance(err, ConfigProblems):
        return [p.message for p in err.problems]
    return [err.message]


async def _serve(config: GatewayConfig) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with Reader() as reader:
        # Built on a worker thread: it reads the state file (a disk wait) and nothing in it
        # binds to the event loop before run().
        gateway = await asyncio.to_thread(Gateway, config, reader)
        await gateway.run(stop)
    return 1 if gateway.failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    check = args.check_config or args.probe
    try:
        config = load_config(args.config, defer_credentials=check)
    except ConfigError as err:
        for problem in _problems(err):
            print(f"config error: {problem}", file=sys.stderr)
        return 2
    if check:
        return _check(args.config, config, probe=args.probe)
    # What exists now (modules, the config) lives as long as the process: moved out of the
    # collector's way, every collection walks only what reads allocate (a full collection
    # over the imports cost about 0.7 ms per read on the simulator bench).
    gc.freeze()
    return asyncio.run(_serve(config))


def _check(path: str, config: GatewayConfig, *, probe: bool) -> int:
    """Print the summary of a valid config; with `probe`, the result of a real connection."""
    mqtt = config.mqtt
    summary: dict[str, object] = {
        "ok": True,
        "config": path,
        "devices": [d.name for d in config.devices],
        "broker": f"{mqtt.host}:{mqtt.port}",
        "notes": list(config.notes),
    }
    for note in config.notes:
        print(f"note: {note}", file=sys.stderr)
    if not probe:
        print(json.dumps(summary))
        return 0
    from bluez_jk.gateway.probe import probe_broker  # noqa: PLC0415 - paho only for --probe

    error = probe_broker(mqtt, will_topic=f"{mqtt.base_topic}/gateway/online")
    summary["probe"] = {"ok": error is None, "error": error}
    summary["ok"] = error is None
    print(json.dumps(summary))
    if error is not None:
        print(f"broker {mqtt.host}:{mqtt.port}: {error}", file=sys.stderr)
        return 1
    print(f"broker {mqtt.host}:{mqtt.port}: connected and accepted the will", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
