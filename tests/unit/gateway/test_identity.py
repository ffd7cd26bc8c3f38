"""Two BMS never share one identity: the simulator gives each its own serial and state (seeded
by its address), and the gateway never publishes two Home Assistant devices with the same
identifiers (the second one falls back to its MAC, and the log says so)."""

from __future__ import annotations

import asyncio
import copy
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from bluez_jk.gateway import discovery
from bluez_jk.gateway.config import parse_config
from bluez_jk.gateway.service import Gateway
from bluez_jk.reading import Reading
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


async def test_discovery_is_built_again_only_when_what_it_shows_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each reading of a device goes through discovery, but the ~100 configs are built only
    when the entities or the identity change, never for new values alone."""

    def build() -> Gateway:
        config = parse_config(
            {
                "state_dir": str(tmp_path),
                "homeassistant": {"enabled": True},
                "devices": [{"name": "jk1", "address": MAC1}],
            }
        )
        clock = FakeClock()
        return Gateway(config, FakeReader(clock), clock=clock)

    gateway = await asyncio.to_thread(build)
    built: list[str] = []
    original = discovery.discovery_configs

    def counting(name: str, reading: Reading, **kwargs: Any) -> dict[str, str]:
        built.append(name)
        return original(name, reading, **kwargs)

    monkeypatch.setattr(discovery, "discovery_configs", counting)
    state = gateway.scheduler.devices["jk1"]
    reading = vector_reading(address=MAC1)
    gateway._on_reading(state, reading)
    assert built == ["jk1"]

    # New values (voltages, SOC, time), the same entities and identity: nothing rebuilt.
    changed = copy.deepcopy(reading)
    changed["status"]["cell_info"]["voltages"][0] += 0.01
    changed["status"]["cell_info"]["battery_soc"] = 42
    changed["status"]["last_update"] = reading["status"]["last_update"] + 2
    gateway._on_reading(state, changed)
    assert built == ["jk1"]

    # A firmware update (sw_rev in the device block) and one cell fewer: rebuilt each time.
    updated = copy.deepcopy(changed)
    updated["status"]["device_info"]["sw_rev"] = "19.99"
    gateway._on_reading(state, updated)
    assert built == ["jk1", "jk1"]
    device = next(
        json.loads(p)["device"]
        for t, p in gateway.gateway_link._retained.items()
        if "/jk1_" in t and p
    )
    assert device["sw_version"] == "19.99"
    fewer = copy.deepcopy(updated)
    fewer["status"]["settings"]["cell_count"] -= 1
    cells = reading["status"]["settings"]["cell_count"]
    gateway._on_reading(state, fewer)
    assert built == ["jk1", "jk1", "jk1"]
    await gateway.settled()
    # One cell fewer: its two entities (voltage, resistance) are gone from the saved set.
    assert not any(t.endswith(f"_{cells}/config") for t in gateway.store.discovery["jk1"])
