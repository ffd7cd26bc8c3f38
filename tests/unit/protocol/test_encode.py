"""encode_frame is the exact inverse of decode_frame, for every kind and layout."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bluez_jk.protocol import PROTOCOLS, FrameError, decode_frame, encode_frame
from bluez_jk.protocol.codec import codec_for
from bluez_jk.protocol.frames import STRUCTS, Field, Kind
from bluez_jk.protocol.scale import PROBE_ABSENT, SCALE, UNPUBLISHED, Unit
from bluez_jk.protocol.variants import ProtocolName
from tests.conftest import load_vector
from tests.unit.protocol.vectors import FRAME_FILES, frame_of

# Derived by decode_frame from other fields, so not part of a round trip.
DERIVED = {"power", "production", "total_voltage"}
TRIMMED = {"voltages", "resistances"}


def _number(field: Field, unit: Unit) -> st.SearchStrategy[Any]:
    if field.kind == "float":
        top = 10 ** (8 - unit.digits)  # stays well inside float32's 7 significant digits
        return st.integers(-top, top).map(lambda n: n / 10**unit.digits)
    if unit.kind == "bool":
        return st.booleans()
    bits = 8 * field.size
    low, high = (-(1 << bits - 1), (1 << bits - 1) - 1) if field.signed else (0, (1 << bits) - 1)
    raws = st.integers(low, high)
    if unit.kind == "probe":
        return st.one_of(st.none(), raws.filter(lambda r: r != PROBE_ABSENT).map(lambda r: r / 10))
    return raws if unit.div == 1 else raws.map(lambda r: r / unit.div)


def _values(kind: Kind, protocol: ProtocolName) -> st.SearchStrategy[dict[str, Any]]:
    fields = [f for f in codec_for(kind, protocol).fields if f.name not in UNPUBLISHED]
    strategies: dict[str, st.SearchStrategy[Any]] = {}
    for field in fields:
        unit = SCALE[field.name]
        if field.kind == "bytes":
            text = st.text(
                st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=field.size
            )
            strategies[field.name] = text
        elif field.kind == "records":
            entry = st.fixed_dictionaries(
                # Code 0 marks an unused slot, which decode_frame drops.
                {"t": st.integers(0, 2**32 - 1), "code": st.integers(1, 255)}
            )
            strategies[field.name] = st.lists(entry, max_size=field.count or 0)
        elif field.count is not None:
            strategies[field.name] = st.lists(_number(field, unit), max_size=field.count)
        else:
            strategies[field.name] = _number(field, unit)
    strategies.pop("enabled_cells_bitmask", None)  # follows the number of voltages
    return st.fixed_dictionaries({}, optional=strategies).map(lambda v: _consistent(kind, v))


def _consistent(kind: Kind, values: dict[str, Any]) -> dict[str, Any]:
    """What decode_frame derives: cells in use = voltages given (the last one non-zero, since
    JK04 has no mask), one resistance per cell, as many log entries as the count says."""
    if kind == "cell_info":
        voltages = [v or 1.0 for v in values.get("voltages", [])]
        values["voltages"] = voltages
        values["resistances"] = (values.get("resistances", []) + [0.0] * len(voltages))[
            : len(voltages)
        ]
    if kind == "logbook":
        values["entry_count"] = len(values.get("entries", []))
    return values


def _published(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if k not in DERIVED}


CASES = sorted(set(STRUCTS), key=str)


@pytest.mark.parametrize(("kind", "protocol"), CASES)
def test_round_trip_property(kind: Kind, protocol: ProtocolName) -> None:
    @given(_values(kind, protocol), st.integers(0, 255))
    def round_trip(values: dict[str, Any], counter: int) -> None:
        frame = encode_frame(kind, protocol, values, counter)
        assert frame[5] == counter
        decoded = decode_frame(frame, protocol)
        assert decoded.kind == kind
        got = _published(decoded.values)
        for key, want in values.items():
            if key == "voltages" and protocol != "JK04":
                assert got[key] == pytest.approx(want)
            elif key not in DERIVED:
                assert got[key] == want, key

    round_trip()


@pytest.mark.parametrize("name", FRAME_FILES)
def test_vector_frames_round_trip_through_their_decoded_values(name: str) -> None:
    vector = load_vector(name)
    protocol = vector["protocol_version"]
    decoded = decode_frame(frame_of(vector), protocol)
    rebuilt = encode_frame(decoded.kind, protocol, decoded.values, vector["frame_counter"])
    assert decode_frame(rebuilt, protocol) == decoded


def test_missing_values_are_zero() -> None:
    values = decode_frame(encode_frame("cell_info", "JK02_32S", {}), "JK02_32S").values
    assert values["voltages"] == []
    assert values["current"] == 0
    assert values["temperature_sensor_1"] == 0
    values = decode_frame(encode_frame("settings", "JK04", {}), "JK04").values
    assert values["cell_count"] == 0


def test_absent_probe_round_trips_as_none() -> None:
    frame = encode_frame("cell_info", "JK02_24S", {"temperature_sensor_2": None})
    assert decode_frame(frame, "JK02_24S").values["temperature_sensor_2"] is None


@pytest.mark.parametrize(
    "values",
    [
        {"voltages": [3.3] * 33},
        {"vendor_id": "x" * 17},
        {"current": 3_000_000.0},
        {"battery_soc": -1},
    ],
)
def test_values_that_do_not_fit_raise_frame_error(values: dict[str, Any]) -> None:
    with pytest.raises(FrameError):
        encode_frame(
            "cell_info" if "vendor_id" not in values else "device_info", "JK02_32S", values
        )


def test_every_protocol_has_every_kind() -> None:
    assert set(STRUCTS) == {(k, p) for k, _ in STRUCTS for p in PROTOCOLS}


@pytest.mark.parametrize(
    ("kind", "values"),
    [
        ("device_info", {"vendor_id": "JK-\u00e9"}),
        ("cell_info", {"current": "a lot"}),
        ("cell_info", {"voltages": 3.3}),
        ("settings", {"cell_count": float("nan")}),
    ],
)
def test_values_of_the_wrong_type_raise_frame_error(kind: Kind, values: dict[str, Any]) -> None:
    with pytest.raises(FrameError):
        encode_frame(kind, "JK02_32S", values)
