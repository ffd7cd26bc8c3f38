"""MQTT command handlers of the gateway, driven directly (no broker): results, persistence,
and a hypothesis fuzz over arbitrary payloads (no crash, config unchanged on invalid input)."""

from __future__ import annotations

import asyncio
import copy
import json
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bluez_jk.gateway.config import GatewayConfig, parse_config
from bluez_jk.gateway.mqtt import MqttLink
from bluez_jk.gateway.service import Gateway
from bluez_jk.gateway.state import StateStore
from bluez_jk.reading import new_reading
from tests.unit.gateway.fakes import FakeClock, FakeReader


def make_config(state_dir: Path, **top: Any) -> GatewayConfig:
    return parse_config(
        {
            "mqtt": {"base_topic": "b"},
            "state_dir": str(state_dir),
            "devices": [
                {"name": "jk1", "address": "C8:47:80:37:02:E1", "adapter": "hci0"},
                {"name": "jk2", "address": "C8:47:80:37:02:E2", "adapter": "hci1"},
            ],
            **top,
        },
        base_dir=state_dir,  # not Path.cwd(): that is a blocking call on the loop
    )


def make_gateway(state_dir: Path, **top: Any) -> Gateway:
    clock = FakeClock()
    return Gateway(make_config(state_dir, **top), FakeReader(clock), clock=clock)


async def command(gateway: Gateway, topic: str, payload: bytes) -> None:
    """One command as paho hands it over, and the state file write it may start."""
    gateway.handle_message(topic, payload)
    await gateway.settled()


def results(link: MqttLink) -> list[dict[str, Any]]:
    return answers(link, "cmd/config")


def answers(link: MqttLink, command: str) -> list[dict[str, Any]]:
    queued = [*link._queue, *link._answers]
    return [json.loads(m.payload) for m in queued if m.topic.endswith(f"/{command}/result")]


def meta(gateway: Gateway, name: str) -> dict[str, Any]:
    payload = gateway.links[name].retained(f"b/jk/{name}/meta")
    assert payload is not None
    return json.loads(payload)  # type: ignore[no-any-return]


async def test_valid_config_applies_persists_and_shows_in_meta(tmp_path: Path) -> None:
    gateway = await asyncio.to_thread(make_gateway, tmp_path)
    gateway.publish_meta(gateway.scheduler.devices["jk1"])
    await command(gateway, "b/jk/jk1/cmd/config", b'{"poll_interval_s": 2, "adapter": "hci3"}')
    assert results(gateway.links["jk1"]) == [
        {"ok": True, "error": None, "applied": {"poll_interval_s": 2, "adapter": "hci3"}}
    ]
    state = gateway.scheduler.devices["jk1"]
    assert state.config.poll_interval_s == 2
    assert state.config.adapter == "hci3"
    assert meta(gateway, "jk1")["config"]["poll_interval_s"] == 2
    # The other device is untouched; a restart (new Gateway on the same state_dir) keeps it.
    assert gateway.scheduler.devices["jk2"].config.poll_interval_s == 10
    again = await asyncio.to_thread(make_gateway, tmp_path)  # reads the state file
    assert again.scheduler.devices["jk1"].config.poll_interval_s == 2
    assert again.scheduler.devices["jk1"].config.adapter == "hci3"
    # Later changes merge with earlier ones; adapter null = the default adapter.
    await command(again, "b/jk/jk1/cmd/config", b'{"adapter": null}')
    third = await asyncio.to_thread(make_gateway, tmp_path)
    assert third.scheduler.devices["jk1"].config.adapter is None
    assert third.scheduler.devices["jk1"].config.poll_interval_s == 2


INVALID = [
    (b"not json", "not valid JSON"),
    (b"[]", "must be a JSON object"),
    (b'{"colour": 3}', "unknown key"),
    (b'{"timeout_s": "5"}', "must be a number"),
    (b'{"poll_interval_s": 0.01}', "must be between"),
    (b'{"address": "nope"}', "is not a MAC"),
    (b'{"adapter": "hci0/../x"}', "is not an adapter"),
    (b'{"address": "C8:47:80:37:02:E2"}', "is already device 'jk2'"),
    (b"{" + b" " * (1 << 20) + b"}", "larger than"),
]


async def test_each_invalid_input_changes_nothing_and_says_why(tmp_path: Path) -> None:
    gateway = await asyncio.to_thread(make_gateway, tmp_path)
    before = gateway.scheduler.devices["jk1"].config
    for payload, reason in INVALID:
        await command(gateway, "b/jk/jk1/cmd/config", payload)
        result = results(gateway.links["jk1"])[-1]
        assert result["ok"] is False
        assert result["applied"] == {}
        assert reason in result["error"], (payload[:40], result)
    assert gateway.scheduler.devices["jk1"].config == before
    assert not (tmp_path / "gateway_state.json").exists()


async def test_remote_config_disabled(tmp_path: Path) -> None:
    gateway = await asyncio.to_thread(make_gateway, tmp_path, allow_remote_config=False)
    await command(gateway, "b/jk/jk1/cmd/config", b'{"poll_interval_s": 2}')
    (result,) = results(gateway.links["jk1"])
    assert result["ok"] is False
    assert "allow_remote_config: false" in result["error"]
    assert gateway.scheduler.devices["jk1"].config.poll_interval_s == 10


async def test_unpersistable_config_is_not_applied(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    # state_dir under a regular file
    gateway = await asyncio.to_thread(make_gateway, blocker / "state")
    await command(gateway, "b/jk/jk1/cmd/config", b'{"poll_interval_s": 2}')
    (result,) = results(gateway.links["jk1"])
    assert result["ok"] is False
    assert "cannot persist" in result["error"]
    assert gateway.scheduler.devices["jk1"].config.poll_interval_s == 10
    assert gateway.store.overrides == {}  # not kept in memory either, to be saved later


async def test_pause_and_read_commands(tmp_path: Path) -> None:
    gateway = await asyncio.to_thread(make_gateway, tmp_path)
    await command(gateway, "b/jk/jk1/cmd/pause", b'{"minutes": 5}')
    assert gateway.scheduler.devices["jk1"].paused_until == 300.0
    assert meta(gateway, "jk1")["paused_until"] is not None
    for bad in (b'{"minutes": -1}', b'{"minutes": "5"}', b"{}", b"5", b'{"minutes": 1e400}'):
        await command(gateway, "b/jk/jk1/cmd/pause", bad)
        assert gateway.scheduler.devices["jk1"].paused_until == 300.0
    await command(gateway, "b/jk/jk1/cmd/pause", b'{"minutes": 0}')
    assert gateway.scheduler.devices["jk1"].paused_until is None
    await command(gateway, "b/jk/jk1/cmd/read", b"anything")
    assert gateway.scheduler.devices["jk1"].read_requested
    # Unknown devices and topics are ignored.
    await command(gateway, "b/jk/nobody/cmd/read", b"")
    await command(gateway, "other/topic", b"")


TOPICS = st.sampled_from(
    ["b/jk/jk1/cmd/config", "b/jk/jk1/cmd/pause", "b/jk/jk1/cmd/read", "b/jk/jk1/cmd/x"]
)
JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(["address", "adapter", "poll_interval_s", "timeout_s", "minutes", "z"])
            | st.text(max_size=8),
            children,
            max_size=4,
        )
    ),
    max_leaves=10,
)
PAYLOADS = st.binary(max_size=300) | JSONISH.map(lambda v: json.dumps(v).encode())


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(commands=st.lists(st.tuples(TOPICS, PAYLOADS), min_size=1, max_size=6))
def test_fuzz_command_handlers(commands: list[tuple[str, bytes]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        gateway = make_gateway(Path(tmp))
        for topic, payload in commands:
            before = copy.deepcopy(gateway.scheduler.devices["jk1"].config)
            stored_before = copy.deepcopy(gateway.store.overrides)
            count = len(results(gateway.links["jk1"]))
            asyncio.run(command(gateway, topic, payload))  # must never raise
            after = gateway.scheduler.devices["jk1"].config
            if topic.endswith("cmd/config"):
                result = results(gateway.links["jk1"])[count]
                if result["ok"]:
                    assert result["error"] is None
                    for key, value in result["applied"].items():
                        assert getattr(after, key) == value
                else:
                    assert result["error"]
                    assert after == before
                    assert gateway.store.overrides == stored_before
            else:
                assert after == before
        # Whatever was accepted survives a restart exactly.
        stored = StateStore(Path(tmp))
        stored.load()
        assert stored.overrides == gateway.store.overrides


def test_a_reading_with_nan_is_still_published_as_strict_json(tmp_path: Path) -> None:
    gateway = make_gateway(tmp_path)
    state = gateway.scheduler.devices["jk1"]
    reading = new_reading("jk1", state.config.address, "hci0")
    reading["status"]["cell_info"] = {"voltages": [3.3, float("nan")], "current": float("inf")}
    gateway._on_reading(state, reading)
    raw = next(m for m in gateway.links["jk1"]._queue if m.topic == "b/jk/jk1/raw")
    decoded = json.loads(raw.payload)  # strict: json.loads accepts NaN, so check the text too
    assert b"NaN" not in raw.payload
    assert b"Infinity" not in raw.payload
    assert decoded["status"]["cell_info"] == {"voltages": [3.3, None], "current": None}
