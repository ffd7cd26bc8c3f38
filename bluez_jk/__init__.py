"""bluez-jk: one BlueZ poller for JK-BMS boards, publishing over MQTT."""

__version__ = "0.1.0"
