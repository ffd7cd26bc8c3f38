"""BlueZ over the system D-Bus with dbus-fast: adapters, devices, GATT, notifications."""
