"""The long-running MQTT gateway: configuration, scheduling, publishing, commands."""
