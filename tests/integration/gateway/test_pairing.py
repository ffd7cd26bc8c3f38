"""Firmware >= 19.30 under the gateway (issue 12): a BMS that wants pairing next to an open one
on the same adapter; the passkey never leaves the config."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.mqtt import Broker, MqttProbe
from tests.integration.gateway.conftest import GatewayFactory
from tests.integration.gateway.support import MACS, device_spec, gateway_config, wait_count

pytestmark = pytest.mark.integration

PASSKEY = "482913"


def test_a_pairing_bms_beside_an_open_one_on_one_adapter(
    sim_factory: Any, mosquitto: Broker, gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    sim = sim_factory(
        [
            device_spec(MACS[0], "hci0"),
            device_spec(MACS[1], "hci0", pairing=f"passkey:{PASSKEY}"),
        ],
        log_level="DEBUG",
    )
    (tmp_path / "gw").mkdir()
    (tmp_path / "gw" / "jk2.passkey").write_text(PASSKEY + "\n")  # beside the config file
    devices = [
        {"name": "jk1", "address": MACS[0], "adapter": "hci0"},
        {"name": "jk2", "address": MACS[1], "adapter": "hci0", "passkey_file": "jk2.passkey"},
    ]
    config = gateway_config(mosquitto.port, tmp_path / "state", devices, poll_interval_s=1)
    with MqttProbe(mosquitto, ["bms/#"]) as probe:
        gateway = gateway_factory(sim, config)
        paired = wait_count(probe, "bms/jk/jk2/raw", 3, timeout_s=60)
        wait_count(probe, "bms/jk/jk1/raw", 6, timeout_s=60)
        assert gateway.alive()
        readings = [m.json() for m in paired]
        assert all(r["error"] is None and r["paired"] is True for r in readings), readings
        # Paired once; every later read uses the bond.
        assert sum(1 for e in sim.log() if e["event"] == "paired") == 1
        # The open BMS never waits on the other's pairing longer than one read.
        stamps = [m.received for m in probe.on_topic("bms/jk/jk1/raw")]
        gaps = [b - a for a, b in itertools.pairwise(stamps)]
        longest_other = max(r["duration_s"] for r in readings)
        assert max(gaps) < 1.0 * 1.1 + longest_other + 5.0, (gaps, longest_other)
        meta = json.loads(probe.on_topic("bms/jk/jk2/meta")[-1].payload)
        assert meta["config"]["passkey"] is True
        everything = "\n".join(
            [m.payload.decode(errors="replace") for m in probe.messages] + [gateway.log()]
        )
    assert PASSKEY not in everything
    assert PASSKEY not in sim.log_text()
