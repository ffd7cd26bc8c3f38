"""The capture files of tests/data as test parameters, and how their expectations compare."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import DATA, load_vector

FRAME_FILES = sorted(p.name for p in Path(DATA).glob("*.json") if "hex" in load_vector(p.name))

# Capture-file names for values docs/protocol.md 5.2 names differently.
RENAMES = {
    "temperature_254": "temperature_sensor_3",
    "temperature_256": "temperature_sensor_4",
    "temperature_258": "temperature_sensor_5",
    "total_voltage_sum_of_cells": "total_voltage",
}
# The frame's own unsigned power field is deliberately not decoded (power = V x I instead).
NOT_DECODED = {"power_unsigned_field"}


def check_values(got: dict[str, Any], expected: dict[str, Any]) -> None:
    """Every expected field is there with its value; derived annotations are checked too."""
    for key, want in expected.items():
        if key in NOT_DECODED:
            continue
        if key == "error_bitmask_16":
            assert hex(got["error_bitmask"] & 0xFFFF) == want
            continue
        if key == "warnings_set":
            continue  # checked through StreamDecoder.status["warnings"]
        name = RENAMES.get(key, key)
        assert name in got, f"{name} missing"
        if key == "power":
            # The capture files round power to 0.01 W.
            assert got[name] == pytest.approx(want, abs=0.006), name
        elif isinstance(want, float):
            assert got[name] == pytest.approx(want, abs=1e-9), name
        else:
            assert got[name] == want, name


def frame_of(vector: dict[str, Any]) -> bytes:
    return bytes.fromhex(vector["hex"])
