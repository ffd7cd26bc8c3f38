"""The emulated boards both rigs carry (same addresses, profiles and adapters)."""

from __future__ import annotations

from bluez_jk.sim.devices import DeviceSpec

# The three firmware generations and the two-FFE1 layout on hci0/hci1 (the gateway's), and
# boards of their own on hci2/hci3 for what runs beside the gateway: the peer faults, the
# AcquireNotify wedge (it stays wedged until bluetoothd restarts), the long read series and
# the single-call probes.
BOARDS = {
    "jk1": DeviceSpec("C8:47:80:37:02:E8", "hci0", "JK02_32S", "JK_PB2A16S20P"),
    "jk2": DeviceSpec("C8:47:80:11:22:33", "hci0", "JK02_24S", "JK-B2A24S15P"),
    "jk3": DeviceSpec("C8:47:80:44:55:66", "hci1", "JK04", "JK-B2A16S", cells=16),
    "jk4": DeviceSpec("C8:47:80:77:88:99", "hci1", "JK02_32S", "JK_B2A8S20P", layout="new"),
    "jk5": DeviceSpec("C8:47:80:55:00:05", "hci2", "JK02_32S", "JK_PB2A16S20P"),
    "jk6": DeviceSpec("C8:47:80:AA:BB:CC", "hci2", "JK02_32S", "JK_PB2A16S20P"),
    "jk7": DeviceSpec("C8:47:80:77:00:07", "hci3", "JK02_24S", "JK-B2A24S15P"),
    # Firmware >= 19.30: no subscription without a paired link.
    "jk8": DeviceSpec("C8:47:80:19:30:08", "hci4", "JK02_32S", "JK_PB2A16S20P"),
    "jk9": DeviceSpec("C8:47:80:19:30:09", "hci4", "JK02_32S", "JK_PB2A16S20P"),
    # The single-call D-Bus probes.
    "jk10": DeviceSpec("C8:47:80:10:10:10", "hci5", "JK02_24S", "JK-B2A24S15P"),
    # Firmware >= 19.30 under the gateway, beside open boards on hci1.
    "jk11": DeviceSpec("C8:47:80:19:30:11", "hci1", "JK02_32S", "JK_PB2A16S20P"),
}
PAIRING = {"jk8": "justworks", "jk9": "passkey:246810", "jk11": "justworks"}
PASSKEY = 246810
GATEWAY_BOARDS = ("jk1", "jk2", "jk3", "jk4", "jk11")
ADAPTERS = sorted({spec.adapter for spec in BOARDS.values()})
