"""Register writes on the emulated BMS: applied and shown in the next settings frame, ignored
when outside what the BMS accepts or under the `ignore-writes` fault, acknowledged either way."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bluez_jk.protocol import ACK, command, write_command
from bluez_jk.protocol.commands import REGISTERS
from bluez_jk.protocol.stream import StreamDecoder
from bluez_jk.sim.devices import parse_device
from bluez_jk.sim.faults import FaultSet, parse_fault
from bluez_jk.sim.jkbms import JkBms
from bluez_jk.sim.timing import TIMINGS


async def _settings_after(spec_text: str, writes: list[bytes], faults: list[str]) -> Any:
    """Send `writes`, then 0x96; the settings frame that answers it, and the raw stream."""
    decoder = StreamDecoder()
    chunks: list[bytes] = []
    got = asyncio.Event()

    def notify(chunk: bytes) -> None:
        chunks.append(chunk)
        for decoded in decoder.feed(chunk):
            if decoded.kind == "settings":
                got.set()

    async def drop() -> None:
        return None

    spec = parse_device(spec_text)
    bms = JkBms(spec, TIMINGS["zero"], FaultSet([parse_fault(f) for f in faults]), notify, drop)
    bms.on_write(command(0x97))
    for frame in writes:
        bms.on_write(frame)
    bms.on_write(command(0x96))
    try:
        await asyncio.wait_for(got.wait(), 5)
        await asyncio.sleep(0.1)  # the ack that follows the reply (zero timing: at once)
    finally:
        bms.stop()
    return decoder.status["settings"], b"".join(chunks)


@pytest.mark.parametrize("protocol", ["JK02_24S", "JK02_32S"])
async def test_a_switch_write_shows_in_the_next_settings_frame(protocol: str) -> None:
    spec = f"C8:47:80:00:00:01,protocol={protocol},cells=8"
    before, _ = await _settings_after(spec, [], [])
    assert before["charging_switch"] == 1
    frame = write_command(protocol, "charging_switch", 0)  # type: ignore[arg-type]
    after, stream = await _settings_after(spec, [frame], [])
    assert after["charging_switch"] == 0
    assert after["discharging_switch"] == 1
    assert stream.count(ACK) == 3  # 0x97, the write, 0x96: every command is acknowledged


async def test_a_number_write_is_applied_at_register_resolution() -> None:
    frame = write_command("JK02_32S", "balance_trigger_voltage", 0.012)
    after, _ = await _settings_after("C8:47:80:00:00:02", [frame], [])
    assert after["balance_trigger_voltage"] == pytest.approx(0.012)


async def test_a_jk04_float_write_is_applied() -> None:
    frame = write_command("JK04", "max_balance_current", 1.5)
    after, _ = await _settings_after("C8:47:80:00:00:03,protocol=JK04,cells=16", [frame], [])
    assert after["max_balance_current"] == pytest.approx(1.5)


@pytest.mark.parametrize(
    ("key", "value"),
    [("charging_switch", 5), ("balance_trigger_voltage", 2.0), ("max_charge_current", 900.0)],
)
async def test_a_value_outside_the_bms_range_is_acknowledged_and_ignored(
    key: str, value: float
) -> None:
    spec = "C8:47:80:00:00:02"
    before, _ = await _settings_after(spec, [], [])
    frame = write_command("JK02_32S", key, value)
    after, stream = await _settings_after(spec, [frame], [])
    assert after[key] == before[key]
    assert stream.count(ACK) == 3


async def test_ignore_writes_fault_acknowledges_and_applies_nothing() -> None:
    frame = write_command("JK02_32S", "charging_switch", 0)
    after, stream = await _settings_after("C8:47:80:00:00:02", [frame], ["ignore-writes"])
    assert after["charging_switch"] == 1
    assert stream.count(ACK) == 3


async def test_an_unknown_register_is_acknowledged_and_changes_nothing() -> None:
    assert all(r.code != 0xEE for r in REGISTERS["JK02_32S"].values())
    before, _ = await _settings_after("C8:47:80:00:00:02", [], [])
    after, _ = await _settings_after("C8:47:80:00:00:02", [command(0xEE, b"\x01\0\0\0")], [])
    assert after == before
