"""Choosing adapters and characteristics from GetManagedObjects dicts shaped like BlueZ's."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bluez_jk.bluez.adapter import looks_like_jk, require_powered, resolve_adapter
from bluez_jk.bluez.errors import StaleCache
from bluez_jk.bluez.gatt import find_jk_chars, uuid16
from bluez_jk.errors import AdapterNotFound

DEV = "/org/bluez/hci0/dev_C8_47_80_37_02_E8"
S = "org.bluez.GattService1"
C = "org.bluez.GattCharacteristic1"


def service(path: str, uuid: int) -> dict[str, Any]:
    return {path: {S: {"UUID": uuid16(uuid), "Device": DEV, "Primary": True}}}


def char(path: str, svc: str, uuid: int, flags: list[str]) -> dict[str, Any]:
    return {path: {C: {"UUID": uuid16(uuid), "Service": svc, "Flags": flags}}}


def old_module() -> dict[str, Any]:
    objs: dict[str, Any] = {DEV: {"org.bluez.Device1": {}}}
    objs |= service(DEV + "/service000a", 0x180A)
    objs |= char(DEV + "/service000a/char000b", DEV + "/service000a", 0x2A24, ["read"])
    objs |= service(DEV + "/service0010", 0xFFE0)
    objs |= char(
        DEV + "/service0010/char0011",
        DEV + "/service0010",
        0xFFE1,
        ["write-without-response", "write", "notify"],
    )
    objs |= char(
        DEV + "/service0010/char0014", DEV + "/service0010", 0xFFE2, ["write-without-response"]
    )
    return objs


def test_old_module_uses_one_char_for_both_and_has_a_model_number() -> None:
    chars = find_jk_chars(old_module(), DEV)
    assert chars.notify == chars.write == DEV + "/service0010/char0011"
    assert chars.model_number == DEV + "/service000a/char000b"


def test_split_module_picks_by_flags() -> None:
    objs: dict[str, Any] = service(DEV + "/service0001", 0xFFE0)
    objs |= char(
        DEV + "/service0001/char0002",
        DEV + "/service0001",
        0xFFE1,
        ["write-without-response", "write"],
    )
    objs |= char(DEV + "/service0001/char0004", DEV + "/service0001", 0xFFE1, ["read", "notify"])
    chars = find_jk_chars(objs, DEV)
    assert chars.write == DEV + "/service0001/char0002"
    assert chars.notify == DEV + "/service0001/char0004"
    assert chars.model_number is None


def test_other_devices_chars_are_ignored_and_missing_ffe0_is_a_stale_cache() -> None:
    other = old_module()
    moved = {
        k.replace("dev_C8_47_80_37_02_E8", "dev_11_22_33_44_55_66"): v for k, v in other.items()
    }
    for ifaces in moved.values():
        if C in ifaces:
            ifaces[C]["Service"] = ifaces[C]["Service"].replace(
                "dev_C8_47_80_37_02_E8", "dev_11_22_33_44_55_66"
            )
    with pytest.raises(StaleCache) as info:
        find_jk_chars(moved, DEV)
    assert info.value.type == "ServicesNotResolved"


def adapters(*specs: tuple[str, bool]) -> dict[str, Any]:
    return {
        f"/org/bluez/{name}": {"org.bluez.Adapter1": {"Powered": powered, "Roles": ["central"]}}
        for name, powered in specs
    }


def test_adapter_choice() -> None:
    objs = adapters(("hci0", False), ("hci1", True))
    assert resolve_adapter(objs, None) == "/org/bluez/hci1"
    assert resolve_adapter(objs, "hci0") == "/org/bluez/hci0"
    with pytest.raises(AdapterNotFound, match="hci0, hci1"):
        resolve_adapter(objs, "hci5")
    with pytest.raises(AdapterNotFound):
        resolve_adapter({}, None)


def test_a_read_needs_a_powered_adapter() -> None:
    objs = adapters(("hci0", False), ("hci1", True))
    require_powered(objs, "/org/bluez/hci1")
    with pytest.raises(AdapterNotFound, match="hci0 is powered off"):
        require_powered(objs, "/org/bluez/hci0")


def test_jk_recognition() -> None:
    assert looks_like_jk({"UUIDs": [uuid16(0xFFE0)]})
    assert looks_like_jk({"ManufacturerData": {0x0B65: b"\x88\xa0"}})
    assert looks_like_jk({"ManufacturerData": {0x4B4A: b"\x00\x01"}})
    assert not looks_like_jk({"UUIDs": [uuid16(0x180F)], "ManufacturerData": {0x004C: b""}})


_uuids = st.sampled_from([uuid16(0xFFE0), uuid16(0xFFE1), uuid16(0x180A), uuid16(0x2A24), "x"])
_flags = st.lists(
    st.sampled_from(["read", "write", "write-without-response", "notify", "indicate"]),
    max_size=3,
)
_suffix = st.sampled_from(["/service0010", "/service0001", "/service000a"])


@given(
    st.lists(
        st.tuples(
            st.sampled_from([DEV, "/org/bluez/hci0/dev_11_22_33_44_55_66"]),
            _suffix,
            _uuids,
            st.integers(0, 0xFFFF),
            _uuids,
            _flags,
        ),
        max_size=8,
    )
)
def test_any_object_tree_gives_chars_of_this_device_or_stale_cache(
    rows: list[tuple[str, str, str, int, str, list[str]]],
) -> None:
    objs: dict[str, Any] = {}
    for dev, suffix, service_uuid, handle, char_uuid, flags in rows:
        svc = dev + suffix
        objs.setdefault(svc, {S: {"UUID": service_uuid, "Device": dev}})
        objs[f"{svc}/char{handle:04x}"] = {C: {"UUID": char_uuid, "Service": svc, "Flags": flags}}
    try:
        chars = find_jk_chars(objs, DEV)
    except StaleCache:
        return
    for path in (chars.notify, chars.write):
        assert path.startswith(DEV + "/")
        assert objs[path][C]["UUID"] == uuid16(0xFFE1)
    assert "notify" in chars.notify_flags or "indicate" in chars.notify_flags
