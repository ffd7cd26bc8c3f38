"""Command frames against commands.json (docs/protocol.md 2)."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bluez_jk.protocol import (
    ACK,
    CMD_CELL_INFO,
    CMD_DEVICE_INFO,
    CMD_LOGBOOK,
    REGISTERS,
    Command,
    FrameError,
    command,
    parse_command,
    write_command,
)
from tests.conftest import load_vector

COMMANDS = load_vector("commands.json")
BY_NAME = {c["name"]: bytes.fromhex(c["hex"]) for c in COMMANDS["built_by_spec"]}

BUILT: dict[str, bytes] = {
    "request_device_info": command(CMD_DEVICE_INFO),
    "request_cell_info_and_settings": command(CMD_CELL_INFO),
    "request_logbook": command(CMD_LOGBOOK),
    "charge_mosfet_on_jk02": write_command("JK02_32S", "charging_switch", True),
    "charge_mosfet_off_jk02": write_command("JK02_24S", "charging_switch", False),
    "discharge_mosfet_off_jk02": write_command("JK02_32S", "discharging_switch", 0),
    "balancer_on_jk02": write_command("JK02_32S", "balancing_switch", 1),
    "cell_ovp_3650mV_jk02": write_command("JK02_32S", "cell_ovp", 3.65),
    "charge_utp_minus_22C_jk02": write_command("JK02_24S", "charge_utp", -22.0),
    "heating_start_5C_jk02_32s": write_command("JK02_32S", "heating_start_temperature", 5),
    "uart1_protocol_index1_jk02_32s": write_command("JK02_32S", "uart1_protocol", 1),
    "jk04_balancer_on": write_command("JK04", "balancing_switch", 1),
    "jk04_max_balance_current_4p5A": write_command("JK04", "max_balance_current", 4.5),
    "jk04_cell_count_16": write_command("JK04", "cell_count", 16),
}


@pytest.mark.parametrize("name", sorted(BY_NAME))
def test_built_commands_match_the_vectors(name: str) -> None:
    assert BUILT[name] == BY_NAME[name]
    assert parse_command(BUILT[name]).code == BY_NAME[name][4]


@pytest.mark.parametrize(
    "captured",
    [c for c in COMMANDS["captured_from_official_app"] if "register" in c],
    ids=lambda c: c["desc"][:40],
)
def test_app_commands_with_random_padding_parse(captured: dict[str, Any]) -> None:
    parsed = parse_command(bytes.fromhex(captured["hex"]))
    assert parsed.code == int(captured["register"], 16)
    assert parsed.length == captured["length"]
    assert parsed.value == bytes.fromhex(captured["value_le"])[: captured["length"]]


def test_ack_is_the_0xc8_frame() -> None:
    captured = [c for c in COMMANDS["captured_from_official_app"] if "trailer" in c]
    assert [ACK.hex()] == [c["hex"] for c in captured]
    assert parse_command(ACK) == Command(0xC8, 1, b"\x01")


@pytest.mark.parametrize(
    "data",
    [
        b"",
        bytes(20),
        command(CMD_DEVICE_INFO)[:-1] + b"\x00",  # bad checksum
        command(CMD_DEVICE_INFO) + b"\x00",  # 21 bytes
        bytes.fromhex("aa5590eb97") + bytes([14]) + bytes(13) + bytes([(0x97 + 14 + 0x7A) & 0xFF]),
    ],
)
def test_bad_commands_raise_frame_error(data: bytes) -> None:
    with pytest.raises(FrameError):
        parse_command(data)


def test_unknown_setting_and_oversized_values_raise_frame_error() -> None:
    with pytest.raises(FrameError):
        write_command("JK02_24S", "heating_start_temperature", 5)  # 32S only
    with pytest.raises(FrameError):
        write_command("JK02_32S", "heating_start_temperature", 500)  # s8
    with pytest.raises(FrameError):
        command(0x9F, b"x" * 14)


def test_registers_differ_where_the_spec_says() -> None:
    assert REGISTERS["JK02_24S"]["scp_delay"].code == 0x25
    assert REGISTERS["JK02_32S"]["scp_delay"].code == 0x21
    assert REGISTERS["JK02_32S"]["voltage_calibration"].code == 0x64
    assert REGISTERS["JK04"]["balance_trigger_voltage"].code == 0x64


@given(st.integers(0, 255), st.binary(max_size=13))
def test_command_round_trip(code: int, value: bytes) -> None:
    frame = command(code, value)
    assert len(frame) == 20
    assert parse_command(frame) == Command(code, len(value), value)


@given(st.binary(min_size=20, max_size=20))
def test_parse_command_on_random_bytes_raises_only_frame_error(data: bytes) -> None:
    with contextlib.suppress(FrameError):
        parse_command(data)
