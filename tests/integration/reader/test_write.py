"""`writer.write_and_verify` against the simulator: switches off and on verified by read-back
on both JK02 layouts and JK04, a value the BMS ignores comes back `verified: false`, exactly one
register write reaches the bus per call (also when the link drops after it), no leaks."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from bluez_jk.protocol import REGISTERS
from bluez_jk.reader import Reader, ReadRequest
from bluez_jk.writer import write_and_verify
from tests.fixtures.bluez import SimHandle
from tests.integration.reader.conftest import (
    ADDRESS,
    FAST,
    assert_device_released,
    assert_reader_clean,
    open_fds,
)

pytestmark = pytest.mark.integration

REQ = ReadRequest(name="jk1", address=ADDRESS, timeout_s=10)
REQUESTS = (0x96, 0x97)


def register_writes(sim: SimHandle) -> list[dict[str, Any]]:
    """Every write event whose command is not a request: what reached the BMS as a setting."""
    return [e for e in sim.log() if e["event"] == "write" and e.get("code") not in REQUESTS]


@pytest.mark.parametrize(
    ("protocol", "key"),
    [
        ("JK02_32S", "charging_switch"),
        ("JK02_24S", "discharging_switch"),
        ("JK04", "balancing_switch"),
    ],
)
async def test_switch_off_and_on_is_verified_by_read_back(
    sim_factory: Callable[..., SimHandle],
    monkeypatch: pytest.MonkeyPatch,
    protocol: str,
    key: str,
) -> None:
    sim = sim_factory(devices=[f"{ADDRESS},adapter=hci0,protocol={protocol},cells=16"])
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", sim.bus_address)
    async with Reader(timing=FAST) as reader:
        await reader.get_bus()
        fds = open_fds()
        off = await write_and_verify(reader, REQ, key, 0)
        assert off.error is None, off.error
        assert (off.written, off.verified, off.before, off.after) == (True, True, 1, 0)
        assert off.protocol == protocol
        assert off.frame is not None
        assert off.frame[4] == REGISTERS[off.protocol][key].code
        assert off.reading is not None
        assert off.reading["status"]["settings"][key] == 0
        on = await write_and_verify(reader, REQ, key, 1)
        assert (on.written, on.verified, on.before, on.after) == (True, True, 0, 1)
        assert_device_released(sim)
        await assert_reader_clean(sim, reader)
        assert open_fds() <= fds
    codes = [e["code"] for e in register_writes(sim)]
    assert codes == [REGISTERS[protocol][key].code] * 2  # type: ignore[index]


async def test_a_number_is_written_at_register_resolution(sim: SimHandle, reader: Reader) -> None:
    outcome = await write_and_verify(reader, REQ, "balance_trigger_voltage", 0.012)
    assert outcome.verified, outcome
    assert outcome.before == pytest.approx(0.005)
    assert outcome.after == pytest.approx(0.012)


async def test_a_write_the_bms_ignores_comes_back_not_verified(
    sim: SimHandle, reader: Reader
) -> None:
    sim.set_fault("ignore-writes")
    outcome = await write_and_verify(reader, REQ, "charging_switch", 0)
    assert outcome.error is None
    assert (outcome.written, outcome.verified, outcome.before, outcome.after) == (
        True,
        False,
        1,
        1,
    )
    assert len(register_writes(sim)) == 1  # read back several times, written once
    assert_device_released(sim)


async def test_a_value_outside_the_bms_range_is_ignored_by_the_bms(
    sim: SimHandle, reader: Reader
) -> None:
    # The policy never lets this through; the writer alone shows what the firmware does.
    outcome = await write_and_verify(reader, REQ, "max_charge_current", 900.0)
    assert (outcome.written, outcome.verified) == (True, False)
    assert outcome.after == outcome.before == pytest.approx(100.0)


async def test_a_register_the_layout_lacks_writes_nothing(
    sim_factory: Callable[..., SimHandle], monkeypatch: pytest.MonkeyPatch
) -> None:
    sim = sim_factory(devices=[f"{ADDRESS},adapter=hci0,protocol=JK04,cells=16"])
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", sim.bus_address)
    async with Reader(timing=FAST) as reader:
        outcome = await write_and_verify(reader, REQ, "charging_switch", 0)
    assert outcome.written is False
    assert outcome.error is not None
    assert "nothing written" in outcome.error["message"]
    assert register_writes(sim) == []
    assert_device_released(sim)


async def test_a_link_drop_after_the_write_is_retried_as_a_read_only(
    sim: SimHandle, reader: Reader
) -> None:
    code = REGISTERS["JK02_32S"]["charging_switch"].code
    task = asyncio.create_task(write_and_verify(reader, REQ, "charging_switch", 0))
    # The link drops right after the register write, while the writer waits for the BMS to
    # apply it (SETTLE_S): the session reconnects and must only read back.
    await sim.await_log(lambda e: e["event"] == "write" and e.get("code") == code)
    sim.drop_link(ADDRESS)
    outcome = await task
    assert outcome.written
    assert outcome.verified, outcome
    assert len(sim.connections()) == 2
    assert len(register_writes(sim)) == 1
    assert_device_released(sim)
