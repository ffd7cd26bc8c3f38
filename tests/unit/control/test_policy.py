"""The write policy alone: request parsing, the order of the checks, both ranges, frames and
read-back comparison; hypothesis: no payload crashes it and only valid requests pass."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bluez_jk.control.policy import (
    SWITCHES,
    WRITABLES,
    Refused,
    SetRequest,
    check,
    frame_for,
    parse_set_request,
    same_value,
)
from bluez_jk.protocol import REGISTERS, parse_command

OPEN: dict[str, Any] = {
    "enabled": True,
    "allow": tuple(WRITABLES),
    "protocol": "JK02_32S",
    "age_s": 5.0,
    "max_age_s": 60.0,
}


def refusal(payload: bytes, **overrides: Any) -> str:
    with pytest.raises(Refused) as err:
        check(parse_set_request(payload), **(OPEN | overrides))
    return err.value.code


def test_switch_request_parses() -> None:
    assert parse_set_request(b'{"charging": false}') == SetRequest("charging", False, False)
    assert parse_set_request(b'{"balancing": true, "dry_run": true}') == SetRequest(
        "balancing", True, True
    )
    assert parse_set_request(b'{"max_charge_current": 50}').value == 50.0


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"nope",
        b"[]",
        b"{}",
        b'{"dry_run": true}',
        b'{"charging": 0}',
        b'{"charging": "off"}',
        b'{"charging": false, "discharging": false}',
        b'{"cell_ovp": 3.6}',
        b'{"charging": false, "dry_run": "yes"}',
        b'{"max_charge_current": true}',
        b'{"max_charge_current": "50"}',
        b'{"max_charge_current": NaN}',
        b'{"max_charge_current": Infinity}',
        b'{"max_charge_current": 1' + b"0" * 400 + b"}",
        b'{"max_charge_current": 1' + b"0" * 5000 + b"}",
        b"\xff\xfe",
        b"[" * 5000,
        b'{"charging": false, "pad": "' + b"x" * 2000 + b'"}',
    ],
)
def test_invalid_requests_are_refused_as_such(payload: bytes) -> None:
    with pytest.raises(Refused) as err:
        parse_set_request(payload)
    assert err.value.code == "invalid_request"
    assert err.value.message


def test_only_a_small_set_is_writable_and_no_protection_limit() -> None:
    # Cell protection limits (OVP/UVP) and calibration are deliberately not writable.
    assert set(SWITCHES) == {"charging", "discharging", "balancing"}
    assert not {"cell_ovp", "cell_uvp", "voltage_calibration", "cell_count"} & set(WRITABLES)
    for writable in WRITABLES.values():
        assert writable.key in REGISTERS["JK02_32S"], writable
        low, high = writable.safe_range
        bms_low, bms_high = writable.bms_range
        assert bms_low <= low < high <= bms_high, writable  # ours are never wider


def test_the_checks_run_in_order() -> None:
    payload = b'{"max_charge_current": 500}'
    assert refusal(payload, enabled=False) == "control_disabled"
    assert refusal(payload, allow=("charging",)) == "not_allowed"
    assert refusal(payload) == "out_of_bms_range"
    assert refusal(b'{"max_charge_current": 150}') == "out_of_safety_bounds"
    assert refusal(b'{"charging": false}', protocol=None, age_s=None) == "no_data"
    assert refusal(b'{"charging": false}', protocol="JK04") == "unsupported"
    assert refusal(b'{"charging": false}', age_s=61.0) == "stale_data"
    passed = check(parse_set_request(b'{"max_charge_current": 50}'), **OPEN)
    assert passed == [
        "control_enabled",
        "allowed",
        "bms_range",
        "safety_bounds",
        "register",
        "fresh_data",
    ]


def test_bounds_are_inclusive() -> None:
    for writable in WRITABLES.values():
        if writable.kind == "number":
            for value in writable.safe_range:
                check(SetRequest(writable.name, value), **OPEN)


@pytest.mark.parametrize("protocol", ["JK02_24S", "JK02_32S"])
def test_frames_are_register_writes_for_the_layout(protocol: str) -> None:
    frame = frame_for(protocol, SetRequest("charging", False))  # type: ignore[arg-type]
    command = parse_command(frame)
    assert command.code == 0x1D
    assert command.value == b"\0\0\0\0"
    frame = frame_for(protocol, SetRequest("balance_start_voltage", 3.4))  # type: ignore[arg-type]
    assert parse_command(frame).value == (3400).to_bytes(4, "little")
    assert parse_command(frame).code == REGISTERS[protocol]["balance_start_voltage"].code  # type: ignore[index]


def test_same_value_compares_at_register_resolution() -> None:
    assert same_value("JK02_32S", "balance_trigger_voltage", 0.012, 0.012)
    assert same_value("JK02_32S", "balance_trigger_voltage", 0.0121, 0.012)
    assert not same_value("JK02_32S", "balance_trigger_voltage", 0.013, 0.012)
    assert same_value("JK02_32S", "charging_switch", 0, False)
    assert not same_value("JK02_32S", "charging_switch", 0, 1)
    assert not same_value("JK02_32S", "charging_switch", 0, None)
    assert same_value("JK04", "max_balance_current", 1.5, 1.50000001)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=3),
    max_leaves=8,
)  # fmt: skip
KEYS = st.sampled_from([*WRITABLES, "dry_run", "x", ""])
REQUESTS = st.dictionaries(KEYS, JSON | st.floats(min_value=-1e3, max_value=1e3), max_size=3)


@settings(max_examples=400, deadline=None)
@given(
    payload=st.one_of(
        st.binary(max_size=64), JSON.map(lambda v: json.dumps(v).encode()),
        REQUESTS.map(lambda v: json.dumps(v).encode()),
    )
)  # fmt: skip
def test_any_payload_is_refused_or_a_valid_in_bounds_request(payload: bytes) -> None:
    try:
        request = parse_set_request(payload)
        passed = check(request, **OPEN)
    except Refused as err:
        code = err.code
        assert code in ("invalid_request", "out_of_bms_range", "out_of_safety_bounds")
        return
    raw = json.loads(payload)
    assert raw[request.name] == request.value
    writable = request.writable
    if writable.kind == "number":
        low, high = writable.safe_range
        assert low <= float(request.value) <= high
    else:
        assert isinstance(request.value, bool)
    assert passed[-1] == "fresh_data"
