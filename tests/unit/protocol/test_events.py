"""Logbook event names (docs/protocol.md appendix B)."""

from __future__ import annotations

from bluez_jk.protocol.events import EVENT_NAMES, event_name
from tests.conftest import load_vector


def test_the_captured_logbook_names_its_events() -> None:
    stated = load_vector("jk02_32s_v19_27_logbook.json")["expected"]["stated_by_source"]
    names = [event_name(e["code"]) for e in stated["entries"]]
    assert names == ["boot", "factory_preset_lfp", "charge_undertemp", "charge_undertemp_released"]


def test_every_listed_code_has_one_name_of_its_own() -> None:
    listed = {*range(0x01, 0x4A), *range(0x64, 0x64 + 32), *range(0xC8, 0xC8 + 32)}
    assert set(EVENT_NAMES) == listed
    assert len(set(EVENT_NAMES.values())) == len(EVENT_NAMES)
    assert event_name(0x64) == "cell_01_overcharge"
    assert event_name(0xC8 + 31) == "cell_32_overdischarge"
    assert event_name(0) is None
    assert event_name(0x4A) is None
