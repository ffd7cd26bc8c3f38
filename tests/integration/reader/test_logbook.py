"""The logbook on request: `ReadRequest.logbook` sends 0xA1 after the values are in and the
Reading carries the entries; JK04 (no logbook) says so without failing the read;
`jk-ble-read --logbook` prints them in its one JSON object, also on failure."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest

from bluez_jk.reader import Reader, ReadRequest, read_once
from bluez_jk.reading import Logbook, Reading
from tests.fixtures.bluez import SimHandle
from tests.integration.reader.conftest import ADDRESS, FAST, assert_device_released
from tests.integration.reader.test_cli import READ, run

pytestmark = pytest.mark.integration

# The simulator's history (bluez_jk/sim/jkbms.py): boot, remote charge off, charge off by app.
SIM_ENTRIES = [
    {"t": 3_600_000 - 3 * 86_400, "code": 1, "event": "boot"},
    {"t": 3_600_000 - 2 * 86_400, "code": 7, "event": "remote_charge_off"},
    {"t": 3_600_000 - 86_400, "code": 3, "event": "charge_off_by_app"},
]


async def test_read_with_logbook_carries_the_entries(sim: SimHandle, reader: Reader) -> None:
    reading = await reader.read(ReadRequest(name="jk1", address=ADDRESS, timeout_s=8, logbook=True))
    assert reading["error"] is None
    assert reading["got"] == {"device_info": True, "cell_info": True, "settings": True}
    assert reading.get("logbook") == {"status": "ok", "message": None, "entries": SIM_ENTRIES}
    assert [e["code"] for e in sim.log() if e["event"] == "write"].count(0xA1) == 1
    assert_device_released(sim)


async def test_a_plain_read_neither_asks_nor_carries_a_logbook(
    sim: SimHandle, reader: Reader
) -> None:
    reading = await reader.read(ReadRequest(name="jk1", address=ADDRESS, timeout_s=5))
    assert reading["error"] is None
    assert "logbook" not in reading
    assert 0xA1 not in [e["code"] for e in sim.log() if e["event"] == "write"]


async def read_logbook(
    sim: SimHandle, monkeypatch: pytest.MonkeyPatch, timeout_s: float, logbook_s: float
) -> tuple[Reading, Logbook]:
    """One read with the logbook asked for (a Reader of its own); the Reading, its logbook."""
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", sim.bus_address)
    req = ReadRequest(name="jk1", address=ADDRESS, timeout_s=timeout_s, logbook=True)
    reading = await read_once(req, timing=dataclasses.replace(FAST, logbook_s=logbook_s))
    assert reading["error"] is None
    assert reading["got"] == {"device_info": True, "cell_info": True, "settings": True}
    logbook = reading.get("logbook")
    assert logbook is not None
    return reading, logbook


async def test_jk04_has_no_logbook_and_the_read_still_succeeds(
    sim_factory: Callable[..., SimHandle], monkeypatch: pytest.MonkeyPatch
) -> None:
    sim = sim_factory(devices=[f"{ADDRESS},adapter=hci0,protocol=JK04,cells=16"])
    _, logbook = await read_logbook(sim, monkeypatch, timeout_s=5, logbook_s=3.0)
    assert logbook["status"] == "unsupported"
    assert logbook["entries"] == []
    assert "JK04" in str(logbook["message"])


async def test_a_bms_that_never_answers_0xa1_costs_a_bounded_wait_not_the_read(
    sim_factory: Callable[..., SimHandle], monkeypatch: pytest.MonkeyPatch
) -> None:
    sim = sim_factory(faults=[f"no-logbook@{ADDRESS}"])
    reading, logbook = await read_logbook(sim, monkeypatch, timeout_s=8, logbook_s=0.5)
    assert logbook["status"] == "missing"
    assert "did not answer 0xA1" in str(logbook["message"])
    assert [e["code"] for e in sim.log() if e["event"] == "write"].count(0xA1) == 2
    assert reading["duration_s"] < 5  # two waits of 0.5 s, far inside the read's 8 s
    assert_device_released(sim)


async def test_the_logbook_wait_never_fails_a_read_short_of_time(
    sim_factory: Callable[..., SimHandle], monkeypatch: pytest.MonkeyPatch
) -> None:
    sim = sim_factory(faults=[f"no-logbook@{ADDRESS}"])
    reading, logbook = await read_logbook(sim, monkeypatch, timeout_s=2.5, logbook_s=30.0)
    assert logbook["status"] == "missing"
    assert reading["duration_s"] < 2.5


def test_cli_logbook_is_in_the_one_json_object(sim: SimHandle) -> None:
    rc, reading, _ = run([*READ, "--address", ADDRESS, "--timeout", "8", "--logbook"], sim.env)
    assert rc == 0
    assert reading["error"] is None
    assert reading["logbook"]["status"] == "ok"
    assert reading["logbook"]["entries"] == SIM_ENTRIES


def test_cli_logbook_on_a_failed_read_still_has_the_key(sim: SimHandle) -> None:
    argv = [*READ, "--address", "C8:47:80:00:00:99", "--timeout", "3", "--scan-timeout", "1"]
    rc, reading, _ = run([*argv, "--logbook"], sim.env)
    assert rc == 1
    assert reading["error"]["type"] == "DeviceNotFound"
    assert reading["logbook"]["status"] == "missing"
    assert reading["logbook"]["entries"] == []
