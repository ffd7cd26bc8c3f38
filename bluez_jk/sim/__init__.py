"""A BlueZ stand-in on a private D-Bus, serving emulated JK-BMS devices."""
