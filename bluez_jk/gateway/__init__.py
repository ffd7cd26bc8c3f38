"""The long-running MQTT gateway: configuration, scheduling, publishing, commands."""

from bluez_jk.lazy_modules import PAHO_ONLY_FOR_PROXIES, defer

# Before any module of this package imports paho (bluez_jk/lazy_modules.py says why).
for _name in PAHO_ONLY_FOR_PROXIES:
    defer(_name)
