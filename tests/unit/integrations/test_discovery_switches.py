"""Home Assistant `switch` entities for control: only the switches passed in (the gateway
passes the enabled and allowed ones), state from the settings frame via metrics, commands on
cmd/set in the exact payload the policy accepts, never optimistic."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from bluez_jk.control.policy import parse_set_request
from bluez_jk.gateway.config import parse_config
from bluez_jk.gateway.discovery import discovery_configs
from bluez_jk.gateway.metrics import to_metrics
from bluez_jk.gateway.service import Gateway
from tests.unit.gateway.fakes import FakeClock, FakeReader
from tests.unit.integrations.readings import vector_reading
from tests.unit.integrations.test_discovery import VALIDATORS, render


def switches(configs: dict[str, str]) -> dict[str, dict[str, Any]]:
    return {t: json.loads(p) for t, p in configs.items() if t.split("/")[1] == "switch"}


def test_no_switch_without_control() -> None:
    reading = vector_reading("jk02_32s_v19_27")
    assert switches(discovery_configs("jk1", reading, base_topic="bms", prefix="homeassistant",
                                      node_id="pi")) == {}  # fmt: skip


def test_allowed_switches_validate_and_follow_the_settings() -> None:
    reading = vector_reading("jk02_32s_v19_27")
    configs = switches(
        discovery_configs(
            "jk1",
            reading,
            base_topic="bms",
            prefix="homeassistant",
            node_id="pi",
            switches=("charging", "balancing"),
        )
    )
    assert sorted(configs) == [
        "homeassistant/switch/pi/jk1_balancing_control/config",
        "homeassistant/switch/pi/jk1_charging_control/config",
    ]
    metrics = json.dumps(to_metrics(reading))
    settings = reading["status"]["settings"]
    for topic, config in configs.items():
        VALIDATORS["switch"].validate(config)
        assert config["optimistic"] is False
        assert config["command_topic"] == "bms/jk/jk1/cmd/set"
        assert config["state_topic"] == "bms/jk/jk1/metrics"
        # The payloads HA sends are exactly what cmd/set accepts.
        on, off = (
            parse_set_request(config["payload_on"].encode()),
            parse_set_request(config["payload_off"].encode()),
        )
        assert (on.value, off.value, on.dry_run) == (True, False, False)
        key = {"charging": "charging_switch", "balancing": "balancing_switch"}[on.name]
        state = render(config["value_template"], metrics)
        assert state == ("ON" if settings[key] else "OFF"), topic
        assert state in (config["state_on"], config["state_off"])


async def test_the_gateway_offers_switches_only_when_enabled_and_allowed(tmp_path: Path) -> None:
    def build(control: dict[str, Any] | None) -> Gateway:
        raw: dict[str, Any] = {
            "mqtt": {"base_topic": "b"},
            "state_dir": str(tmp_path / str(time.monotonic_ns())),
            "homeassistant": {"enabled": True},
            "devices": [{"name": "jk1", "address": "C8:47:80:37:02:E1"}],
        }
        if control is not None:
            raw["control"] = control
        clock = FakeClock()
        return Gateway(parse_config(raw), FakeReader(clock), clock=clock)

    async def published(control: dict[str, Any] | None) -> set[str]:
        gateway = await asyncio.to_thread(build, control)  # it reads its state file
        gateway._publish_discovery("jk1", vector_reading("jk02_32s_v19_27"))
        await gateway.settled()  # the discovery topics it saves
        link = gateway.gateway_link
        return {t for t in link._retained if "/switch/" in t and link._retained[t]}

    assert await published(None) == set()
    assert await published({"enabled": False, "allow": ["charging"]}) == set()
    (topic,) = await published({"enabled": True, "allow": ["discharging", "max_charge_current"]})
    assert topic.startswith("homeassistant/switch/")
    assert topic.endswith("/jk1_discharging_control/config")
