"""Decode throughput on the captured frames of tests/data.

Prints frames per second for:
  - the full path: Assembler.feed + decode_frame to a dict (whole frames, and the same frames
    cut into 128 + 22-byte notifications with `AT\\r\\n` between them, as 14.x+ units send),
  - decode_frame alone,
  - a plain `struct`-based reference decoder kept here for comparison: a table of
    (name, offset, format, divisor) read with struct.unpack_from, the way most hand-written
    JK decoders work, producing the same values for the same frames (checked before timing).
Logbook frames are left out (the reference does not decode them).

    python bench/decode.py [--seconds 2]
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bluez_jk.protocol import Assembler, decode_frame  # noqa: E402

DATA = ROOT / "tests" / "data"
TARGET_FPS = 20_000
TARGET_RATIO = 4.0

# --- the reference decoder ---------------------------------------------------------------
# (name, 24S offset, struct format, divisor or None for "as is", kind) - 32S offsets follow the
# A/B rule of docs/protocol.md 5.2 (+16 for 54..111, +32 from 112).
Row = tuple[str, int, str, float | None, str]
_CELL_JK02: list[Row] = [
    ("enabled_cells_bitmask", 54, "<I", None, "n"),
    ("average_cell_voltage", 58, "<H", 1000, "n"),
    ("delta_cell_voltage", 60, "<H", 1000, "n"),
    ("max_voltage_cell", 62, "<B", None, "n"),
    ("min_voltage_cell", 63, "<B", None, "n"),
    ("wire_resistance_warning_bitmask", 114, "<I", None, "n"),
    ("total_voltage", 118, "<I", 1000, "n"),
    ("current", 126, "<i", 1000, "n"),
    ("temperature_sensor_1", 130, "<h", 10, "t"),
    ("temperature_sensor_2", 132, "<h", 10, "t"),
    ("balancing_current", 138, "<h", 1000, "n"),
    ("balancing_action", 140, "<B", None, "n"),
    ("battery_soc", 141, "<B", None, "n"),
    ("capacity_remain", 142, "<I", 1000, "n"),
    ("capacity_nominal", 146, "<I", 1000, "n"),
    ("cycle_count", 150, "<I", None, "n"),
    ("cycle_capacity", 154, "<I", 1000, "n"),
    ("state_of_health", 158, "<B", None, "n"),
    ("precharge", 159, "<B", None, "b"),
    ("total_runtime", 162, "<I", None, "n"),
    ("charging_switch_enabled", 166, "<B", None, "b"),
    ("discharging_switch_enabled", 167, "<B", None, "b"),
    ("temperature_sensor_present_bitmask", 182, "<B", None, "n"),
    ("heating", 183, "<B", None, "b"),
    ("emergency_time_countdown", 186, "<H", None, "n"),
    ("heating_current", 204, "<h", 1000, "n"),
]
_CELL_24S_ONLY: list[Row] = [
    ("temperature_mos", 134, "<h", 10, "t"),
    ("error_bitmask", 136, "<H", None, "n"),
]
_CELL_32S_ONLY: list[Row] = [  # absolute offsets
    ("temperature_mos", 144, "<h", 10, "t"),
    ("error_bitmask", 166, "<I", None, "n"),
    ("precharging", 200, "<B", None, "b"),
    ("balancer_working", 201, "<B", None, "b"),
    ("pack_voltage_alt", 234, "<H", 100, "n"),
    ("temperature_sensor_3", 254, "<h", 10, "t"),
    ("temperature_sensor_4", 256, "<h", 10, "t"),
    ("temperature_sensor_5", 258, "<h", 10, "t"),
    ("detail_log_entry_count", 266, "<I", None, "n"),
    ("smart_sleep_countdown", 270, "<I", None, "n"),
    ("battery_type_id", 275, "<B", None, "n"),
    ("charge_status_time_elapsed", 278, "<H", None, "n"),
    ("charge_status_id", 280, "<B", None, "n"),
    ("dry_contact_bitmask", 281, "<B", None, "n"),
]
_DEVICE: list[Row] = [
    ("vendor_id", 6, "16s", None, "s"),
    ("hw_rev", 22, "8s", None, "s"),
    ("sw_rev", 30, "8s", None, "s"),
    ("uptime", 38, "<I", None, "n"),
    ("power_on_count", 42, "<I", None, "n"),
    ("device_name", 46, "16s", None, "s"),
    ("manufacturing_date", 78, "8s", None, "s"),
    ("serial_number", 86, "16s", None, "s"),
    ("user_data", 102, "16s", None, "s"),
    ("user_data_2", 134, "16s", None, "s"),
    ("uart1_protocol", 184, "<B", None, "n"),
    ("can_protocol", 185, "<B", None, "n"),
    ("hardware_option", 190, "12s", None, "s"),
    ("uart2_protocol", 218, "<B", None, "n"),
    ("lcd_buzzer_trigger", 234, "<B", None, "n"),
    ("dry1_trigger", 235, "<B", None, "n"),
    ("dry2_trigger", 236, "<B", None, "n"),
    ("request_charge_voltage_time", 266, "<B", 10, "n"),
    ("request_float_voltage_time", 267, "<B", 10, "n"),
    ("emergency_duration", 269, "<B", None, "n"),
    ("uart3_protocol", 270, "<B", None, "n"),
    ("re_bulk_soc", 278, "<B", None, "n"),
]
_SETTINGS_NAMES = [
    "smart_sleep_voltage",
    "cell_uvp",
    "cell_uvpr",
    "cell_ovp",
    "cell_ovpr",
    "balance_trigger_voltage",
    "soc_100_voltage",
    "soc_0_voltage",
    "request_charge_voltage",
    "request_float_voltage",
    "power_off_voltage",
    "max_charge_current",
    "charge_ocp_delay",
    "charge_ocp_recovery",
    "max_discharge_current",
    "discharge_ocp_delay",
    "discharge_ocp_recovery",
    "scp_recovery",
    "max_balance_current",
    "charge_otp",
    "charge_otpr",
    "discharge_otp",
    "discharge_otpr",
    "charge_utp",
    "charge_utpr",
    "mos_otp",
    "mos_otpr",
    "cell_count",
    "charging_switch",
    "discharging_switch",
    "balancing_switch",
    "nominal_capacity",
    "scp_delay",
    "balance_start_voltage",
]
_SETTINGS_DIV = {
    **dict.fromkeys([*_SETTINGS_NAMES[:12], "max_discharge_current", "max_balance_current"], 1000),
    **dict.fromkeys(_SETTINGS_NAMES[19:27], 10),
    "nominal_capacity": 1000,
    "balance_start_voltage": 1000,
}
_SETTINGS: list[Row] = [
    (
        name,
        6 + 4 * i,
        "<i" if 19 <= i < 27 else "<I",
        _SETTINGS_DIV.get(name),
        "b" if name.endswith("_switch") else "n",
    )
    for i, name in enumerate(_SETTINGS_NAMES)
]
_SETTINGS_32S: list[Row] = [
    ("device_address", 270, "<B", None, "n"),
    ("precharge_time", 274, "<B", None, "n"),
    ("control_bitmask", 282, "<H", None, "n"),
    ("heating_start_temperature", 284, "<b", None, "n"),
    ("heating_stop_temperature", 285, "<b", None, "n"),
    ("smart_sleep_hours", 286, "<B", None, "n"),
    ("discharge_utp", 296, "<b", None, "n"),
    ("discharge_utpr", 297, "<b", None, "n"),
]


def _shift(rows: list[Row], wide: bool) -> list[tuple[str, int, struct.Struct, float | None, str]]:
    out = []
    for name, offset, fmt, div, kind in rows:
        shift = (32 if offset >= 112 else 16 if offset >= 54 else 0) if wide else 0
        out.append((name, offset + shift, struct.Struct(fmt), div, kind))
    return out


def _plain(rows: list[Row]) -> list[tuple[str, int, struct.Struct, float | None, str]]:
    return [(n, o, struct.Struct(f), d, k) for n, o, f, d, k in rows]


_TABLES = {
    ("cell_info", "JK02_24S"): _shift(_CELL_JK02, False) + _plain(_CELL_24S_ONLY),
    ("cell_info", "JK02_32S"): _shift(_CELL_JK02, True) + _plain(_CELL_32S_ONLY),
    ("settings", "JK02_24S"): _plain(_SETTINGS),
    ("settings", "JK02_32S"): _plain(_SETTINGS + _SETTINGS_32S),
}
for _p in ("JK02_24S", "JK02_32S", "JK04"):
    _TABLES["device_info", _p] = _plain(_DEVICE)
_KINDS = {1: "settings", 2: "cell_info", 3: "device_info"}


def reference_decode(frame: bytes, protocol: str) -> dict[str, Any]:
    kind = _KINDS[frame[4]]
    if kind == "cell_info" and protocol == "JK04":
        return _reference_jk04_cells(frame)
    values: dict[str, Any] = {}
    for name, offset, packer, div, k in _TABLES[kind, protocol]:
        raw = packer.unpack_from(frame, offset)[0]
        if k == "s":
            values[name] = raw.split(b"\0", 1)[0].decode("ascii", "replace")
        elif k == "b":
            values[name] = bool(raw)
        elif k == "t":
            values[name] = None if raw == -2000 else raw / div
        else:
            values[name] = raw if div is None else raw / div
    if kind == "cell_info":
        cells = 32 if protocol == "JK02_32S" else 24
        used = values["enabled_cells_bitmask"].bit_length()
        raw_v = struct.unpack_from(f"<{cells}H", frame, 6)
        raw_r = struct.unpack_from(f"<{cells}H", frame, 6 + 2 * cells + 10)
        values["voltages"] = [v / 1000 for v in raw_v[:used]]
        values["resistances"] = [r / 1000 for r in raw_r[:used]]
        values["power"] = round(values["total_voltage"] * values["current"], 2)
    elif kind == "device_info":
        values["production"] = values["user_data"][:8]
    return values


def _reference_jk04_cells(frame: bytes) -> dict[str, Any]:
    voltages = [round(v, 4) for v in struct.unpack_from("<24f", frame, 6)]
    resistances = [round(r, 4) for r in struct.unpack_from("<24f", frame, 102)]
    used = len(voltages)
    while used and not voltages[used - 1]:
        used -= 1
    return {
        "voltages": voltages[:used],
        "resistances": resistances[:used],
        "average_cell_voltage": round(struct.unpack_from("<f", frame, 202)[0], 4),
        "delta_cell_voltage": round(struct.unpack_from("<f", frame, 206)[0], 4),
        "balancing_action": frame[220],
        "balancing_current": round(struct.unpack_from("<f", frame, 222)[0], 3),
        "total_runtime": struct.unpack_from("<I", frame, 286)[0],
        "total_voltage": round(sum(voltages[:used]), 3),
    }


# --- timing ------------------------------------------------------------------------------


def load_frames() -> list[tuple[bytes, str]]:
    frames = []
    for path in sorted(DATA.glob("*.json")):
        vector = json.loads(path.read_text())
        if "hex" in vector and vector["frame_type"].split()[0] != "0x05":
            frames.append((bytes.fromhex(vector["hex"]), vector["protocol_version"]))
    return frames


def rate(work: Callable[[], int], seconds: float) -> float:
    """Frames per second of `work` (which returns the frames it handled), best of 5 runs."""
    best = 0.0
    for _ in range(5):
        done = 0
        start = time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds / 5:
            done += work()
        best = max(best, done / elapsed)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="per measurement")
    args = parser.parse_args()
    frames = load_frames()
    for frame, protocol in frames:
        ours = decode_frame(frame, protocol).values
        theirs = reference_decode(frame, protocol)
        mismatch = {k: (ours.get(k), v) for k, v in theirs.items() if ours.get(k) != v}
        if mismatch:
            raise SystemExit(f"reference and decoder disagree on {protocol}: {mismatch}")
    chunked = []
    for frame, protocol in frames:
        pieces = [frame[i : i + 150] for i in range(0, 300, 150)]
        chunks = [b"AT\r\n" + pieces[0][:124], pieces[0][124:], pieces[1][:128], pieces[1][128:]]
        chunked.append((chunks, protocol))

    def full_path() -> int:
        assembler = Assembler()
        for frame, protocol in frames:
            for whole in assembler.feed(frame):
                decode_frame(whole, protocol)
        return len(frames)

    def full_path_chunked() -> int:
        assembler = Assembler()
        for chunks, protocol in chunked:
            for chunk in chunks:
                for whole in assembler.feed(chunk):
                    decode_frame(whole, protocol)
        return len(chunked)

    def decoder_only() -> int:
        for frame, protocol in frames:
            decode_frame(frame, protocol)
        return len(frames)

    def reference() -> int:
        for frame, protocol in frames:
            reference_decode(frame, protocol)
        return len(frames)

    def reference_full_path() -> int:
        assembler = Assembler()
        for frame, protocol in frames:
            for whole in assembler.feed(frame):
                reference_decode(whole, protocol)
        return len(frames)

    results = {
        "full path (assembler + decode_frame), whole frames": rate(full_path, args.seconds),
        "full path, 128/22-byte chunks with AT": rate(full_path_chunked, args.seconds),
        "decode_frame alone": rate(decoder_only, args.seconds),
        "struct reference alone": rate(reference, args.seconds),
        "struct reference + assembler": rate(reference_full_path, args.seconds),
    }
    print(f"{len(frames)} captured frames (device info, cell info, settings; 3 layouts)")
    for label, fps in results.items():
        print(f"{label:55s} {fps:>10,.0f} frames/s  {1e6 / fps:6.1f} us/frame")
    full = results["full path (assembler + decode_frame), whole frames"]
    ratio_decode = results["struct reference alone"] / results["decode_frame alone"]
    ratio_full = results["struct reference + assembler"] / full
    print(f"reference / decode_frame: {ratio_decode:.2f}x; with the assembler: {ratio_full:.2f}x")
    ok = full >= TARGET_FPS and ratio_full <= TARGET_RATIO
    print(
        f"target >= {TARGET_FPS:,} frames/s and within {TARGET_RATIO:g}x: "
        + ("met" if ok else "NOT met")
    )


if __name__ == "__main__":
    main()
