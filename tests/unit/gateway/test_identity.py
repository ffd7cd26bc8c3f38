"""Two BMS never share one identity: the simulator gives each its own serial and state (seeded
by its address), and the gateway never publishes two Home Assistant devices with the same
identifiers (the second one falls back to its MAC, and the log says so)."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest

from bluez_jk.gateway.config import parse_config
from bluez_jk.gateway.service import Gateway
from bluez_jk.sim.devices import parse_device
from bluez_jk.sim.jkbms import BmsState
from tests.unit.gateway.fakes import FakeClock, FakeReader
from tests.unit.integrations.readings import vector_reading

MAC1, MAC2 = "C8:47:80:37:02:E8", "C8:47:80:11:22:33"


def test_each_emulated_bms_has_its_own_serial_and_state() -> None:
    one = BmsState(parse_device(MAC1), int(MAC1.replace(":", ""), 16))
    two = BmsState(parse_device(MAC2), int(MAC2.replace(":", ""), 16))
    assert one.device_info()["serial_number"] != two.device_info()["serial_number"]
    first, second = one.cell_info(), two.cell_info()
    assert (first["battery_soc"], first["capacity_nominal"], first["current"]) != (
        second["battery_soc"],
        second["capacity_nominal"],
        second["current"],
    )
    # Seeded, not random: the same address is the same battery in every run.
    again = BmsState(parse_device(MAC1), int(MAC1.replace(":", ""), 16))
    assert again.device_info()["serial_number"] == one.device_info()["serial_number"]
    assert again.cell_info()["battery_soc"] == first["battery_soc"]


def _identifiers(gateway: Gateway, name: str) -> set[str]:
    found = set()
    for topic, payload in gateway.gateway_link._retained.items():
        if f"/{name}_" in topic and payload:
            found.add(json.loads(payload)["device"]["identifiers"][0])
    return found


async def test_gateway_never_publishes_two_devices_with_one_identifier(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def build() -> Gateway:  # on a worker thread: it reads its state file
        config = parse_config(
            {
                "state_dir": str(tmp_path),
                "homeassistant": {"enabled": True},
                "devices": [{"name": "jk1", "address": MAC1}, {"name": "jk2", "address": MAC2}],
            }
        )
        clock = FakeClock()
        return Gateway(config, FakeReader(clock), clock=clock)

    gateway = await asyncio.to_thread(build)
    caplog.set_level(logging.WARNING)
    # Two readings with the same serial number (cloned boards, or two simulators of old).
    for name, mac in (("jk1", MAC1), ("jk2", MAC2)):
        gateway._on_reading(gateway.scheduler.devices[name], vector_reading(name=name, address=mac))
    first, second = _identifiers(gateway, "jk1"), _identifiers(gateway, "jk2")
    assert len(first) == 1
    assert len(second) == 1
    assert first != second
    assert second == {"bluez_jk_" + MAC2.replace(":", "_").lower()}
    assert "identifier collision device=jk2 other=jk1" in caplog.text
    # The next reading keeps the same choice and does not log again.
    caplog.clear()
    gateway._on_reading(gateway.scheduler.devices["jk2"], vector_reading(name="jk2", address=MAC2))
    assert _identifiers(gateway, "jk2") == second
    assert "collision" not in caplog.text
    await gateway.settled()  # the discovery topics it saves
