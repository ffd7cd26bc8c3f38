"""The JK-BMS BLE protocol: bytes in, plain data out. No I/O, no imports of the rest of bluez-jk."""
