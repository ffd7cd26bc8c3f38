"""The scenario table (scenario, simulator, real BlueZ 5.66), printed after the run and kept
in the README. Differences that are understood are listed in docs/bluez.md section 8 and in
`KNOWN_DIFFERENCES`; any other one fails the differential test."""

from __future__ import annotations

from typing import Any

RESULTS: dict[str, list[dict[str, Any]]] = {}

# label -> why the simulator and real BlueZ may end differently (also in docs/bluez.md 8).
KNOWN_DIFFERENCES: dict[str, str] = {
    "D-Bus probe: a wedged controller, then a power cycle": (
        "real 5.66 removes the (temporary) device after the wedged connect times out and dies "
        "in the removal (docs/bluez.md fact 21, both runs on the rig); the simulator plays the "
        "wedge and its cure by a power cycle, without the crash"
    ),
    "D-Bus probe: GATT calls on a disconnected device": (
        "real 5.66 answers either 'No ATT transport' / 'Failed to register notify session' / "
        "'Failed to send read request' or 'Not connected' / StartNotify ok, depending on whether "
        "its GATT client still holds the ATT transport (seen both ways on the rig); the "
        "simulator plays the first; the reader maps every one of them to a lost link"
    ),
}


def render() -> str:
    real = {o["scenario"]: o for o in RESULTS.get("real", [])}
    sim = {o["scenario"]: o for o in RESULTS.get("sim", [])}
    if not real and not sim:
        return ""
    labels = list(dict.fromkeys([*real, *sim]))
    rows = ["| scenario | simulator | real BlueZ 5.66 |", "| --- | --- | --- |"]
    for label in labels:
        rows.append(f"| {label} | {_cell(sim.get(label))} | {_cell(real.get(label))} |")
    for meta in RESULTS.get("meta", []):
        rows.append("")
        rows.append(
            f"VM: {meta['accel']}, boot {meta['boot_s'] or 0:.0f} s, "
            f"whole run {meta['total_s']:.0f} s, logs in {meta['work']}"
        )
    return "\n".join(rows)


def _cell(outcome: dict[str, Any] | None) -> str:
    if outcome is None:
        return "-"
    mark = "pass" if outcome["ok"] else "FAIL"
    return f"{mark}: {outcome['summary']} ({outcome['duration_s']:.1f} s)"
