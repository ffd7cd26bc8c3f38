"""DerivedOutputs (derived.py): which messages a reading and a tick give, on a fake clock."""

from __future__ import annotations

import json
from typing import Any

from bluez_jk.gateway.config import parse_config
from bluez_jk.gateway.derived import TICK_S, DerivedOutputs, Message
from tests.unit.gateway.packs import pack_metrics

MACS = ["C8:47:80:37:02:E8", "C8:47:80:37:02:E9", "C8:47:80:37:02:EA"]


def outputs(**extra: Any) -> DerivedOutputs:
    devices = [{"name": f"jk{i}", "address": mac} for i, mac in enumerate(MACS, start=1)]
    config = parse_config({"devices": devices, **extra})

    def topic(name: str, leaf: str) -> str:
        return f"bms/jk/{name}/{leaf}"

    return DerivedOutputs(config, topic, lambda v: json.dumps(v).encode())


def by_topic(messages: list[Message]) -> dict[str, Any]:
    return {
        m.topic: (m.payload if m.topic.endswith("/online") else json.loads(m.payload))
        for m in messages
    }


def test_nothing_configured_nothing_published() -> None:
    derived = outputs()
    assert not derived.active
    assert derived.on_reading("jk1", pack_metrics(), {}, 0.0) == []
    assert derived.tick(100.0) == []
    assert derived.offline() == []


def test_a_victron_device_publishes_on_its_own_link_and_repeats_when_quiet() -> None:
    derived = outputs(victron={"enabled": True})
    (message,) = derived.on_reading("jk1", pack_metrics(), {}, 0.0)
    assert (message.topic, message.device, message.retained) == ("bms/jk/jk1/victron", "jk1", False)
    assert [m for m in derived.tick(1.0) if m.device == "jk1"] == []  # just published
    repeated = [m for m in derived.tick(TICK_S + 1) if m.device == "jk1"]
    assert [m.topic for m in repeated] == ["bms/jk/jk1/victron"]
    late = by_topic(derived.tick(1000.0))["bms/jk/jk1/victron"]
    assert late["Io"]["AllowToCharge"] == 0  # stale by now
    assert late["Soc"] is None


def test_a_failed_read_publishes_victron_still_within_the_grace() -> None:
    derived = outputs(victron={"enabled": True})
    derived.on_reading("jk1", pack_metrics(), {}, 0.0)
    derived.on_reading("jk1", pack_metrics(), {}, 500.0)
    payload = by_topic(derived.on_reading("jk1", None, {}, 510.0))["bms/jk/jk1/victron"]
    assert payload["Io"]["AllowToDischarge"] == 1  # 10 s old, grace 60 s
    assert payload["Soc"] == 50


def test_bank_messages_online_and_startup() -> None:
    derived = outputs(banks=[{"name": "bank1", "members": ["jk1", "jk2"]}])
    assert by_topic(derived.startup()) == {"bms/jk/bank1/online": b"false"}
    first = by_topic(derived.on_reading("jk1", pack_metrics(), {}, 0.0))
    assert first["bms/jk/bank1/online"] == b"false"  # jk2 has not read yet
    assert first["bms/jk/bank1/raw"]["stale"] == ["jk2"]
    assert "bms/jk/bank1/victron" not in first  # not enabled for the bank
    second = by_topic(derived.on_reading("jk2", pack_metrics(), {}, 1.0))
    assert second["bms/jk/bank1/online"] == b"true"
    assert second["bms/jk/bank1/metrics"]["members_fresh"] == 2
    assert all(m.device is None for m in derived.on_reading("jk1", pack_metrics(), {}, 2.0))
    assert by_topic(derived.offline()) == {"bms/jk/bank1/online": b"false"}


def test_a_member_turning_stale_is_published_at_the_next_tick() -> None:
    derived = outputs(banks=[{"name": "bank1", "members": ["jk1", "jk2"]}])
    derived.on_reading("jk1", pack_metrics(), {}, 0.0)
    derived.on_reading("jk2", pack_metrics(), {}, 0.0)
    derived.on_reading("jk1", pack_metrics(), {}, 58.0)
    raw = by_topic(derived.tick(61.0))["bms/jk/bank1/raw"]  # jk2 is 61 s old, jk1 3 s
    assert raw["stale"] == ["jk2"]
    assert raw["excluded_from_discharge"] == {"jk2": "stale"}
