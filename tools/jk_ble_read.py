#!/usr/bin/env python3
"""Thin wrapper: run `jk-ble-read` from a checkout without installing the package."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tools.checkout import require  # noqa: E402 - the path above makes it importable

main = require("bluez_jk.cli.read", "jk_ble_read.py")

if __name__ == "__main__":
    sys.exit(main())
