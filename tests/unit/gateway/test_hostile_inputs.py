"""Issue 18: hostile values in the config file, the state file and `cmd/config`. Every path
answers with a typed error; a damaged state file never stops a start and is never lost."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from pathlib import Path
from typing import Any

import pytest

from bluez_jk.cli.gateway import main
from bluez_jk.gateway import mqtt
from bluez_jk.gateway.mqtt import ANSWER_QUEUE_LIMIT
from bluez_jk.gateway.state import STATE_FILE, StateStore
from bluez_jk.reading import new_reading
from tests.unit.gateway.fakes import FakeClock
from tests.unit.gateway.test_commands import answers, command, make_gateway, meta, results

HUGE_INT = "9" * 400  # beyond a float: OverflowError in math.isfinite / format
OVER_LIMIT = "9" * 5000  # beyond Python's 4,300-digit int conversion limit: ValueError
DEEP = "[" * 100_000 + "]" * 100_000  # RecursionError in json.loads

HOSTILE_NUMBERS = [HUGE_INT, "-" + HUGE_INT, "1" + "0" * 309, OVER_LIMIT, "1e400"]


def write_config(tmp_path: Path, interval: str, **mqtt: Any) -> Path:
    path = tmp_path / "gw.json"
    device = '{"name": "jk1", "address": "C8:47:80:37:02:E1"}'
    mqtt_text = json.dumps({"base_topic": "b", **mqtt})
    path.write_text(
        f'{{"mqtt": {mqtt_text}, "state_dir": "{tmp_path / "state"}", '
        f'"poll_interval_s": {interval}, "devices": [{device}]}}'
    )
    return path


@pytest.mark.parametrize("number", [*HOSTILE_NUMBERS, DEEP])
def test_check_config_answers_config_error_for_hostile_numbers(
    tmp_path: Path, number: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path, number)
    assert main(["--check-config", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("config error: "), err[:300]
    assert "Traceback" not in err
    assert len(err) < 400  # a 5,000-digit number is described, not echoed


def test_non_utf8_password_file_is_a_config_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "secret").write_bytes(b"\xff\xfe pass")
    path = write_config(tmp_path, "10", username="u", password_file="secret")
    assert main(["--check-config", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "config error: mqtt.password_file:" in err
    assert "not UTF-8" in err


@pytest.mark.parametrize("number", [HUGE_INT, "-" + HUGE_INT, "1" + "0" * 309, "1e400"])
async def test_cmd_config_answers_hostile_numbers(tmp_path: Path, number: str) -> None:
    gateway = await asyncio.to_thread(make_gateway, tmp_path)
    await command(gateway, "b/jk/jk1/cmd/config", f'{{"poll_interval_s": {number}}}'.encode())
    await command(gateway, "b/jk/jk1/cmd/config", ("[" * 3000).encode())
    first, second = results(gateway.links["jk1"])
    assert first["ok"] is False
    assert "poll_interval_s" in first["error"]
    assert second["ok"] is False
    assert gateway.scheduler.devices["jk1"].config.poll_interval_s == 10


def damaged_states() -> list[bytes]:
    return [
        f'{{"overrides": {{"jk1": {{"poll_interval_s": {HUGE_INT}}}}}}}'.encode(),
        f'{{"overrides": {{"jk1": {{"poll_interval_s": {OVER_LIMIT}}}}}}}'.encode(),
        DEEP.encode(),
        ('{"overrides": ' + "[" * 50_000 + "]" * 50_000 + "}").encode(),
    ]


@pytest.mark.parametrize("content", damaged_states(), ids=["huge", "digits", "deep", "deep2"])
async def test_damaged_state_file_is_set_aside_and_the_gateway_starts(
    tmp_path: Path, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / STATE_FILE).write_bytes(content)
    with caplog.at_level(logging.WARNING):
        # raised OverflowError / RecursionError before
        gateway = await asyncio.to_thread(make_gateway, tmp_path)
    assert gateway.scheduler.devices["jk1"].config.poll_interval_s == 10
    kept = list(tmp_path.glob(f"{STATE_FILE}.damaged-*"))
    assert len(kept) == 1
    assert kept[0].read_bytes() == content
    assert "state file damaged" in caplog.text
    # The gateway writes a new state file from now on.
    await command(gateway, "b/jk/jk1/cmd/config", b'{"poll_interval_s": 3}')
    assert results(gateway.links["jk1"])[-1]["ok"] is True
    assert json.loads((tmp_path / STATE_FILE).read_text())["overrides"]["jk1"] == {
        "poll_interval_s": 3
    }


def test_wildcard_discovery_topics_in_the_state_file_are_dropped(tmp_path: Path) -> None:
    bad = ["homeassistant/#", "a/+/b", "x\x00y", "", "\ud800"]
    state = {"discovery": {"jk1": ["homeassistant/sensor/n/jk1_x/config"], "jk9": bad}}
    (tmp_path / STATE_FILE).write_text(json.dumps(state))
    store = StateStore(tmp_path)
    store.load()
    assert store.discovery == {"jk1": ["homeassistant/sensor/n/jk1_x/config"]}
    assert len(list(tmp_path.glob(f"{STATE_FILE}.damaged-*"))) == 1
    # The file now holds the valid part only: the next start makes no second copy.
    again = StateStore(tmp_path)
    again.load()
    assert again.discovery == store.discovery
    assert len(list(tmp_path.glob(f"{STATE_FILE}.damaged-*"))) == 1


def test_a_wildcard_retained_topic_never_breaks_a_link(tmp_path: Path) -> None:
    gateway = make_gateway(tmp_path)
    link = gateway.gateway_link
    link.connected = True  # paho's publish works offline; only its topic check matters here
    link.clear_retained("homeassistant/#")  # paho raises ValueError for this
    link.set_retained("b/ok", b"1")
    assert link.retained("homeassistant/#") is None
    assert link.retained("b/ok") == b"1"


async def test_unreadable_state_file_is_never_overwritten(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Item 5: owned by another user (the tests run as root, so the refusal is simulated).
    path = tmp_path / STATE_FILE
    path.write_text('{"overrides": {"jk1": {"poll_interval_s": 7}}}')
    real_read = Path.read_bytes

    def denied(self: Path) -> bytes:
        if self == path:
            raise PermissionError(13, "Permission denied")
        return real_read(self)

    monkeypatch.setattr(Path, "read_bytes", denied)
    with caplog.at_level(logging.ERROR):
        gateway = await asyncio.to_thread(make_gateway, tmp_path)
    assert "cannot be read" in caplog.text
    await command(gateway, "b/jk/jk1/cmd/config", b'{"poll_interval_s": 3}')
    result = results(gateway.links["jk1"])[-1]
    assert result["ok"] is False
    assert "cannot persist" in result["error"]
    assert "not overwriting" in result["error"]
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"overrides": {"jk1": {"poll_interval_s": 7}}}


def test_default_client_id_is_unique_per_installation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Item 8: two Pis both called "raspberrypi" had the same default id and kicked each other.
    monkeypatch.setattr(socket, "gethostname", lambda: "raspberrypi")
    ids = {}
    for machine in ("a" * 32, "b" * 32):
        path = tmp_path / machine
        path.write_text(machine + "\n")
        monkeypatch.setattr(mqtt, "MACHINE_ID_FILES", (path,))
        for base in ("bms", "bms2"):
            ids[(machine, base)] = mqtt.default_client_id(base)
            assert mqtt.default_client_id(base) == ids[(machine, base)]  # stable
    assert len(set(ids.values())) == 4
    assert all(i.startswith("bluez-jk-raspberrypi-") for i in ids.values())
    assert all(len(i) <= 64 for i in ids.values())
    # Home Assistant's device identifiers keep their old, host-named form.
    assert mqtt.node_name() == "bluez-jk-raspberrypi"


async def test_a_command_flood_never_displaces_readings(tmp_path: Path) -> None:
    # Item 6: 20,000 commands used to push 7,679 queued Readings out of the device's queue.
    gateway = await asyncio.to_thread(make_gateway, tmp_path)
    state = gateway.scheduler.devices["jk1"]
    link = gateway.links["jk1"]
    for index in range(20_000):
        gateway.handle_message("b/jk/jk1/cmd/config", b'{"timeout_s": "x"}')
        if index % 1000 == 0:
            gateway._on_reading(state, new_reading("jk1", state.config.address, "hci0"))
    await gateway.settled()  # the answers of the commands that were handled
    raws = [m for m in link._queue if m.topic == "b/jk/jk1/raw"]
    assert len(raws) == 20
    assert link.dropped == 0
    # Only the first burst was handled; the rest was dropped before any work or logging.
    assert len(results(link)) == 20
    assert all("timeout_s" in result["error"] for result in results(link))  # handled, refused
    assert gateway.commands_dropped["jk1"] == 20_000 - 20
    gateway.publish_meta(state)
    assert meta(gateway, "jk1")["counters"]["commands_dropped"] == 20_000 - 20


def test_answers_wait_behind_readings_in_a_queue_of_their_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mqtt, "MAX_HANDED", 10_000)  # as if the broker acknowledged at once
    gateway = make_gateway(tmp_path)
    link = gateway.links["jk1"]
    sent: list[str] = []

    class Info:
        mid = 0

    def fake_publish(topic: str, payload: bytes, qos: int, retain: bool) -> Info:
        sent.append(topic)
        Info.mid += 1
        return Info()

    link._client.publish = fake_publish  # type: ignore[method-assign,assignment]
    for index in range(ANSWER_QUEUE_LIMIT + 50):
        link.publish("b/jk/jk1/cmd/config/result", b"{}", answer=True)
        link.publish(f"b/jk/jk1/raw/{index}", b"{}")
    assert link.answers_dropped == 50
    assert link.dropped == 0
    link.connected = True
    link._drain()
    # Every Reading goes out before the first answer.
    first_answer = sent.index("b/jk/jk1/cmd/config/result")
    assert first_answer == ANSWER_QUEUE_LIMIT + 50
    assert all(t.startswith("b/jk/jk1/raw/") for t in sent[:first_answer])


def pause(gateway: Any, minutes: float | str) -> dict[str, Any]:
    gateway.handle_message("b/jk/jk1/cmd/pause", json.dumps({"minutes": minutes}).encode())
    return answers(gateway.links["jk1"], "cmd/pause")[-1]


def test_pause_obeys_allow_remote_config_and_answers(tmp_path: Path) -> None:
    # Item 12: cmd/pause escaped allow_remote_config: false and was never answered.
    gateway = make_gateway(tmp_path, allow_remote_config=False)
    result = pause(gateway, 5)
    assert result["ok"] is False
    assert "allow_remote_config: false" in result["error"]
    assert gateway.scheduler.devices["jk1"].paused_until is None
    gateway = make_gateway(tmp_path / "on")
    assert pause(gateway, "5") == {
        "ok": False,
        "error": "minutes must be a number from 0 to 1440",
        "paused_until": None,
    }
    huge = json.loads(HUGE_INT)
    assert pause(gateway, huge)["error"] == "minutes must be a number from 0 to 1440"
    accepted = pause(gateway, 5)
    assert accepted["ok"] is True
    assert accepted["paused_until"] is not None


async def test_pause_renewals_are_bounded(tmp_path: Path) -> None:
    gateway = await asyncio.to_thread(make_gateway, tmp_path)
    clock = gateway.scheduler.clock
    assert isinstance(clock, FakeClock)
    state = gateway.scheduler.devices["jk1"]
    assert pause(gateway, 1440)["ok"] is True
    clock.t += 600 * 60
    renewed = pause(gateway, 1440)  # would end 34 h after the pause began
    assert renewed["ok"] is False
    assert "at most 1440 minutes" in renewed["error"]
    assert pause(gateway, 840)["ok"] is True  # up to exactly 24 h in all
    clock.t += 840 * 60 + 1  # the pause ran out; no read happened since
    again = pause(gateway, 5)
    assert again["ok"] is False
    assert "read once after a pause" in again["error"]
    state.attempts += 1  # the device was read
    assert pause(gateway, 5)["ok"] is True
    assert pause(gateway, 0)["ok"] is True  # resuming is always allowed


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        ("base_topic", "$SYS/bms", "starts with $"),
        ("base_topic", "bms\x07", "control character"),
        ("base_topic", "bms\n2", "control character"),
        ("base_topic", "bms\ud800", "invalid Unicode"),
        ("prefix", "$share/ha", "starts with $"),
        ("prefix", "home\x1bassistant", "control character"),
        ("prefix", "ha\udfff", "invalid Unicode"),
    ],
)
def test_topics_that_cannot_work_are_refused(
    tmp_path: Path, key: str, value: str, reason: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Item 9: these passed --check-config; a lone surrogate then failed at start (exit 1).
    doc: dict[str, Any] = {
        "mqtt": {},
        "homeassistant": {"enabled": True},
        "devices": [{"name": "jk1", "address": "C8:47:80:37:02:E1"}],
    }
    section = "mqtt" if key == "base_topic" else "homeassistant"
    doc[section][key] = value
    path = tmp_path / "gw.json"
    path.write_text(json.dumps(doc))  # ensure_ascii: \\ud800 stays a JSON escape
    assert main(["--check-config", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"config error: {section}.{key}:" in err
    assert reason in err


X = "C8:47:80:37:02:EE"


def addresses(gateway: Any) -> dict[str, str]:
    return {n: s.config.address for n, s in gateway.scheduler.devices.items()}


async def test_stored_overrides_follow_allow_remote_config_and_file_edits(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Item 4: with remote configuration off the device went on using X every 86,400 s.
    gateway = await asyncio.to_thread(make_gateway, tmp_path)
    await command(
        gateway,
        "b/jk/jk1/cmd/config",
        json.dumps({"address": X, "poll_interval_s": 86400}).encode(),
    )
    assert results(gateway.links["jk1"])[-1]["ok"] is True
    with caplog.at_level(logging.INFO):
        off = await asyncio.to_thread(make_gateway, tmp_path, allow_remote_config=False)
    assert off.scheduler.devices["jk1"].config.address == "C8:47:80:37:02:E1"
    assert off.scheduler.devices["jk1"].config.poll_interval_s == 10
    assert "ignored (allow_remote_config: false) device=jk1" in caplog.text
    # Remote configuration back on: the overrides apply again, and the start lists them.
    caplog.clear()
    with caplog.at_level(logging.INFO):
        on = await asyncio.to_thread(make_gateway, tmp_path)
    assert on.scheduler.devices["jk1"].config.address == X
    assert "in force device=jk1" in caplog.text
    # The operator edits the file's poll_interval_s for jk1: the file wins for that key.
    caplog.clear()
    with caplog.at_level(logging.INFO):
        edited = await asyncio.to_thread(make_gateway, tmp_path, poll_interval_s=20)
    assert edited.scheduler.devices["jk1"].config.poll_interval_s == 20
    assert edited.scheduler.devices["jk1"].config.address == X
    assert "config file changed since device=jk1 key=poll_interval_s" in caplog.text
    assert edited.store.overrides["jk1"] == {"address": X}


async def test_two_devices_never_share_an_effective_address(tmp_path: Path) -> None:
    gateway = await asyncio.to_thread(make_gateway, tmp_path)
    await command(gateway, "b/jk/jk1/cmd/config", json.dumps({"address": X}).encode())
    assert results(gateway.links["jk1"])[-1]["ok"] is True
    # The file now gives jk2 address X: jk1's override yields, the file wins.
    devices = [
        {"name": "jk1", "address": "C8:47:80:37:02:E1", "adapter": "hci0"},
        {"name": "jk2", "address": X, "adapter": "hci1"},
    ]
    restarted = await asyncio.to_thread(make_gateway, tmp_path, devices=devices)
    assert addresses(restarted) == {"jk1": "C8:47:80:37:02:E1", "jk2": X}


async def test_a_failing_command_handler_still_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway = await asyncio.to_thread(make_gateway, tmp_path)

    async def broken_config(name: str, payload: bytes) -> dict[str, Any]:
        raise KeyError("bug")

    def broken(name: str, payload: bytes) -> dict[str, Any]:
        raise KeyError("bug")

    monkeypatch.setattr(gateway, "apply_remote_config", broken_config)
    monkeypatch.setattr(gateway, "apply_pause", broken)
    await command(gateway, "b/jk/jk1/cmd/config", b"{}")
    await command(gateway, "b/jk/jk1/cmd/pause", b"{}")
    link = gateway.links["jk1"]
    assert results(link) == [{"ok": False, "error": "internal error, see the log", "applied": {}}]
    assert answers(link, "cmd/pause")[0]["ok"] is False
