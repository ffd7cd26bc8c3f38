"""StreamDecoder: layout detection (docs/protocol.md 6), pending frames, status and warnings."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from bluez_jk.protocol import StreamDecoder, decode_frame, encode_frame
from bluez_jk.protocol.alarms import WARNING_BITS
from bluez_jk.protocol.stream import MAX_PENDING
from tests.conftest import load_vector


def frame(name: str) -> bytes:
    return bytes.fromhex(load_vector(name)["hex"])


INFO_32 = frame("jk02_32s_v19_27_device_info.json")
CELL_32 = frame("jk02_32s_v19_27_cell_info.json")
SETTINGS_32 = frame("jk02_32s_v19_27_settings.json")
INFO_24 = frame("jk02_24s_v10_07_device_info.json")
CELL_24 = frame("jk02_24s_v10_07_cell_info.json")
INFO_04 = frame("jk04_v3_3_0_device_info.json")
CELL_04 = frame("jk04_v3_3_0_cell_info.json")


def test_device_info_first_detects_by_sw_rev() -> None:
    stream = StreamDecoder()
    stream.feed(INFO_32 + SETTINGS_32 + CELL_32, now=7.5)
    assert (stream.protocol, stream.detected_by) == ("JK02_32S", "sw_rev")
    assert stream.got == {"device_info": True, "cell_info": True, "settings": True}
    assert stream.status["cell_info"]["total_voltage"] == 54.028
    assert stream.status["last_update"] == 7.5


def test_cell_info_before_device_info_detects_by_content() -> None:
    stream = StreamDecoder()
    assert [d.kind for d in stream.feed(CELL_24)] == ["cell_info"]
    assert (stream.protocol, stream.detected_by) == ("JK02_24S", "content")
    assert len(stream.status["cell_info"]["voltages"]) == 24
    stream.feed(INFO_24)
    # The sw_rev rule agrees: name the higher-ranked evidence.
    assert (stream.protocol, stream.detected_by) == ("JK02_24S", "sw_rev")


def test_settings_before_anything_waits_for_the_layout() -> None:
    stream = StreamDecoder()
    assert stream.feed(SETTINGS_32) == []  # a JK02 settings frame does not tell 24S from 32S
    assert stream.got["settings"] is False
    decoded = stream.feed(INFO_32)
    assert [d.kind for d in decoded] == ["settings", "device_info"]
    assert stream.status["settings"]["cell_count"] == 16


def test_pending_frames_are_bounded() -> None:
    stream = StreamDecoder()
    for _ in range(3 * MAX_PENDING):
        stream.feed(SETTINGS_32)
    assert len(stream.feed(INFO_32)) == MAX_PENDING + 1


def test_jk04_is_found_from_its_cell_info_although_sw_rev_says_24s() -> None:
    stream = StreamDecoder()
    stream.feed(INFO_04)
    assert (stream.protocol, stream.detected_by) == ("JK02_24S", "sw_rev")
    stream.feed(CELL_04)
    assert (stream.protocol, stream.detected_by) == ("JK04", "content")
    assert stream.status["cell_info"]["voltages"][0] == 3.3527
    assert stream.status["warnings"] == {}
    stream.feed(INFO_04)  # the sw_rev rule cannot overrule the content check
    assert stream.protocol == "JK04"


def test_jk04_cell_info_alone() -> None:
    stream = StreamDecoder()
    stream.feed(CELL_04)
    assert (stream.protocol, stream.detected_by) == ("JK04", "content")


def test_mask_overrules_the_sw_rev_rule() -> None:
    """hw 10.XW running sw 11.21h is 32S; the reverse case (a 24S layout behind an 11.x version)
    is what the mask cross-check catches."""
    stream = StreamDecoder()
    stream.feed(INFO_24)
    assert stream.protocol == "JK02_24S"
    stream.feed(CELL_32)
    assert (stream.protocol, stream.detected_by) == ("JK02_32S", "content")
    assert stream.status["cell_info"]["total_voltage"] == 54.028


def test_configured_protocol_is_kept_and_a_contradiction_reported() -> None:
    stream = StreamDecoder("JK02_24S")
    stream.feed(CELL_32)
    stream.feed(CELL_32)
    assert (stream.protocol, stream.detected_by) == ("JK02_24S", "config")
    assert stream.errors == [
        {
            "type": "ProtocolError",
            "message": "configured protocol JK02_24S but a JK02_32S frame arrived",
        }
    ]


def test_bad_checksum_becomes_an_error_record() -> None:
    stream = StreamDecoder("JK02_32S")
    broken = CELL_32[:299] + bytes([(CELL_32[299] + 1) & 0xFF])
    assert stream.feed(broken + INFO_32)[0].kind == "device_info"
    assert stream.got["cell_info"] is False
    assert stream.errors[0]["type"] == "ProtocolError"


def test_warnings_name_every_bit() -> None:
    values = {"voltages": [3.3] * 4, "error_bitmask": (1 << 0) | (1 << 11) | (1 << 28)}
    stream = StreamDecoder("JK02_32S")
    stream.feed(encode_frame("cell_info", "JK02_32S", values))
    warnings = stream.status["warnings"]
    assert len(warnings) == len(WARNING_BITS) == 29
    assert sorted(k for k, v in warnings.items() if v) == [
        "cell_undervoltage",
        "gps_remote_lock",
        "resistance_too_high",
    ]
    stream = StreamDecoder("JK02_24S")
    stream.feed(encode_frame("cell_info", "JK02_24S", {**values, "error_bitmask": 1 << 15}))
    assert len(stream.status["warnings"]) == 16
    assert stream.status["warnings"]["discharge_overtemp"] is True


def test_status_serialises_with_absent_probe_as_null() -> None:
    stream = StreamDecoder("JK02_32S")
    values = {"voltages": [3.3] * 4, "temperature_sensor_2": None, "temperature_sensor_1": -3.1}
    stream.feed(encode_frame("cell_info", "JK02_32S", values), now=1.0)
    status = json.loads(json.dumps(stream.status, allow_nan=False))
    assert status["cell_info"]["temperature_sensor_2"] is None
    assert status["cell_info"]["temperature_sensor_1"] == -3.1


@given(st.lists(st.binary(max_size=400), max_size=20))
def test_random_bytes_never_raise(chunks: list[bytes]) -> None:
    stream = StreamDecoder()
    for chunk in chunks:
        stream.feed(chunk, now=0.0)
    json.dumps(stream.status, allow_nan=False)
    assert stream.assembler.buffered < 300


@given(st.binary(min_size=293, max_size=293), st.sampled_from([1, 2, 3, 5]))
def test_any_checksum_valid_frame_decodes_to_json(payload: bytes, code: int) -> None:
    """Frames from a confused or hostile device: whatever passes the checksum decodes into JSON
    without raising (NaN floats on JK04 become null)."""
    body = b"\x55\xaa\xeb\x90" + bytes([code, 0]) + payload
    data = body + bytes([sum(body) & 0xFF])
    for protocol in (None, "JK02_24S", "JK02_32S", "JK04"):
        stream = StreamDecoder(protocol)  # type: ignore[arg-type]
        stream.feed(data + INFO_32, now=0.0)
        json.dumps(stream.status, allow_nan=False)


def test_implausible_cell_voltages_are_dropped() -> None:
    """4.3 step 7: a frame that passes the checksum but holds a 6 V cell is not published."""
    stream = StreamDecoder("JK02_32S")
    assert stream.feed(encode_frame("cell_info", "JK02_32S", {"voltages": [3.3, 6.0]})) == []
    assert stream.got["cell_info"] is False
    assert stream.errors[-1]["message"] == "implausible cell_info frame dropped (cell voltage)"
    stream = StreamDecoder("JK04")
    assert stream.feed(encode_frame("cell_info", "JK04", {"voltages": [3.3, -1.0]})) == []


def test_logbook_is_kept_apart_from_status() -> None:
    stream = StreamDecoder("JK02_32S")
    stream.feed(frame("jk02_32s_v19_27_logbook.json"), now=3.0)
    assert stream.logbook is not None
    assert stream.logbook["entries"][1] == {"t": 238, "code": 68}
    assert stream.status["last_update"] is None
    assert not any(stream.got.values())


def test_logbook_slots_without_a_code_are_not_entries() -> None:
    """The frame always has 50 slots; unused ones are zero, and a count larger than the
    entries present must not turn them into events (t = 0 with a code is one: the boot)."""
    values = {"entry_count": 50, "entries": [{"t": 0, "code": 1}, {"t": 9, "code": 68}]}
    decoded = decode_frame(encode_frame("logbook", "JK02_32S", values), "JK02_32S")
    assert decoded.values["entries"] == [{"t": 0, "code": 1}, {"t": 9, "code": 68}]
