from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bluez_jk.bluez.paths import device_path, normalize_mac, validate_adapter
from bluez_jk.errors import ConfigError

octets = st.lists(st.integers(0, 255), min_size=6, max_size=6)


@given(octets, st.sampled_from([":", "-", "_"]), st.booleans())
def test_any_spelling_of_a_mac_normalises(parts: list[int], sep: str, lower: bool) -> None:
    text = sep.join(f"{p:02x}" if lower else f"{p:02X}" for p in parts)
    mac = normalize_mac(text)
    assert mac == ":".join(f"{p:02X}" for p in parts)
    assert device_path("/org/bluez/hci0", mac).endswith(mac.replace(":", "_"))


@given(st.text(max_size=40))
def test_anything_else_is_a_config_error_never_a_crash(text: str) -> None:
    mac: str | None = None
    key: str | None = None
    try:
        mac = normalize_mac(text)
    except ConfigError as err:
        key = err.key
    assert key == "address" if mac is None else len(mac) == 17


@pytest.mark.parametrize(
    "bad",
    [
        "C8:47:80:37:02",
        "C8:47:80:37:02:E8:00",
        "C8:47:80:37:02:G8",
        "C847803702E8",
        "",
        "c8:47:80:37:02:e8\n00",
    ],
)
def test_malformed(bad: str) -> None:
    with pytest.raises(ConfigError):
        normalize_mac(bad)


def test_adapter_names() -> None:
    assert validate_adapter(None) is None
    assert validate_adapter("") is None
    assert validate_adapter("hci1") == "hci1"
    for bad in ("hci", "bt0", "hci0 ", "/org/bluez/hci0", "hci1234"):
        with pytest.raises(ConfigError):
            validate_adapter(bad)
