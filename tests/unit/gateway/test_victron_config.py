"""The `victron` and `banks` config sections: defaults, per-device overrides, clear errors."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bluez_jk.gateway.config import ConfigProblems, parse_config

MACS = ["C8:47:80:37:02:E8", "C8:47:80:37:02:E9", "C8:47:80:37:02:EA"]


def config(**extra: Any) -> dict[str, Any]:
    devices = [{"name": f"jk{i}", "address": mac} for i, mac in enumerate(MACS, start=1)]
    return {"devices": devices, **extra}


def problems(raw: dict[str, Any]) -> list[tuple[str | None, str]]:
    with pytest.raises(ConfigProblems) as err:
        parse_config(raw)
    return [(p.key, p.message) for p in err.value.problems]


def test_off_by_default() -> None:
    parsed = parse_config(config())
    assert not any(d.victron.enabled for d in parsed.devices)
    assert parsed.banks == ()


def test_a_device_replaces_the_global_settings_key_by_key() -> None:
    raw = config(victron={"enabled": True, "max_charge_current_a": 80, "stale_grace_s": 30})
    raw["devices"][1]["victron"] = {"max_charge_current_a": 50, "enabled": False}
    raw["devices"][2]["victron"] = {"charge_soc_table": [[90, 1], [100, 0.2]]}
    jk1, jk2, jk3 = parse_config(raw).devices
    assert (jk1.victron.enabled, jk1.victron.settings.max_charge_current_a) == (True, 80)
    assert (jk2.victron.enabled, jk2.victron.settings.max_charge_current_a) == (False, 50)
    assert jk2.victron.settings.stale_grace_s == 30
    assert jk3.victron.settings.charge_soc_table == ((90.0, 1.0), (100.0, 0.2))
    assert "victron" not in jk1.runtime_view()  # meta stays small


def test_banks() -> None:
    raw = config(banks=[{"name": "bank1", "members": ["jk1", "jk2"], "victron": {"enabled": True}}])
    (bank,) = parse_config(raw).banks
    assert (bank.name, bank.members, bank.victron) == ("bank1", ("jk1", "jk2"), True)


@pytest.mark.parametrize(
    ("victron", "key", "words"),
    [
        ({"enabled": "yes"}, "victron.enabled", "true or false"),
        ({"max_charge_current_a": -1}, "victron.max_charge_current_a", "between 0 and 10000"),
        ({"stale_grace_s": True}, "victron.stale_grace_s", "finite number"),
        ({"ramp_a_per_s": float("inf")}, "victron.ramp_a_per_s", "finite number"),
        ({"charge_soc_table": []}, "victron.charge_soc_table", "[x, fraction] pairs"),
        ({"charge_soc_table": [[90, 1], [80, 0.5]]}, "victron.charge_soc_table[1]", "larger"),
        ({"charge_soc_table": [[90, 1.5]]}, "victron.charge_soc_table[0]", "fraction 0 to 1"),
        ({"charge_soc_table": [[90]]}, "victron.charge_soc_table[0]", "two numbers"),
        ({"cell_voltage_float_v": 3.5}, "victron.cell_voltage_float_v", "at most"),
        ({"cell_voltage_limit_v": 3.4}, "victron.cell_voltage_limit_v", "at least"),
        ({"cvl": 55}, "victron.cvl", "unknown key"),
        ({"stale_grace_s": 10**400}, "victron.stale_grace_s", "an integer of 401 digits"),
        ({"charge_soc_table": [[10**400, 1]]}, "victron.charge_soc_table[0]", "x must be"),
    ],
)
def test_bad_victron_settings_are_named(victron: dict[str, Any], key: str, words: str) -> None:
    found = problems(config(victron=victron))
    assert any(k == key and words in message for k, message in found), found


@pytest.mark.parametrize(
    ("banks", "key", "words"),
    [
        ({"name": "b"}, "banks", "array"),
        ([{"members": ["jk1"]}], "banks[0].name", "required"),
        ([{"name": "jk1", "members": ["jk2"]}], "banks[0].name", "already a device"),
        ([{"name": "b", "members": []}], "banks[0].members", "non-empty"),
        ([{"name": "b", "members": ["jk9"]}], "banks[0].members", "not a device"),
        ([{"name": "b", "members": ["jk1", "jk1"]}], "banks[0].members", "twice"),
        (
            [{"name": "a", "members": ["jk1"]}, {"name": "b", "members": ["jk1"]}],
            "banks[1].members",
            "already in bank 'a'",
        ),
        (
            [{"name": "a", "members": ["jk1"]}, {"name": "a", "members": ["jk2"]}],
            "banks[1].name",
            "already a device or bank",
        ),
        ([{"name": "b", "members": ["jk1"], "victron": {"x": 1}}], "banks[0].victron.x", "unknown"),
        ([{"name": "b/c", "members": ["jk1"]}], "banks[0].name", "must be 1 to 32"),
    ],
)
def test_bad_banks_are_named(banks: Any, key: str, words: str) -> None:
    found = problems(config(banks=banks))
    assert any(k == key and words in message for k, message in found), found


def test_the_readme_example_is_a_valid_config() -> None:
    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Victron Venus OS and banks", 1)[1]
    block = re.search(r"```json\n(.*?)```", section, re.DOTALL)
    assert block is not None
    parsed = parse_config(json.loads(block.group(1)))
    jk1, _, jk3 = parsed.devices
    assert not jk1.victron.enabled
    assert jk3.victron.enabled
    assert jk3.victron.settings.temperature_probes == (1, 2)
    assert parsed.banks[0].victron


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
VICTRON_KEY = st.sampled_from(
    ["enabled", "max_charge_current_a", "stale_grace_s", "charge_soc_table",
     "temperature_probes", "cell_voltage_float_v", "x"]
)  # fmt: skip
TABLE = st.lists(st.lists(st.floats() | st.integers(-300, 300), max_size=3), max_size=4)


@settings(max_examples=200)
@given(
    st.dictionaries(VICTRON_KEY, JSONISH | TABLE, max_size=4),
    st.lists(st.dictionaries(st.sampled_from(["name", "members", "victron"]), JSONISH), max_size=3),
)
def test_victron_and_banks_parse_or_name_the_key(victron: dict[str, Any], banks: Any) -> None:
    """Any value is a config or problems that each name a key path, never a crash."""
    error: ConfigProblems | None = None
    try:
        parse_config(config(victron=victron, banks=banks))
    except ConfigProblems as err:
        error = err
    if error is not None:
        assert error.problems
        assert all(p.key for p in error.problems)
