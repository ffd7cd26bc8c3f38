"""The logbook end to end: the gateway process, the simulated BMS and a real broker.

cmd/logbook read three times keeps and publishes each entry once; the entries survive a
restart; a new event on the BMS (a switch written by cmd/set) is published once; refusals and
JK04 get clear answers; the periodic read and a damaged file at start."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.mqtt import Broker, MqttProbe
from tests.integration.gateway.conftest import GatewayFactory
from tests.integration.gateway.support import MACS, device_spec, gateway_config, wait_online

pytestmark = pytest.mark.integration

CMD = "bms/jk/{}/cmd/logbook"
RESULT = "bms/jk/{}/cmd/logbook/result"
LOGBOOK = "bms/jk/{}/logbook"
# The simulator's history (bluez_jk/sim/jkbms.py): boot, remote charge off, charge off by app.
SIM = [(3_600_000 - 3 * 86_400, 1), (3_600_000 - 2 * 86_400, 7), (3_600_000 - 86_400, 3)]
ON: dict[str, Any] = {"logbook": {"enabled": True, "interval_s": 0}}


def ask(probe: MqttProbe, name: str, payload: str = "") -> dict[str, Any]:
    """Publish one cmd/logbook and wait for its result (one per request, in order)."""
    count = len(probe.on_topic(RESULT.format(name)))
    probe.publish(CMD.format(name), payload)
    probe.wait_for(lambda _m: len(probe.on_topic(RESULT.format(name))) > count, timeout_s=40)
    result: dict[str, Any] = probe.on_topic(RESULT.format(name))[count].json()
    return result


def keys(entries: list[dict[str, Any]]) -> list[tuple[int, int]]:
    return [(e["t"], e["code"]) for e in entries]


def test_three_reads_no_duplicates_a_restart_keeps_them_and_a_new_event_comes_once(
    sim_factory: Any, mosquitto: Broker, gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    sim = sim_factory([device_spec(MACS[0], "hci0")])
    state_dir = tmp_path / "state"
    control = {"control": {"enabled": True, "allow": ["charging"]}}
    devices = [{"name": "jk1", "address": MACS[0], "adapter": "hci0", **ON, **control}]
    config = gateway_config(mosquitto.port, state_dir, devices, poll_interval_s=5)
    with MqttProbe(mosquitto, ["bms/jk/#"]) as probe:
        gateway = gateway_factory(sim, config)
        wait_online(probe, ["jk1"], b"true")
        results = [ask(probe, "jk1") for _ in range(3)]
        assert [(r["ok"], r["read"], r["new"], r["count"]) for r in results] == [
            (True, True, 3, 3),
            (True, True, 0, 3),
            (True, True, 0, 3),
        ]
        assert all(keys(r["entries"]) == SIM for r in results)
        published = probe.on_topic(LOGBOOK.format("jk1"))
        assert keys([m.json() for m in published]) == SIM
        assert not any(m.retain for m in published)
        stored = json.loads((state_dir / "logbook-jk1.json").read_text())
        assert keys(stored["entries"]) == SIM
        assert gateway.terminate() == 0

        gateway_factory(sim, config, name="gw2")
        wait_online(probe, ["jk1"], b"true")
        kept = ask(probe, "jk1", '{"read": false}')
        assert (kept["ok"], kept["read"], kept["count"]) == (True, False, 3)
        assert kept["entries"] == results[0]["entries"]  # first-seen times survived too
        assert ask(probe, "jk1")["new"] == 0
        assert len(probe.on_topic(LOGBOOK.format("jk1"))) == 3
        meta = probe.on_topic("bms/jk/jk1/meta")[-1].json()
        assert meta["logbook"]["count"] == 3
        assert meta["logbook"]["last_read"] > kept["entries"][0]["seen"]
        assert meta["config"]["logbook"] == {"enabled": True, "interval_s": 0}

        # A new event on the BMS: the simulator logs "charge off by app" for the write.
        count = len(probe.on_topic("bms/jk/jk1/cmd/set/result"))
        probe.publish("bms/jk/jk1/cmd/set", '{"charging": false}')
        probe.wait_for(
            lambda _m: len(probe.on_topic("bms/jk/jk1/cmd/set/result")) > count, timeout_s=40
        )
        assert probe.on_topic("bms/jk/jk1/cmd/set/result")[count].json()["verified"] is True
        grown = ask(probe, "jk1")
        assert (grown["new"], grown["count"]) == (1, 4)
        assert grown["entries"][-1]["code"] == 0x03
        assert grown["entries"][-1]["event"] == "charge_off_by_app"
        assert ask(probe, "jk1")["new"] == 0
        published = [m.json() for m in probe.on_topic(LOGBOOK.format("jk1"))]
        assert len(published) == 4
        assert published[-1] == grown["entries"][-1]
        # Each logbook read is also a read: its values went out as raw and metrics.
        assert probe.on_topic("bms/jk/jk1/raw")
        assert all("logbook" not in m.json() for m in probe.on_topic("bms/jk/jk1/raw"))


def test_refusals_and_jk04_get_clear_answers(
    sim_factory: Any, mosquitto: Broker, gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    sim = sim_factory(
        [device_spec(MACS[0], "hci0"), device_spec(MACS[1], "hci1", protocol="JK04", cells="16")]
    )
    devices: list[dict[str, Any]] = [
        {"name": "jk1", "address": MACS[0], "adapter": "hci0"},
        {"name": "jk4", "address": MACS[1], "adapter": "hci1", **ON},
    ]
    config = gateway_config(mosquitto.port, tmp_path / "state", devices, poll_interval_s=5)
    with MqttProbe(mosquitto, ["bms/jk/#"]) as probe:
        gateway = gateway_factory(sim, config)
        wait_online(probe, ["jk1", "jk4"], b"true")
        off = ask(probe, "jk1")
        assert off["ok"] is False
        assert "logbook.enabled: false" in off["error"]
        for payload, words in [
            ("not json", "not valid JSON"),
            ('{"read": "yes"}', "true or false"),
            ('{"all": true}', "unknown key"),
            ("[" * 5000, "larger than 4096"),
        ]:
            result = ask(probe, "jk4", payload)
            assert result["ok"] is False, payload[:20]
            assert words in result["error"], result
        jk04 = ask(probe, "jk4")
        assert (jk04["ok"], jk04["read"], jk04["count"]) == (False, True, 0)
        assert "JK04" in jk04["error"]
        wait_online(probe, ["jk4"], b"true")  # the read itself succeeded
        assert probe.on_topic(LOGBOOK.format("jk4")) == []
        assert not (tmp_path / "state" / "logbook-jk1.json").exists()
        assert gateway.alive()


def test_periodic_read_and_a_damaged_file_at_start(
    sim_factory: Any, mosquitto: Broker, gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    sim = sim_factory([device_spec(MACS[0], "hci0")])
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    damaged = state_dir / "logbook-jk1.json"
    damaged.write_bytes(b'{"entries": [{"t": 1, ')
    devices = [{"name": "jk1", "address": MACS[0], "adapter": "hci0"}]
    periodic: dict[str, Any] = {"logbook": {"enabled": True, "interval_s": 2}}
    config = gateway_config(mosquitto.port, state_dir, devices, poll_interval_s=30, **periodic)
    with MqttProbe(mosquitto, ["bms/jk/#"]) as probe:
        gateway = gateway_factory(sim, config)
        topic = LOGBOOK.format("jk1")
        probe.wait_for(lambda _m: len(probe.on_topic(topic)) >= 3, timeout_s=40)
        assert keys([m.json() for m in probe.on_topic(topic)]) == SIM

        # Two more periodic reads (each an A1 request) add nothing.
        def a1_writes() -> int:
            return sum(1 for e in sim.log() if e["event"] == "write" and e.get("code") == 0xA1)

        seen = a1_writes()
        deadline = time.monotonic() + 40
        while a1_writes() < seen + 2 and time.monotonic() < deadline:
            time.sleep(0.1)  # polling the simulator's log, bounded by the deadline
        assert a1_writes() >= seen + 2
        assert len(probe.on_topic(topic)) == 3
        assert gateway.alive()
    aside = [p for p in state_dir.iterdir() if p.name.startswith("logbook-jk1.json.damaged-")]
    assert [p.read_bytes() for p in aside] == [b'{"entries": [{"t": 1, ']
    assert "logbook file damaged" in gateway.log()
