"""The exact key set of the `metrics` payload for every captured vector set. The keys are a
public schema (gateway/metrics.py: Grafana panels, Home Assistant templates and the Node-RED flow
name them), so a lost or renamed key must fail here; an added one is a deliberate change to this
list. Cell-indexed keys are pinned as a family and a count: `cell_v_NN: 16` is cell_v_01 to
cell_v_16, no gaps."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from bluez_jk.gateway.metrics import to_metrics
from tests.unit.integrations.readings import VECTOR_SETS, vector_reading

_INDEXED = re.compile(r"_(\d{2})$")

# In every payload (a JK04 has nothing more).
COMMON = frozenset(
    {
        "balancing",
        "balancing_action",
        "balancing_current",
        "cell_count",
        "cell_v_avg",
        "cell_v_delta",
        "cell_v_max",
        "cell_v_max_cell",
        "cell_v_min",
        "cell_v_min_cell",
        "power_on_count",
        "read_duration_s",
        "total_runtime",
        "total_voltage",
        "ts",
        "uptime",
    }
)

# The JK02 cell-info frame's fields.
JK02 = frozenset(
    {
        "capacity_nominal",
        "capacity_remain",
        "charging",
        "charging_power",
        "current",
        "cycle_capacity",
        "cycles",
        "discharging",
        "discharging_power",
        "emergency_time_countdown",
        "error_bitmask",
        "heating",
        "heating_current",
        "power",
        "soc",
        "soh",
        "temp_1",
        "temp_2",
        "temp_mos",
        "wire_resistance_warning_bitmask",
    }
)

# What JK02_32S adds to the JK02_24S cell-info frame.
JK02_32S = frozenset(
    {
        "battery_type_id",
        "charge_status_id",
        "precharging",
        "temp_3",
        "temp_4",
        "temp_5",
    }
)

# From the settings frame, where one was captured.
SETTINGS = frozenset(
    {
        "balancer_switch",
        "charging_switch",
        "discharging_switch",
        "nominal_capacity",
    }
)

# Per vector set: the fixed keys and {indexed family: count}.
METRICS_KEYS: dict[str, tuple[frozenset[str], dict[str, int]]] = {
    "jk02_24s_v10_07": (COMMON | JK02 | SETTINGS, {"cell_r_NN": 24, "cell_v_NN": 24}),
    "jk02_32s_v11_48": (COMMON | JK02 | JK02_32S, {"cell_r_NN": 8, "cell_v_NN": 8}),
    "jk02_32s_v19_05": (COMMON | JK02 | JK02_32S | SETTINGS, {"cell_r_NN": 16, "cell_v_NN": 16}),
    "jk02_32s_v19_27": (COMMON | JK02 | JK02_32S | SETTINGS, {"cell_r_NN": 16, "cell_v_NN": 16}),
    "jk04_v3_3_0": (COMMON, {"cell_r_NN": 16, "cell_v_NN": 16}),
}


def _shape(keys: set[str]) -> tuple[frozenset[str], dict[str, int]]:
    fixed = frozenset(k for k in keys if not _INDEXED.search(k))
    families = Counter(_INDEXED.sub("_NN", k) for k in keys if _INDEXED.search(k))
    for family, count in families.items():
        numbers = sorted(
            int(_INDEXED.search(k)[1]) for k in keys if _INDEXED.sub("_NN", k) == family
        )  # type: ignore[index]
        assert numbers == list(range(1, count + 1)), (family, numbers)
    return fixed, dict(families)


def test_every_vector_set_is_pinned() -> None:
    assert set(METRICS_KEYS) == set(VECTOR_SETS)


@pytest.mark.parametrize("vectors", sorted(VECTOR_SETS))
def test_metrics_keys_are_exactly_the_pinned_ones(vectors: str) -> None:
    fixed, families = _shape(set(to_metrics(vector_reading(vectors))))
    pinned, pinned_families = METRICS_KEYS[vectors]
    assert sorted(fixed - pinned) == [], "keys not pinned (new or renamed)"
    assert sorted(pinned - fixed) == [], "pinned keys missing (lost or renamed)"
    assert families == pinned_families
