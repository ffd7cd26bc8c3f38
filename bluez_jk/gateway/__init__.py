"""The long-running MQTT gateway: configuration, scheduling, publishing, commands."""

from bluez_jk.lazy_modules import defer

# Before any module of this package imports paho, which imports urllib.request only for its
# proxy settings (bluez_jk/lazy_modules.py).
defer("urllib.request")
