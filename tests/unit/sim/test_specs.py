"""Fault and device specifications given on the command line or over the control interface."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bluez_jk.sim.devices import parse_device
from bluez_jk.sim.faults import FAULT_NAMES, FaultSet, parse_fault


def test_fault_forms() -> None:
    assert parse_fault("junk").describe() == "junk"
    assert parse_fault("in-progress:3").describe() == "in-progress:3"
    assert parse_fault("slow@c8:47:80:37:02:e8").describe() == "slow@C8:47:80:37:02:E8"
    assert parse_fault("bad-crc:2@C8:47:80:37:02:E8").count == 2


@pytest.mark.parametrize("text", ["", "nope", "junk:0", "junk:-1", "junk@C8:47", "junk:x", "JUNK"])
def test_bad_faults_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        parse_fault(text)


@given(st.text(max_size=40))
def test_fault_parser_only_raises_value_error(text: str) -> None:
    try:
        fault = parse_fault(text)
    except ValueError:
        return
    assert fault.name in FAULT_NAMES


def test_counted_fault_clears_and_targeted_wins() -> None:
    faults = FaultSet(
        [parse_fault("in-progress:2"), parse_fault("in-progress:1@C8:47:80:37:02:E8")]
    )
    assert faults.fire("in-progress", "C8:47:80:37:02:E8")  # the targeted one, now used up
    assert faults.describe() == ["in-progress:2"]
    assert faults.fire("in-progress", "C8:47:80:00:00:01")
    assert faults.fire("in-progress", "C8:47:80:00:00:01")
    assert not faults.active("in-progress", "C8:47:80:00:00:01")


def test_device_options() -> None:
    spec = parse_device(
        "c8-47-80-11-22-33,adapter=hci2,protocol=JK02_24S,name=JK-B,cells=8,sw=11.1"
    )
    assert spec.address == "C8:47:80:11:22:33"
    assert (spec.adapter, spec.protocol, spec.name, spec.cells) == ("hci2", "JK02_24S", "JK-B", 8)
    assert spec.profile.sw_rev == "11.1"
    assert not spec.profile.repeat_device_info
    assert parse_device("C8:47:80:11:22:33,sw=15.41").profile.repeat_device_info


@pytest.mark.parametrize(
    "text",
    [
        "C8:47:80:11:22",
        "C8:47:80:11:22:33,adapter=usb0",
        "C8:47:80:11:22:33,protocol=JK05",
        "C8:47:80:11:22:33,cells=33",
        "C8:47:80:11:22:33,layout=odd",
        "C8:47:80:11:22:33,colour=red",
        "C8:47:80:11:22:33,cells",
    ],
)
def test_bad_devices_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        parse_device(text)


def test_pairing_option() -> None:
    assert parse_device("C8:47:80:11:22:33").pairing == "none"
    assert parse_device("C8:47:80:11:22:33,pairing=justworks").pairing == "justworks"
    assert parse_device("C8:47:80:11:22:33,pairing=rejects").passkey is None
    spec = parse_device("C8:47:80:11:22:33,pairing=passkey:012345")
    assert (spec.pairing, spec.passkey) == ("passkey", 12345)
    assert "012345" not in repr(spec)
    assert "12345" not in repr(spec)


@pytest.mark.parametrize(
    "value",
    ["passkey", "passkey:12345", "passkey:1234567", "passkey:12345a", "justworks:123456", "pin"],
)
def test_bad_pairing_is_refused_without_echoing_it(value: str) -> None:
    with pytest.raises(ValueError, match="pairing") as err:
        parse_device(f"C8:47:80:11:22:33,pairing={value}")
    digits = value.partition(":")[2]
    assert not digits or digits not in str(err.value)
