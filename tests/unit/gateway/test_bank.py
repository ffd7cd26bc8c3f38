"""Banks of parallel packs (bank.py): capacity-weighted SOC, sums, extremes with their pack,
members left out of the CCL/DCL (switched off, stale) and named."""

from __future__ import annotations

import json

import pytest

from bluez_jk.gateway.bank import Member, aggregate, weighted
from bluez_jk.gateway.charge_control import ChargeController, ChargeSettings
from bluez_jk.gateway.discovery import bank_discovery_configs
from tests.unit.gateway.packs import pack_metrics, with_cell

SETTINGS = ChargeSettings()


def member(name: str, metrics: dict[str, float] | None, *, age_s: float = 0.0) -> Member:
    """A member whose limits have settled (ramps done), seen `age_s` after its last read."""
    controller = ChargeController(SETTINGS)
    if metrics is not None:
        controller.feed(metrics, 0.0)
        controller.feed(metrics, 1000.0)
    limits = controller.tick(1000.0 + age_s)
    online = metrics is not None and age_s <= SETTINGS.stale_grace_s
    return Member(name, metrics, online, limits)


# (case, [(soc, capacity Ah or None)], expected bank SOC)
SOC_CASES: list[tuple[str, list[tuple[float, float | None]], float]] = [
    ("equal packs", [(40, 280), (60, 280)], 50.0),
    ("a big pack weighs more", [(20, 100), (80, 300)], 65.0),
    ("three packs", [(50, 100), (70, 200), (90, 100)], 70.0),
    ("one pack", [(33, 280)], 33.0),
    ("an unknown capacity: plain mean", [(20, 100), (80, None)], 50.0),
    ("a zero capacity: plain mean", [(20, 0), (80, 300)], 50.0),
]


@pytest.mark.parametrize(("case", "packs", "soc"), SOC_CASES)
def test_weighted_soc(case: str, packs: list[tuple[float, float | None]], soc: float) -> None:
    assert weighted(packs) == pytest.approx(soc), case


@pytest.mark.parametrize(
    ("case", "packs", "soc"), [c for c in SOC_CASES if all(cap for _, cap in c[1])]
)
def test_bank_soc_is_capacity_weighted(
    case: str, packs: list[tuple[float, float | None]], soc: float
) -> None:
    members = [
        member(f"jk{i}", pack_metrics(soc=s, capacity=float(cap or 0)))
        for i, (s, cap) in enumerate(packs, start=1)
    ]
    assert aggregate("bank1", members).metrics["soc"] == pytest.approx(soc), case


def three_packs(discharging_off: str | None = None) -> list[Member]:
    return [
        member(
            name,
            pack_metrics(
                cells,
                soc=soc,
                current=current,
                capacity=cap,
                temps=temps,
                discharging=0 if name == discharging_off else 1,
            ),
        )
        for name, cells, soc, current, cap, temps in (
            ("jk1", with_cell(3.312, index=3), 60, -10.0, 280.0, (26.0, 24.0)),
            ("jk2", with_cell(3.281, index=7), 55, -6.5, 280.0, (23.0,)),
            ("jk3", with_cell(3.30, index=1), 60, -4.0, 280.0, (22.0, 21.5)),
        )
    ]


def test_sums_and_extremes_name_their_pack() -> None:
    view = aggregate("bank1", three_packs())
    m = view.metrics
    assert m["current"] == pytest.approx(-20.5)
    assert m["capacity_nominal"] == 840.0
    assert m["capacity_remain"] == pytest.approx(168 + 154 + 168)
    assert m["soc"] == pytest.approx(58.3)
    assert (m["cell_v_min"], m["cell_v_min_member"], m["cell_v_min_cell"]) == (3.281, 2, 7)
    assert (m["cell_v_max"], m["cell_v_max_member"], m["cell_v_max_cell"]) == (3.312, 1, 3)
    assert m["cell_v_delta"] == pytest.approx(0.031)
    assert (m["temp_min"], m["temp_min_member"], m["temp_max"], m["temp_max_member"]) == (
        21.5,
        3,
        26.0,
        1,
    )
    assert view.status["min_cell"] == {"member": "jk2", "cell": 7, "voltage": 3.281}
    assert view.status["max_temperature"] == {"member": "jk1", "probe": "T1", "value": 26.0}
    assert view.extremes.min_cell == "jk2:C7"
    assert view.online
    assert view.status["excluded_from_charge"] == {}
    assert view.status["excluded_from_discharge"] == {}


def test_a_pack_with_discharging_off_is_left_out_of_the_dcl_and_named() -> None:
    everyone = aggregate("bank1", three_packs())
    view = aggregate("bank1", three_packs(discharging_off="jk3"))
    per_pack = everyone.limits.dcl_a / 3
    assert view.limits.dcl_a == pytest.approx(2 * per_pack)
    assert view.limits.ccl_a == pytest.approx(everyone.limits.ccl_a)  # it can still charge
    assert view.status["excluded_from_discharge"] == {"jk3": "discharging off"}
    assert view.status["excluded_from_charge"] == {}
    assert view.limits.discharge_limited_by == "without jk3"
    assert (view.metrics["members_discharging"], view.metrics["members_charging"]) == (2, 3)
    assert view.modules.blocking_discharge == 1
    assert view.online  # switched off is not offline


def test_a_stale_member_counts_for_nothing_and_its_numbers_are_left_out() -> None:
    packs = three_packs()
    stale = member("jk2", packs[1].metrics, age_s=SETTINGS.stale_grace_s + 1)
    view = aggregate("bank1", [packs[0], stale, packs[2]])
    assert view.status["stale"] == ["jk2"]
    assert view.status["excluded_from_charge"] == {"jk2": "stale"}
    assert view.status["excluded_from_discharge"] == {"jk2": "stale"}
    assert view.metrics["current"] == pytest.approx(-14.0)  # jk2's -6.5 A is old news
    assert view.metrics["capacity_nominal"] == 560.0
    assert view.metrics["cell_v_min"] == 3.30  # jk2's 3.281 V is not shown as current
    assert view.metrics["members_fresh"] == 2
    assert view.modules.online == 2
    assert view.modules.offline == 1
    assert not view.online
    everyone = aggregate("bank1", packs)
    assert view.limits.dcl_a == pytest.approx(everyone.limits.dcl_a * 2 / 3)


def test_a_member_within_its_grace_still_counts() -> None:
    packs = three_packs()
    late = member("jk2", packs[1].metrics, age_s=SETTINGS.stale_grace_s - 1)
    view = aggregate("bank1", [packs[0], late, packs[2]])
    assert view.status["stale"] == []
    assert view.metrics["members_fresh"] == 3


def test_every_member_stale_blocks_the_bank_and_publishes_no_numbers() -> None:
    packs = three_packs()
    stale = [member(p.name, p.metrics, age_s=999) for p in packs]
    view = aggregate("bank1", stale)
    assert (view.limits.ccl_a, view.limits.dcl_a, view.limits.mode) == (0.0, 0.0, "stale")
    assert not view.limits.allow_charge
    assert not view.limits.allow_discharge
    assert "current" not in view.metrics
    assert "soc" not in view.metrics
    assert view.metrics["members_fresh"] == 0


def test_no_data_yet() -> None:
    view = aggregate("bank1", [member("jk1", None), member("jk2", None)])
    assert view.limits.mode == "no_data"
    assert not view.online


def test_the_cvl_is_the_lowest_of_the_packs_that_charge() -> None:
    packs = three_packs()
    high = member("jk1", pack_metrics(with_cell(3.65)))  # 0.10 V over the limit
    view = aggregate("bank1", [high, packs[1], packs[2]])
    assert view.limits.cvl_v == pytest.approx(55.2 - 0.10)
    off = member("jk1", pack_metrics(with_cell(3.65), charging=0))
    view = aggregate("bank1", [off, packs[1], packs[2]])
    assert view.limits.cvl_v == pytest.approx(55.2)  # a pack that cannot charge does not count
    assert view.status["excluded_from_charge"] == {"jk1": "charging off"}


def test_bank_discovery_has_an_entity_per_metrics_key_and_the_banks_availability() -> None:
    view = aggregate("bank1", three_packs(discharging_off="jk3"))
    configs = bank_discovery_configs(
        "bank1",
        view.metrics,
        members=("jk1", "jk2", "jk3"),
        base_topic="bms",
        prefix="homeassistant",
        node_id="pi",
    )
    by_object = {topic.split("/")[3]: json.loads(payload) for topic, payload in configs.items()}
    for wanted in ("bank1_state_of_charge", "bank1_discharge_current_limit", "bank1_current"):
        assert wanted in by_object
    dcl = by_object["bank1_discharge_current_limit"]
    assert dcl["state_topic"] == "bms/jk/bank1/metrics"
    assert dcl["value_template"] == "{{ value_json.dcl }}"
    assert dcl["availability"][0]["topic"] == "bms/jk/bank1/online"
    assert dcl["device"]["identifiers"] == ["bluez_jk_bank_pi_bank1"]
    assert "bank1_mosfet_temperature" not in by_object  # no such bank metric
