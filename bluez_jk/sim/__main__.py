"""`python -m bluez_jk.sim` is `jk-ble-sim`."""

import sys

from bluez_jk.cli.sim import main

sys.exit(main())
