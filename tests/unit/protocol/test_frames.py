"""The structs against the offset tables of docs/protocol.md 5, field by field."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bluez_jk.protocol import PROTOCOLS, decode_frame, encode_frame
from bluez_jk.protocol.codec import codec_for
from bluez_jk.protocol.frames import STRUCTS, Kind
from bluez_jk.protocol.scale import SCALE, UNPUBLISHED
from bluez_jk.protocol.variants import ProtocolName
from tests.conftest import load_vector
from tests.unit.protocol.vectors import FRAME_FILES, frame_of

# (kind, field, 24S offset, 32S offset, JK04 offset) straight from the spec tables; None =
# the field does not exist on that layout.
SPEC_OFFSETS: list[tuple[Kind, str, int | None, int | None, int | None]] = [
    ("device_info", "vendor_id", 6, 6, 6),
    ("device_info", "sw_rev", 30, 30, 30),
    ("device_info", "serial_number", 86, 86, 86),
    ("device_info", "user_data_2", 134, 134, 134),
    ("device_info", "hardware_option", 190, 190, 190),
    ("device_info", "re_bulk_soc", 278, 278, 278),
    ("cell_info", "enabled_cells_bitmask", 54, 70, None),
    ("cell_info", "average_cell_voltage", 58, 74, 202),
    ("cell_info", "min_voltage_cell", 63, 79, None),
    ("cell_info", "resistances", 64, 80, 102),
    ("cell_info", "temperature_mos", 134, 144, None),
    ("cell_info", "wire_resistance_warning_bitmask", 114, 146, None),
    ("cell_info", "total_voltage", 118, 150, None),
    ("cell_info", "current", 126, 158, None),
    ("cell_info", "temperature_sensor_2", 132, 164, None),
    ("cell_info", "error_bitmask", 136, 166, None),
    ("cell_info", "balancing_current", 138, 170, 222),
    ("cell_info", "balancing_action", 140, 172, 220),
    ("cell_info", "battery_soc", 141, 173, None),
    ("cell_info", "cycle_capacity", 154, 186, None),
    ("cell_info", "state_of_health", 158, 190, None),
    ("cell_info", "total_runtime", 162, 194, 286),
    ("cell_info", "discharging_switch_enabled", 167, 199, None),
    ("cell_info", "precharging", None, 200, None),
    ("cell_info", "temperature_sensor_present_bitmask", 182, 214, None),
    ("cell_info", "emergency_time_countdown", 186, 218, None),
    ("cell_info", "pack_voltage_alt", None, 234, None),
    ("cell_info", "heating_current", 204, 236, None),
    ("cell_info", "temperature_sensor_3", None, 254, None),
    ("cell_info", "temperature_sensor_5", None, 258, None),
    ("cell_info", "detail_log_entry_count", None, 266, None),
    ("cell_info", "battery_type_id", None, 275, None),
    ("cell_info", "charge_status_time_elapsed", None, 278, None),
    ("cell_info", "dry_contact_bitmask", None, 281, None),
    ("settings", "cell_uvp", 10, 10, None),
    ("settings", "max_balance_current", 78, 78, 110),
    ("settings", "charge_utp", 98, 98, None),
    ("settings", "cell_count", 114, 114, 34),
    ("settings", "balance_start_voltage", 138, 138, 98),
    ("settings", "power_off_voltage", 46, 46, 38),
    ("settings", "device_address", None, 270, None),
    ("settings", "control_bitmask", None, 282, None),
    ("settings", "heating_stop_temperature", None, 285, None),
    ("settings", "discharge_utpr", None, 297, None),
    ("settings", "balancing_switch", 126, 126, 114),
    ("logbook", "entry_count", 6, 6, 6),
]

_SAMPLE: dict[str, Any] = {"int": 1, "float": 1.0, "bytes": "A", "records": [{"t": 1, "code": 1}]}


def _offset(kind: Kind, protocol: ProtocolName, name: str) -> int | None:
    """Where a field lands: build a frame with only that field set and find the first change."""
    field = next((f for f in codec_for(kind, protocol).fields if f.name == name), None)
    if field is None:
        return None
    sample = _SAMPLE[field.kind]
    if field.kind in {"int", "float"}:
        sample = sample / 1000 if SCALE[name].div == 1000 else sample
    value = [sample] if field.count and field.kind != "records" else sample
    blank = encode_frame(kind, protocol, {"enabled_cells_bitmask": 0})
    built = encode_frame(kind, protocol, {"enabled_cells_bitmask": 0, name: value})
    return next(i for i in range(6, 299) if blank[i] != built[i])


@pytest.mark.parametrize(("kind", "name", "o24", "o32", "o04"), SPEC_OFFSETS)
def test_field_offsets_match_the_spec(
    kind: Kind, name: str, o24: int | None, o32: int | None, o04: int | None
) -> None:
    for protocol, offset in zip(PROTOCOLS, (o24, o32, o04), strict=True):
        if kind in {"device_info", "logbook"} or offset is not None:
            assert _offset(kind, protocol, name) == offset, protocol
        else:
            assert _offset(kind, protocol, name) is None, protocol


@pytest.mark.parametrize("key", sorted(STRUCTS, key=str))
def test_every_struct_is_one_300_byte_frame(key: tuple[Kind, ProtocolName]) -> None:
    assert STRUCTS[key].sizeof() == 300


@pytest.mark.parametrize("key", sorted(STRUCTS, key=str))
def test_every_field_has_a_unit_or_is_deliberately_unpublished(
    key: tuple[Kind, ProtocolName],
) -> None:
    for field in codec_for(*key).fields:
        assert field.name in SCALE or field.name in UNPUBLISHED, field.name


@pytest.mark.parametrize("name", [n for n in FRAME_FILES if "device_info" in n])
def test_passcodes_are_never_published(name: str) -> None:
    """Device-info 62 and 118 hold passcodes (docs/protocol.md 1.6)."""
    vector = load_vector(name)
    frame = frame_of(vector)
    values = json.dumps(decode_frame(frame, vector["protocol_version"]).values)
    for offset in (62, 118):
        passcode = frame[offset : offset + 16].split(b"\0")[0].decode()
        if passcode:  # JK04 leaves the setup passcode empty
            assert passcode not in values


@settings(max_examples=50)
@given(st.binary(min_size=293, max_size=293), st.sampled_from(sorted(STRUCTS, key=str)))
def test_compiled_parser_agrees_with_construct(
    payload: bytes, key: tuple[Kind, ProtocolName]
) -> None:
    """The single-unpack compiled parser (packed.FlatStruct) reads what plain construct reads."""
    data = b"\x55\xaa\xeb\x90\x02\x00" + payload + b"\x00"
    codec = codec_for(*key)
    fast = codec.parse(data)
    slow = STRUCTS[key].parse(data)
    for field in codec.fields:
        assert repr(fast[field.name]) == repr(slow[field.name]), field.name
