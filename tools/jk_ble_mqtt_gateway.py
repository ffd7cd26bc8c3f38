#!/usr/bin/env python3
"""Thin wrapper: run `jk-ble-mqtt-gateway` from a checkout without installing the package."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tools.checkout import require  # noqa: E402 - the path above makes it importable

main = require("bluez_jk.cli.gateway", "jk_ble_mqtt_gateway.py")

if __name__ == "__main__":
    sys.exit(main())
