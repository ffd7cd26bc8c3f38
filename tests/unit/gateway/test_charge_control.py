"""The charge-control laws (charge_control.py) on tables of cases: derating, penalty and its
hysteresis, absorption -> float, ramps, stale data."""

from __future__ import annotations

import dataclasses

import pytest

from bluez_jk.gateway.charge_control import (
    ChargeController,
    ChargeSettings,
    Limits,
    interpolate,
)
from tests.unit.gateway.packs import pack_metrics, with_cell

DEFAULT = ChargeSettings()


def steady(metrics: dict[str, float], settings: ChargeSettings = DEFAULT) -> Limits:
    """The limits once any ramp has run its course."""
    controller = ChargeController(settings)
    controller.feed(metrics, 0.0)
    return controller.feed(metrics, 1000.0)


@pytest.mark.parametrize(
    ("x", "expected"),
    [(-5.0, 0.0), (0.0, 0.0), (1.0, 0.05), (2.0, 0.1), (3.5, 0.15), (37.5, 0.7), (60.0, 0.0)],
)
def test_interpolate_is_linear_between_points_and_flat_beyond(x: float, expected: float) -> None:
    assert interpolate(DEFAULT.charge_temperature_table, x) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("case", "metrics", "ccl", "charge_by"),
    [
        ("nothing limits", pack_metrics(), 100.0, "max"),
        ("a cell at 3.45 V", pack_metrics(with_cell(3.45)), 50.0, "cell_voltage"),
        ("a cell at 3.475 V", pack_metrics(with_cell(3.475)), 27.5, "cell_voltage"),
        ("a cell at 3.50 V", pack_metrics(with_cell(3.50)), 5.0, "cell_voltage"),
        ("a cell beyond the table", pack_metrics(with_cell(3.62)), 0.0, "cell_voltage"),
        ("cold 10 C", pack_metrics(temps=(10.0, 25.0)), 40.0, "temperature"),
        ("hot 37.5 C", pack_metrics(temps=(37.5,)), 70.0, "temperature"),
        ("freezing", pack_metrics(temps=(-5.0,)), 0.0, "temperature"),
        ("SOC 95 %", pack_metrics(soc=95), 75.0, "soc"),
        ("SOC 100 %", pack_metrics(soc=100), 10.0, "soc"),
        ("smallest factor wins", pack_metrics(with_cell(3.45), soc=99, temps=(12.5,)), 20.0, "soc"),
        ("BMS charging off", pack_metrics(charging=0), 0.0, "bms"),
    ],
)
def test_charge_current_limit(
    case: str, metrics: dict[str, float], ccl: float, charge_by: str
) -> None:
    limits = steady(metrics)
    assert (limits.ccl_a, limits.charge_limited_by) == (pytest.approx(ccl), charge_by), case
    assert limits.allow_charge == (ccl > 0), case


@pytest.mark.parametrize(
    ("case", "metrics", "dcl", "discharge_by"),
    [
        ("nothing limits", pack_metrics(), 100.0, "max"),
        ("a cell at 2.85 V", pack_metrics(with_cell(2.85)), 30.0, "cell_voltage"),
        ("a cell at 2.70 V", pack_metrics(with_cell(2.70)), 0.0, "cell_voltage"),
        ("-10 C", pack_metrics(temps=(-10.0,)), 10.0, "temperature"),
        ("50 C", pack_metrics(temps=(50.0,)), 50.0, "temperature"),
        ("SOC 15 %", pack_metrics(soc=15), 25.0, "soc"),
        ("SOC 5 %", pack_metrics(soc=5), 10.0, "soc"),
        ("BMS discharging off", pack_metrics(discharging=0), 0.0, "bms"),
    ],
)
def test_discharge_current_limit(
    case: str, metrics: dict[str, float], dcl: float, discharge_by: str
) -> None:
    limits = steady(metrics)
    assert (limits.dcl_a, limits.discharge_limited_by) == (pytest.approx(dcl), discharge_by)
    assert limits.allow_discharge == (dcl > 0), case


def test_configured_maxima_scale_the_limits() -> None:
    settings = dataclasses.replace(DEFAULT, max_charge_current_a=60, max_discharge_current_a=80)
    limits = steady(pack_metrics(with_cell(3.45), soc=15), settings)
    assert (limits.ccl_a, limits.dcl_a) == (30.0, 20.0)


# (time s, highest cell V, expected CVL for 16 cells, expected penalty V). Limit 3.55 V,
# hysteresis 0.05 V: the penalty is held until the cell is below 3.50 V.
PENALTY_STEPS = [
    (0, 3.40, 55.2, 0.0),
    (10, 3.56, 55.19, 0.01),  # over the limit: lowered by the overshoot
    (20, 3.70, 55.05, 0.15),  # further over: lowered further
    (30, 3.56, 55.05, 0.15),  # back down but still over: held, not given back
    (40, 3.52, 55.05, 0.15),  # below the limit, inside the hysteresis: still held
    (50, 3.51, 55.05, 0.15),
    (60, 3.49, 55.2, 0.0),  # below limit - hysteresis: released
    (70, 3.53, 55.2, 0.0),  # inside the band from below: no penalty
]


def test_cvl_penalty_is_held_until_the_cell_is_below_the_hysteresis() -> None:
    controller = ChargeController(DEFAULT)
    for t, cell, cvl, penalty in PENALTY_STEPS:
        limits = controller.feed(pack_metrics(with_cell(cell)), float(t))
        assert (limits.cvl_v, limits.penalty_v) == (pytest.approx(cvl), pytest.approx(penalty)), t


@pytest.mark.parametrize(
    ("cells", "penalty_max_v", "penalty"),
    [
        (with_cell(3.60), 2.0, 0.05),
        ([3.60, 3.65, *[3.3] * 14], 2.0, 0.15),  # every cell over the limit counts
        ([4.0, 4.0, *[3.3] * 14], 0.5, 0.5),  # bounded by penalty_max_v
    ],
)
def test_penalty_sums_the_overshoots_and_is_bounded(
    cells: list[float], penalty_max_v: float, penalty: float
) -> None:
    settings = dataclasses.replace(DEFAULT, penalty_max_v=penalty_max_v)
    limits = ChargeController(settings).feed(pack_metrics(cells), 0.0)
    assert limits.penalty_v == pytest.approx(penalty)
    assert limits.cvl_v == pytest.approx(16 * 3.45 - penalty)


def at_target(delta: float = 0.005, soc: float = 99) -> dict[str, float]:
    cells = [3.45] * 16
    cells[0] = round(3.45 - delta, 3)
    return pack_metrics(cells, soc=soc, total_voltage=55.2)


# (time s, metrics, expected mode, expected CVL). Absorption 900 s at a delta <= 15 mV.
FLOAT_STEPS = [
    (0, pack_metrics(soc=80), "bulk", 55.2),
    (10, at_target(), "absorption", 55.2),  # reaches the target: the clock starts
    (500, at_target(), "absorption", 55.2),  # 490 s counted
    (600, at_target(delta=0.05), "absorption", 55.2),  # unbalanced: this 100 s do not count
    (1000, at_target(), "absorption", 55.2),  # 890 s
    (1010, at_target(), "float", 54.0),  # 900 s: float, 16 x 3.375 V
    (2000, pack_metrics(soc=95), "float", 54.0),  # float holds above the re-bulk SOC
    (3000, pack_metrics(soc=89), "bulk", 55.2),  # below 90 %: back to bulk
]


def test_absorption_then_float_then_rebulk() -> None:
    controller = ChargeController(DEFAULT)
    for t, metrics, mode, cvl in FLOAT_STEPS:
        limits = controller.feed(metrics, float(t))
        assert (limits.mode, limits.cvl_v) == (mode, pytest.approx(cvl)), t


def test_leaving_the_target_voltage_restarts_the_absorption_time() -> None:
    controller = ChargeController(DEFAULT)
    controller.feed(at_target(), 0.0)
    controller.feed(at_target(), 800.0)
    assert controller.feed(pack_metrics(soc=97), 810.0).mode == "bulk"
    controller.feed(at_target(), 820.0)
    assert controller.feed(at_target(), 1500.0).mode == "absorption"  # 680 s, not 1480


# (time s, highest cell V, expected CCL). 1 A/s ramp; a lower limit applies at once.
RAMP_STEPS = [
    (0, 3.30, 0.0),  # the very first value starts from zero (a soft start)
    (30, 3.30, 30.0),
    (200, 3.30, 100.0),
    (210, 3.50, 5.0),  # a cell near full: down at once
    (220, 3.30, 15.0),  # the limit cleared: 10 s x 1 A/s, not a jump to 100
    (240, 3.30, 35.0),
    (245, 3.475, 27.5),  # a new, lower limit: at once
    (400, 3.30, 100.0),
]


def test_limits_ramp_up_and_drop_at_once() -> None:
    controller = ChargeController(DEFAULT)
    for t, cell, ccl in RAMP_STEPS:
        limits = controller.feed(pack_metrics(with_cell(cell)), float(t))
        assert limits.ccl_a == pytest.approx(ccl), t


# (time s, fed?, expected mode, CCL, DCL, allow charge/discharge). Grace 60 s.
STALE_STEPS = [
    (0, True, "bulk", 0.0, 0.0, False, False),
    (200, True, "bulk", 100.0, 100.0, True, True),
    (259, False, "bulk", 100.0, 100.0, True, True),  # 59 s old: still within the grace
    (261, False, "stale", 0.0, 0.0, False, False),  # 61 s: blocked
    (400, False, "stale", 0.0, 0.0, False, False),
    (410, True, "bulk", 10.0, 10.0, True, True),  # data again: ramps up from zero
    (430, True, "bulk", 30.0, 30.0, True, True),
]


def test_stale_data_blocks_after_the_grace() -> None:
    controller = ChargeController(DEFAULT)
    for t, fed, mode, ccl, dcl, charge, discharge in STALE_STEPS:
        now = float(t)
        limits = controller.feed(pack_metrics(), now) if fed else controller.tick(now)
        got = (limits.mode, limits.ccl_a, limits.dcl_a, limits.allow_charge, limits.allow_discharge)
        assert got == (mode, ccl, dcl, charge, discharge), t


def test_no_data_yet_blocks_and_has_no_voltage() -> None:
    limits = ChargeController(DEFAULT).tick(5.0)
    assert (limits.mode, limits.cvl_v, limits.ccl_a, limits.dcl_a) == ("no_data", None, 0, 0)
    assert not limits.allow_charge
    assert not limits.allow_discharge


def test_ticks_between_reads_do_not_shorten_the_absorption_time() -> None:
    controller = ChargeController(DEFAULT)
    controller.feed(at_target(), 0.0)
    for t in range(10, 1000, 10):
        controller.tick(t - 5.0)  # a bank or the repeat timer looks in between reads
        limits = controller.feed(at_target(), float(t))
    assert limits.mode == "float"


def test_the_ramp_is_named_while_it_limits() -> None:
    controller = ChargeController(DEFAULT)
    controller.feed(pack_metrics(), 0.0)
    limits = controller.feed(pack_metrics(), 30.0)
    assert (limits.ccl_a, limits.charge_limited_by) == (30.0, "ramp")
    limits = controller.feed(pack_metrics(), 200.0)
    assert (limits.ccl_a, limits.charge_limited_by) == (100.0, "max")
