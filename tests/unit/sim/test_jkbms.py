"""The emulated BMS alone: what it says for each profile and fault, decoded by our own decoder."""

from __future__ import annotations

import asyncio

import pytest

from bluez_jk.protocol import ACK, command
from bluez_jk.protocol.stream import StreamDecoder
from bluez_jk.sim.devices import parse_device
from bluez_jk.sim.faults import FaultSet, parse_fault
from bluez_jk.sim.jkbms import AT_NOISE, JkBms
from bluez_jk.sim.timing import TIMINGS


async def _run(
    spec_text: str, faults: list[str], until: int = 2
) -> tuple[list[bytes], StreamDecoder]:
    spec = parse_device(spec_text)
    chunks: list[bytes] = []
    decoder = StreamDecoder()
    cell_frames = asyncio.Event()
    dropped = asyncio.Event()

    def notify(chunk: bytes) -> None:
        chunks.append(chunk)
        for decoded in decoder.feed(chunk):
            if decoded.kind == "cell_info" and decoder.assembler.frames >= until + 2:
                cell_frames.set()

    async def drop() -> None:
        dropped.set()

    bms = JkBms(spec, TIMINGS["zero"], FaultSet([parse_fault(f) for f in faults]), notify, drop)
    bms.subscribed()
    bms.on_write(command(0x97))
    bms.on_write(command(0x96))
    try:
        await asyncio.wait_for(
            asyncio.wait(
                [asyncio.ensure_future(cell_frames.wait()), asyncio.ensure_future(dropped.wait())],
                return_when=asyncio.FIRST_COMPLETED,
            ),
            5,
        )
    finally:
        bms.stop()
    return chunks, decoder


@pytest.mark.parametrize(
    ("spec", "protocol", "mtu", "cells"),
    [
        ("C8:47:80:00:00:01,protocol=JK02_24S,cells=8", "JK02_24S", 247, 8),
        ("C8:47:80:00:00:02,protocol=JK02_32S,cells=16", "JK02_32S", 131, 16),
        ("C8:47:80:00:00:03,protocol=JK04,cells=16", "JK04", 23, 16),
    ],
)
async def test_each_profile_decodes(spec: str, protocol: str, mtu: int, cells: int) -> None:
    chunks, decoder = await _run(spec, [])
    assert decoder.protocol == protocol
    assert all(decoder.got.values())
    assert not decoder.errors
    assert max(map(len, chunks)) <= mtu - 3
    voltages = [v for v in decoder.status["cell_info"]["voltages"] if v]
    assert len(voltages) == cells
    assert ACK in b"".join(chunks)


async def test_cell_voltages_drift_between_frames() -> None:
    spec = "C8:47:80:00:00:04,protocol=JK02_32S,cells=4"
    _chunks, decoder = await _run(spec, [], until=1)
    first = list(decoder.status["cell_info"]["voltages"])
    _chunks, decoder = await _run(spec, [], until=4)
    assert decoder.status["cell_info"]["voltages"] != first


async def test_sw14_repeats_device_info_with_counter_a5() -> None:
    chunks, _ = await _run("C8:47:80:00:00:05,protocol=JK02_32S", [])
    stream = b"".join(chunks)
    assert b"\x55\xaa\xeb\x90\x03\xa5" in stream
    chunks, _ = await _run("C8:47:80:00:00:06,protocol=JK02_24S", [])
    assert b"\x55\xaa\xeb\x90\x03\xa5" not in b"".join(chunks)


async def test_bad_crc_is_reported_as_corrupt() -> None:
    _chunks, decoder = await _run("C8:47:80:00:00:07", ["bad-crc:1"])
    assert decoder.assembler.corrupt == 1
    assert all(decoder.got.values())


async def test_junk_adds_at_noise_and_glued_acks_and_still_decodes() -> None:
    chunks, decoder = await _run("C8:47:80:00:00:08", ["junk"], until=3)
    assert AT_NOISE in b"".join(chunks)
    assert any(c.startswith(AT_NOISE) or c.endswith(AT_NOISE) for c in chunks)
    assert all(decoder.got.values())
    assert decoder.assembler.acks >= 1


async def test_silent_never_notifies() -> None:
    spec = parse_device("C8:47:80:00:00:09")
    chunks: list[bytes] = []

    async def drop() -> None:
        pass

    bms = JkBms(spec, TIMINGS["zero"], FaultSet([parse_fault("silent")]), chunks.append, drop)
    bms.on_write(command(0x97))
    bms.on_write(command(0x96))
    await asyncio.sleep(0.2)
    bms.stop()
    assert chunks == []


async def test_logbook_request_gets_a_logbook_frame() -> None:
    spec = parse_device("C8:47:80:00:00:0A")
    chunks: list[bytes] = []

    async def drop() -> None:
        pass

    bms = JkBms(spec, TIMINGS["zero"], FaultSet(), chunks.append, drop)
    decoder = StreamDecoder(protocol="JK02_32S")
    bms.on_write(command(0xA1))
    kinds: list[str] = []
    fed = 0
    for _ in range(200):  # bounded: one second
        await asyncio.sleep(0.005)
        for chunk in chunks[fed:]:
            kinds += [decoded.kind for decoded in decoder.feed(chunk)]
        fed = len(chunks)
        if "logbook" in kinds:
            break
    bms.stop()
    assert kinds == ["logbook"]
    assert decoder.assembler.acks == 1
