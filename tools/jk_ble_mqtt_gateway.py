#!/usr/bin/env python3
"""Thin wrapper: run `jk-ble-mqtt-gateway` from a checkout without installing the package."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bluez_jk.cli.gateway import main

if __name__ == "__main__":
    sys.exit(main())
