"""The emulated boards both rigs carry (same addresses, profiles and adapters)."""

from __future__ import annotations

from bluez_jk.sim.devices import DeviceSpec

# Four boards: the three firmware generations and the two-FFE1 layout, on two adapters.
BOARDS = {
    "jk1": DeviceSpec("C8:47:80:37:02:E8", "hci0", "JK02_32S", "JK_PB2A16S20P"),
    "jk2": DeviceSpec("C8:47:80:11:22:33", "hci0", "JK02_24S", "JK-B2A24S15P"),
    "jk3": DeviceSpec("C8:47:80:44:55:66", "hci1", "JK04", "JK-B2A16S", cells=16),
    "jk4": DeviceSpec("C8:47:80:77:88:99", "hci1", "JK02_32S", "JK_B2A8S20P", layout="new"),
    # Kept for the AcquireNotify failure that wedges BlueZ < 5.84 until bluetoothd restarts.
    "jk5": DeviceSpec("C8:47:80:AA:BB:CC", "hci1", "JK02_32S", "JK_PB2A16S20P"),
}
GATEWAY_BOARDS = ("jk1", "jk2", "jk3", "jk4")
