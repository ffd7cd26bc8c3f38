"""Every captured frame decodes to its `expected.derived_from_spec` values, fed three ways."""

from __future__ import annotations

import json

import pytest

from bluez_jk.protocol import Assembler, StreamDecoder, decode_frame
from bluez_jk.protocol.frames import TYPE_CODES
from tests.conftest import load_vector
from tests.unit.protocol.vectors import FRAME_FILES, check_values, frame_of


@pytest.mark.parametrize("name", FRAME_FILES)
def test_whole_frame_decodes_to_expected_values(name: str) -> None:
    vector = load_vector(name)
    decoded = decode_frame(frame_of(vector), vector["protocol_version"])
    assert decoded.kind == TYPE_CODES[int(vector["frame_type"].split()[0], 16)]
    check_values(decoded.values, vector["expected"]["derived_from_spec"])
    json.dumps(decoded.values, allow_nan=False)


@pytest.mark.parametrize(
    "name", [n for n in FRAME_FILES if "raw_notification_buffer" in load_vector(n)]
)
def test_raw_notification_buffer_yields_the_frame(name: str) -> None:
    vector = load_vector(name)
    buffer = bytes.fromhex(vector["raw_notification_buffer"])
    assert buffer[300:] == bytes.fromhex(vector["trailer_after_frame"])
    # decode_frame takes the first 300 bytes of an over-long buffer.
    check_values(
        decode_frame(buffer, vector["protocol_version"]).values,
        vector["expected"]["derived_from_spec"],
    )
    stream = StreamDecoder(vector["protocol_version"])
    decoded = stream.feed(buffer)
    assert len(decoded) == 1
    check_values(decoded[0].values, vector["expected"]["derived_from_spec"])
    assert stream.errors == []


@pytest.mark.parametrize("name", [n for n in FRAME_FILES if "chunks" in load_vector(n)])
def test_chunks_yield_the_frame(name: str) -> None:
    vector = load_vector(name)
    assembler = Assembler()
    frames = [f for chunk in vector["chunks"] for f in assembler.feed(bytes.fromhex(chunk))]
    assert frames == [frame_of(vector)]
    stream = StreamDecoder(vector["protocol_version"])
    decoded = [d for chunk in vector["chunks"] for d in stream.feed(bytes.fromhex(chunk))]
    check_values(decoded[0].values, vector["expected"]["derived_from_spec"])


@pytest.mark.parametrize("name", FRAME_FILES)
def test_frame_split_into_20_byte_notifications(name: str) -> None:
    """The JK04 module's 20-byte notifications (docs/protocol.md 1.4), with the usual junk."""
    vector = load_vector(name)
    data = b"AT\r\n" + frame_of(vector) + bytes.fromhex("aa5590ebc8010100000000000000000000000044")
    stream = StreamDecoder(vector["protocol_version"])
    decoded = [d for i in range(0, len(data), 20) for d in stream.feed(data[i : i + 20])]
    assert len(decoded) == 1
    check_values(decoded[0].values, vector["expected"]["derived_from_spec"])
    assert stream.assembler.acks == 1
    assert stream.assembler.junk_bytes == 24


@pytest.mark.parametrize("name", [n for n in FRAME_FILES if "cell_info" in n])
def test_warnings_follow_the_error_bitmask(name: str) -> None:
    vector = load_vector(name)
    stream = StreamDecoder(vector["protocol_version"])
    stream.feed(frame_of(vector), now=5.0)
    expected = vector["expected"]["derived_from_spec"]
    warnings = stream.status["warnings"]
    if "warnings_set" in expected:
        assert sorted(k for k, v in warnings.items() if v) == sorted(expected["warnings_set"])
    assert stream.status["last_update"] == 5.0


def test_btsnoop_stream_yields_exactly_the_expected_frames() -> None:
    vector = load_vector("jk02_32s_v14_20_btsnoop_stream.json")
    expected = vector["expected"]["derived_from_spec"]
    stream = StreamDecoder()
    decoded = []
    frames = []
    for chunk in vector["chunks"]:
        before = stream.assembler.frames
        decoded += stream.feed(bytes.fromhex(chunk))
        frames.append(stream.assembler.frames - before)
    assembler = stream.assembler
    assert assembler.frames == len(expected["frames_in_order"])
    assert [d.kind for d in decoded] == [
        TYPE_CODES[int(f["type"], 16)] for f in expected["frames_in_order"]
    ]
    assert assembler.junk_bytes == expected["junk_bytes_dropped"]
    assert assembler.buffered == expected["leftover_bytes"]
    assert assembler.corrupt == 0
    assert stream.errors == []
    assert (stream.protocol, stream.detected_by) == ("JK02_32S", "sw_rev")
    first_cell_info = next(d for d in decoded if d.kind == "cell_info")
    check_values(first_cell_info.values, expected["first_cell_info"])


def test_btsnoop_stream_frame_counters_in_order() -> None:
    vector = load_vector("jk02_32s_v14_20_btsnoop_stream.json")
    assembler = Assembler()
    frames = [f for c in vector["chunks"] for f in assembler.feed(bytes.fromhex(c))]
    got = [(f"0x{f[4]:x}", f[5]) for f in frames]
    want = [
        (f["type"], f["counter"])
        for f in vector["expected"]["derived_from_spec"]["frames_in_order"]
    ]
    assert got == want
