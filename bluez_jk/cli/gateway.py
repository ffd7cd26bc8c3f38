"""`jk-ble-mqtt-gateway`: the long-running BLE poller that publishes every BMS over MQTT.

Exit codes: 0 clean stop (SIGTERM/SIGINT) or a valid `--check-config`; 1 the gateway failed;
2 usage or configuration error (the message names the key and the reason).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from collections.abc import Sequence

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
    try:
        config = load_config(args.config)
    except ConfigError as err:
        for problem in _problems(err):
            print(f"config error: {problem}", file=sys.stderr)
        return 2
    if args.check_config:
        summary = {
            "ok": True,
            "config": args.config,
            "devices": [d.name for d in config.devices],
            "broker": f"{config.mqtt.host}:{config.mqtt.port}",
        }
        print(json.dumps(summary))
        return 0
    return asyncio.run(_serve(config))


if __name__ == "__main__":
    sys.exit(main())
