"""cmd/set end to end: the gateway process, the simulated BMS and a real broker.

Control off (the default): every request refused, no register write in the simulator's log, no
switch entity. On and allowed: charging off and on verified by read-back (and shown by the
next metrics), a value outside the safety bounds refused, a write the BMS ignores comes back
`verified: false`, switch entities only for the allowed switches, one audit record per request
on the topic and in the state dir."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

import pytest

from bluez_jk.gateway.service import COMMAND_RATE_PER_S
from bluez_jk.protocol import REGISTERS
from tests.fixtures.bluez import SimHandle
from tests.fixtures.mqtt import Broker, MqttProbe
from tests.integration.gateway.conftest import GatewayFactory
from tests.integration.gateway.support import MACS, device_spec, gateway_config, wait_online

pytestmark = pytest.mark.integration

REQUESTS = (0x96, 0x97)
HA = {"homeassistant": {"enabled": True, "prefix": "homeassistant"}}
SET = "bms/jk/jk1/cmd/set"
RESULT = "bms/jk/jk1/cmd/set/result"


def register_writes(sim: SimHandle) -> list[int]:
    return [e["code"] for e in sim.log() if e["event"] == "write" and e.get("code") not in REQUESTS]


def ask(probe: MqttProbe, payload: str) -> dict[str, Any]:
    """Publish one cmd/set and wait for its result (results come one per request, in order)."""
    count = len(probe.on_topic(RESULT))
    probe.publish(SET, payload)
    probe.wait_for(lambda _m: len(probe.on_topic(RESULT)) > count, timeout_s=30)
    result: dict[str, Any] = probe.on_topic(RESULT)[count].json()
    return result


def switch_topics(probe: MqttProbe) -> set[str]:
    return {
        m.topic for m in probe.messages if m.topic.startswith("homeassistant/switch/") and m.payload
    }


def test_control_off_refuses_everything_and_nothing_reaches_the_bus(
    sim_factory: Any, mosquitto: Broker, gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    sim = sim_factory([device_spec(MACS[0], "hci0")])
    state_dir = tmp_path / "state"
    devices = [{"name": "jk1", "address": MACS[0], "adapter": "hci0"}]
    config = gateway_config(mosquitto.port, state_dir, devices, **HA)
    with MqttProbe(mosquitto, ["bms/#", "homeassistant/#"]) as probe:
        gateway_factory(sim, config)
        wait_online(probe, ["jk1"], b"true")
        payloads = [
            '{"charging": false}',
            '{"discharging": false, "dry_run": true}',
            '{"max_charge_current": 50}',
            "not json",
        ]
        results = [ask(probe, p) for p in payloads]
        probe.wait_topic("bms/jk/jk1/metrics")
        assert [r["reason"] for r in results] == ["control_disabled"] * 4
        assert all(r["ok"] is False and r["frame"] is None for r in results)
        audit = [m.json() for m in probe.on_topic("bms/jk/jk1/audit")]
        assert [a["outcome"] for a in audit] == ["refused"] * 4
        assert not any(m.retain for m in probe.on_topic("bms/jk/jk1/audit"))
        assert switch_topics(probe) == set()
    assert register_writes(sim) == []
    lines = (state_dir / "audit.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == audit


def test_enabled_writes_are_verified_bounded_and_audited(
    sim_factory: Any, mosquitto: Broker, gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    sim = sim_factory([device_spec(MACS[0], "hci0")])
    state_dir = tmp_path / "state"
    control = {"enabled": True, "allow": ["charging", "max_charge_current"]}
    devices = [{"name": "jk1", "address": MACS[0], "adapter": "hci0", "control": control}]
    config = gateway_config(mosquitto.port, state_dir, devices, **HA)
    code = REGISTERS["JK02_32S"]["charging_switch"].code
    with MqttProbe(mosquitto, ["bms/#", "homeassistant/#"]) as probe:
        gateway = gateway_factory(sim, config)
        wait_online(probe, ["jk1"], b"true")
        switch = probe.wait_for(lambda m: m.topic.startswith("homeassistant/switch/"))
        assert switch.topic.endswith("/jk1_charging_control/config")
        assert json.loads(switch.payload)["optimistic"] is False

        off = ask(probe, '{"charging": false}')
        assert (off["ok"], off["verified"], off["before"], off["after"]) == (True, True, 1, 0)
        metrics = probe.wait_for(
            lambda m: m.topic == "bms/jk/jk1/metrics" and m.json().get("charging_switch") == 0
        )
        assert metrics.json()["charging_switch"] == 0
        on = ask(probe, '{"charging": true}')
        assert (on["ok"], on["verified"], on["before"], on["after"]) == (True, True, 0, 1)

        dry = ask(probe, '{"max_charge_current": 50, "dry_run": true}')
        assert dry["ok"] is True
        assert dry["frame"].startswith("aa5590eb0c04")
        too_high = ask(probe, '{"max_charge_current": 150}')
        assert too_high["reason"] == "out_of_safety_bounds"
        not_allowed = ask(probe, '{"discharging": false}')
        assert not_allowed["reason"] == "not_allowed"

        sim.set_fault("ignore-writes", address=MACS[0])
        ignored = ask(probe, '{"charging": false}')
        assert (ignored["ok"], ignored["verified"], ignored["reason"]) == (
            False,
            False,
            "not_verified",
        )
        assert ignored["after"] == 1
        assert switch_topics(probe) == {switch.topic}
        outcomes = [m.json()["outcome"] for m in probe.on_topic("bms/jk/jk1/audit")]
        assert outcomes == [
            "verified", "verified", "dry_run", "refused", "refused", "not_verified",
        ]  # fmt: skip
        assert gateway.alive()
    assert register_writes(sim) == [code, code, code]
    lines = (state_dir / "audit.jsonl").read_text().splitlines()
    assert [json.loads(line)["outcome"] for line in lines] == outcomes


PACE_S = 1.2 / COMMAND_RATE_PER_S


def fuzzed_payloads(seed: int, count: int) -> list[bytes]:
    """Junk, near-misses and valid-looking requests, reproducible from `seed`."""
    rng = random.Random(seed)
    keys = ["charging", "discharging", "balancing", "max_charge_current", "dry_run", "cell_ovp", ""]
    values: list[Any] = [True, False, 0, 1, -1, 3.4, 1e308, "off", None, [], {}, 150, 50]
    out: list[bytes] = []
    for _ in range(count):
        kind = rng.randrange(3)
        if kind == 0:
            out.append(rng.randbytes(rng.randrange(0, 40)))
        else:
            doc = {rng.choice(keys): rng.choice(values) for _ in range(rng.randrange(0, 4))}
            out.append(json.dumps(doc).encode())
    return out


@pytest.mark.parametrize("enabled", [False, True])
def test_fuzzed_requests_never_crash_the_gateway_or_write_invalid_values(
    sim_factory: Any,
    mosquitto: Broker,
    gateway_factory: GatewayFactory,
    tmp_path: Path,
    enabled: bool,
) -> None:
    sim = sim_factory([device_spec(MACS[0], "hci0")])
    # Only the switch discharging is allowed: every other valid request must be refused too.
    control = {"enabled": enabled, "allow": ["discharging"]}
    devices = [{"name": "jk1", "address": MACS[0], "adapter": "hci0", "control": control}]
    config = gateway_config(mosquitto.port, tmp_path / "state", devices)
    payloads = fuzzed_payloads(16, 40)
    with MqttProbe(mosquitto, ["bms/#"]) as probe:
        gateway = gateway_factory(sim, config)
        wait_online(probe, ["jk1"], b"true")
        for payload in payloads:
            probe.publish(SET, payload)
            # Within the gateway's command rate (more is dropped unanswered, by design): every
            # request must get its result here.
            time.sleep(PACE_S)
        probe.wait_for(lambda _m: len(probe.on_topic(RESULT)) >= len(payloads), timeout_s=60)
        results = [m.json() for m in probe.on_topic(RESULT)]
        assert gateway.alive()
        wait_online(probe, ["jk1"], b"true")  # still polling
    assert len(results) == len(payloads)
    written = [r for r in results if r["frame"] and not r["dry_run"]]
    assert all(r["setting"] == "discharging" for r in written)
    if not enabled:
        assert {r["reason"] for r in results} == {"control_disabled"}
    else:
        assert [r["verified"] for r in written] == [True]  # seed 16 has one valid request
    assert len(register_writes(sim)) == len(written)
    assert "Traceback" not in gateway.log()
