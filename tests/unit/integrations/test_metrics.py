"""The flat `metrics` payload: numbers only, stable keys, values from the real captures."""

from __future__ import annotations

import json
import math
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bluez_jk.gateway.metrics import cell_count, to_metrics
from bluez_jk.reading import new_reading
from tests.unit.integrations.readings import VECTOR_SETS, vector_reading, with_cell_info

KEY = re.compile(r"^[a-z][a-z0-9_]*$")


def assert_numbers_only(metrics: dict[str, Any]) -> None:
    for key, value in metrics.items():
        assert KEY.match(key), key
        assert type(value) in (int, float), (key, value)
        assert math.isfinite(value), key
    # Telegraf reads it as JSON: the round trip must be lossless and null-free.
    assert json.loads(json.dumps(metrics, allow_nan=False)) == metrics


@pytest.mark.parametrize("set_name", sorted(VECTOR_SETS))
def test_numbers_only_and_contract_keys(set_name: str) -> None:
    reading = vector_reading(set_name)
    metrics = to_metrics(reading)
    assert_numbers_only(metrics)
    assert metrics["ts"] == reading["status"]["last_update"]
    for key in ("total_voltage", "cell_v_01", "cell_v_min", "cell_v_max", "cell_v_delta"):
        assert key in metrics, key
    if reading["protocol"] != "JK04":
        for key in ("current", "power", "soc", "cell_r_01", "temp_1", "temp_mos", "cycles",
                    "error_bitmask"):  # fmt: skip
            assert key in metrics, key


def test_values_of_the_19_05_capture() -> None:
    reading = vector_reading("jk02_32s_v19_05")
    metrics = to_metrics(reading)
    voltages = reading["status"]["cell_info"]["voltages"]
    assert metrics["cell_count"] == 16
    assert [metrics[f"cell_v_{i:02d}"] for i in range(1, 17)] == voltages[:16]
    assert "cell_v_17" not in metrics
    assert metrics["cell_v_min"] == 3.313
    assert metrics["cell_v_max"] == 3.318
    assert metrics["cell_v_delta"] == 0.005
    assert metrics["cell_v_max_cell"] == 12  # the frame's 0-based index 11
    assert metrics["cell_v_min_cell"] == 16
    assert metrics["total_voltage"] == 53.059
    assert metrics["soc"] == 62
    assert metrics["soh"] == 100
    assert metrics["temp_1"] == 24.1
    assert metrics["temp_mos"] == 26.2
    assert metrics["charging"] == 1
    assert metrics["balancer_switch"] == 1
    assert metrics["cell_r_09"] == 0.098


def test_power_is_signed() -> None:
    metrics = to_metrics(vector_reading("jk02_32s_v19_27"))
    assert metrics["current"] == -0.727
    assert metrics["power"] == pytest.approx(-39.28, abs=0.01)
    assert metrics["discharging_power"] == pytest.approx(39.28, abs=0.01)
    assert metrics["charging_power"] == 0


def test_power_derived_when_the_decoder_gives_none() -> None:
    reading = vector_reading("jk02_32s_v11_48")
    reading["status"]["cell_info"].pop("power", None)
    assert to_metrics(reading)["power"] == round(26.509 * -7.063, 3)


def test_absent_probe_is_omitted_not_null() -> None:
    metrics = to_metrics(with_cell_info(vector_reading(), temperature_sensor_2=None))
    assert "temp_2" not in metrics
    assert "temp_1" in metrics


def test_jk04_pack_voltage_is_the_sum_of_cells() -> None:
    reading = vector_reading("jk04_v3_3_0")
    metrics = to_metrics(reading)
    assert metrics["total_voltage"] == pytest.approx(53.691, abs=0.002)
    assert metrics["balancing"] == 1
    assert "soc" not in metrics


def test_cell_count_sources() -> None:
    reading = vector_reading("jk02_32s_v11_48")  # no settings frame: the enabled mask says 8
    assert cell_count(reading) == 8
    reading["status"]["cell_info"].pop("enabled_cells_bitmask")
    assert cell_count(reading) == 8  # last non-zero voltage
    reading["status"]["settings"]["cell_count"] = 4
    assert cell_count(reading) == 4


def test_empty_reading_has_only_a_timestamp() -> None:
    metrics = to_metrics(new_reading("jk1", "C8:47:80:37:02:E8", None))
    assert set(metrics) == {"ts", "read_duration_s"}


_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**31), 2**32),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=5),
)


@settings(max_examples=200, deadline=None)
@given(
    cell_info=st.dictionaries(
        st.sampled_from(
            [
                "total_voltage",
                "current",
                "power",
                "battery_soc",
                "temperature_sensor_1",
                "temperature_mos",
                "error_bitmask",
                "charging_switch_enabled",
                "balancing_action",
                "cycle_count",
                "enabled_cells_bitmask",
            ]
        ),
        _values,
    ),
    voltages=st.lists(st.one_of(st.floats(0, 5), st.floats(1e307, 1.7e308), _values), max_size=32),
    cells=st.one_of(st.none(), st.integers(0, 40)),
)
def test_any_status_gives_numbers_only(
    cell_info: dict[str, Any], voltages: list[float], cells: int | None
) -> None:
    reading = new_reading("jk1", "C8:47:80:37:02:E8", None)
    reading["status"]["cell_info"] = {**cell_info, "voltages": voltages, "resistances": voltages}
    if cells is not None:
        reading["status"]["settings"]["cell_count"] = cells
    assert_numbers_only(to_metrics(reading))
