"""Readings built from the real captures in tests/data, for the integration tests.

Each set is one BMS's device-info, cell-info and (when captured) settings frames. The frames
are decoded with `bluez_jk.protocol` when it is in the tree; otherwise (and for any frame it
cannot decode) the capture's `expected.derived_from_spec` values are used, which carry the
same "our name" keys (docs/protocol.md 5).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from bluez_jk.reading import Reading, new_reading

try:
    from bluez_jk.protocol.decode import decode_frame
except ImportError:  # the protocol package is being written in parallel
    decode_frame = None

DATA = Path(__file__).resolve().parents[2] / "data"

# name -> (protocol, cell_info file, device_info file, settings file or None)
VECTOR_SETS: dict[str, tuple[str, str, str, str | None]] = {
    "jk02_32s_v19_05": (
        "JK02_32S",
        "jk02_32s_v19_05_cell_info_304.json",
        "jk02_32s_v19_05_device_info_324.json",
        "jk02_32s_v19_05_settings_384.json",
    ),
    "jk02_32s_v19_27": (
        "JK02_32S",
        "jk02_32s_v19_27_cell_info.json",
        "jk02_32s_v19_27_device_info.json",
        "jk02_32s_v19_27_settings.json",
    ),
    "jk02_32s_v11_48": (
        "JK02_32S",
        "jk02_32s_v11_48_cell_info.json",
        "jk02_32s_v11_48_device_info.json",
        None,
    ),
    "jk02_24s_v10_07": (
        "JK02_24S",
        "jk02_24s_v10_07_cell_info.json",
        "jk02_24s_v10_07_device_info.json",
        "jk02_24s_v10_07_settings.json",
    ),
    "jk04_v3_3_0": ("JK04", "jk04_v3_3_0_cell_info.json", "jk04_v3_3_0_device_info.json", None),
}

# Names the capture files use for values that docs/protocol.md 5.2 names differently.
_RENAMES = {
    "temperature_254": "temperature_sensor_3",
    "temperature_256": "temperature_sensor_4",
    "temperature_258": "temperature_sensor_5",
}
# Capture-file annotations that are not status fields.
_NOT_STATUS = {
    "power_unsigned_field",
    "error_bitmask_16",
    "warnings_set",
    "total_voltage_sum_of_cells",
}


def _decode(vector: dict[str, Any], protocol: str) -> dict[str, Any]:
    if decode_frame is not None:
        try:
            values = dict(decode_frame(bytes.fromhex(vector["hex"]), protocol).values)
            json.dumps(values)  # a Reading must serialise as the `raw` payload
        except Exception:
            pass
        else:
            return values
    values = dict(vector["expected"]["derived_from_spec"])
    for old, new in _RENAMES.items():
        if old in values:
            values[new] = values.pop(old)
    return {k: v for k, v in values.items() if k not in _NOT_STATUS}


def _load(name: str) -> dict[str, Any]:
    return json.loads((DATA / name).read_text())  # type: ignore[no-any-return]


def vector_reading(
    set_name: str = "jk02_32s_v19_05",
    *,
    name: str = "jk1",
    address: str = "C8:47:80:37:02:E8",
    adapter: str | None = "hci0",
    last_update: float = 1771097625.51,
) -> Reading:
    protocol, cell_file, info_file, settings_file = VECTOR_SETS[set_name]
    reading = new_reading(name, address, adapter)
    reading["connected"] = True
    reading["protocol"] = protocol  # type: ignore[typeddict-item]
    reading["detected_by"] = "sw_rev"
    reading["model_nbr"] = "BK-BLE-1.0"
    status = reading["status"]
    status["cell_info"] = _decode(_load(cell_file), protocol)
    status["device_info"] = _decode(_load(info_file), protocol)
    reading["got"]["cell_info"] = True
    reading["got"]["device_info"] = True
    if settings_file is not None:
        status["settings"] = _decode(_load(settings_file), protocol)
        reading["got"]["settings"] = True
    status["last_update"] = last_update
    reading["duration_s"] = 1.84
    return reading


def with_cell_info(reading: Reading, **values: Any) -> Reading:
    changed = copy.deepcopy(reading)
    changed["status"]["cell_info"].update(values)
    return changed
