"""Charge control for a Victron GX: CVL, CCL and DCL from one battery's metrics (pure).

The GX's DVCC obeys the battery's MaxChargeVoltage (CVL), MaxChargeCurrent (CCL) and
MaxDischargeCurrent (DCL). A JK BMS only protects (it opens a MOSFET at its hard limits), so
the limits that keep the pack away from those protections are computed here, the way
experienced dbus-serialbattery users set that driver up (docs/mqtt.md, "Charge control"):

- CVL = cells x `cell_voltage_max_v` (bulk/absorption), cells x `cell_voltage_float_v` after
  `absorption_time_s` at that voltage with a small cell delta; back to bulk below
  `rebulk_soc_pct`. When a cell passes `cell_voltage_limit_v` the CVL is lowered by the sum of
  the overshoots (the penalty, at most `penalty_max_v`); the penalty is held until the highest
  cell is back below the limit minus `penalty_hysteresis_v`, so that the CVL does not chatter.
- CCL/DCL = the configured maximum x the smallest factor of three tables (cell voltage,
  temperature, SOC), each interpolated linearly between its points. A lower limit applies at
  once; a higher one is approached at `ramp_a_per_s`, so a cleared limit never jumps.
- A BMS whose charge (discharge) MOSFET or switch is off gets CCL (DCL) 0.
- Data older than `stale_grace_s` is no data: CCL = DCL = 0 and charging/discharging not allowed.

No I/O, no clock of its own: the caller passes `now` (monotonic seconds).
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

Number = int | float
Mode = Literal["bulk", "absorption", "float", "stale", "no_data"]
# (x, fraction) points, x strictly increasing, fraction 0..1.
Table = tuple[tuple[float, float], ...]
ALL_PROBES = (1, 2, 3, 4, 5)


def interpolate(table: Table, x: float) -> float:
    """The table's fraction at `x`: linear between points, the end values beyond them."""
    xs = [point[0] for point in table]
    index = bisect.bisect_left(xs, x)
    if index == 0:
        return table[0][1]
    if index == len(table):
        return table[-1][1]
    (x0, y0), (x1, y1) = table[index - 1], table[index]
    return y0 + (y1 - y0) * (x - x0) / (x1 - x0)


@dataclass(frozen=True)
class ChargeSettings:
    """The charge-control parameters (docs/config.md, "`victron`")."""

    max_charge_current_a: float = 100.0
    max_discharge_current_a: float = 100.0
    cell_voltage_max_v: float = 3.45
    cell_voltage_float_v: float = 3.375
    cell_voltage_limit_v: float = 3.55
    cell_voltage_min_v: float = 2.9
    penalty_max_v: float = 2.0
    penalty_hysteresis_v: float = 0.05
    absorption_time_s: float = 900.0
    float_cell_delta_v: float = 0.015
    absorption_tolerance_v: float = 0.05
    rebulk_soc_pct: float = 90.0
    ramp_a_per_s: float = 1.0
    stale_grace_s: float = 60.0
    # Values as dbus-serialbattery's defaults suggest for LiFePO4; fractions of the maximum.
    charge_cell_voltage_table: Table = ((3.30, 1.0), (3.45, 0.5), (3.50, 0.05), (3.55, 0.0))
    discharge_cell_voltage_table: Table = ((2.70, 0.0), (2.80, 0.1), (2.90, 0.5), (3.10, 1.0))
    charge_temperature_table: Table = (
        (0.0, 0.0),
        (2.0, 0.1),
        (5.0, 0.2),
        (10.0, 0.4),
        (15.0, 0.8),
        (20.0, 1.0),
        (35.0, 1.0),
        (40.0, 0.4),
        (55.0, 0.0),
    )
    discharge_temperature_table: Table = (
        (-20.0, 0.0),
        (0.0, 0.2),
        (5.0, 0.3),
        (10.0, 0.4),
        (15.0, 1.0),
        (45.0, 1.0),
        (55.0, 0.0),
    )
    charge_soc_table: Table = ((85.0, 1.0), (95.0, 0.75), (98.0, 0.5), (99.0, 0.2), (100.0, 0.1))
    discharge_soc_table: Table = ((10.0, 0.1), (20.0, 0.4), (30.0, 1.0))
    # Which cell probes count. Some firmware reports an unfitted probe as 0.0 C (fw 11.48
    # with a present-mask of 0xFF, tests/data vectors), which would read as freezing.
    temperature_probes: tuple[int, ...] = ALL_PROBES


TABLE_KEYS = tuple(f.name for f in dataclasses.fields(ChargeSettings) if f.name.endswith("_table"))
NUMBER_KEYS = tuple(
    f.name
    for f in dataclasses.fields(ChargeSettings)
    if f.name not in TABLE_KEYS and f.name != "temperature_probes"
)


@dataclass(frozen=True)
class Limits:
    """What the GX gets. `cvl_v` None = not known yet (no cell count seen)."""

    cvl_v: float | None
    ccl_a: float
    dcl_a: float
    mode: Mode
    allow_charge: bool
    allow_discharge: bool
    # Which rule set the limit: "max", "cell_voltage", "temperature", "soc", "bms", "ramp",
    # "stale".
    charge_limited_by: str
    discharge_limited_by: str
    penalty_v: float
    # Seconds since the last successful read (None before the first).
    age_s: float | None

    @classmethod
    def blocked(
        cls, cvl_v: float | None, *, has_data: bool, penalty_v: float, age_s: float | None
    ) -> Limits:
        """No fresh data: charge and discharge blocked, never the last known limits."""
        return cls(
            cvl_v=cvl_v,
            ccl_a=0.0,
            dcl_a=0.0,
            mode="stale" if has_data else "no_data",
            allow_charge=False,
            allow_discharge=False,
            charge_limited_by="stale",
            discharge_limited_by="stale",
            penalty_v=penalty_v,
            age_s=age_s,
        )


def cell_values(metrics: Mapping[str, Number]) -> list[float]:
    """The cell voltages in order; a bank's metrics have none (its cells are in several packs)."""
    count = int(metrics.get("cell_count", 0))
    keys = (f"cell_v_{i:02d}" for i in range(1, count + 1))
    return [float(metrics[key]) for key in keys if key in metrics]


def temperatures(
    metrics: Mapping[str, Number], probes: tuple[int, ...] = ALL_PROBES
) -> list[tuple[str, float]]:
    """The cell probes (`temp_1`..`temp_5`) among `probes` as (id, C); the MOSFET probe is
    not a cell."""
    return [(f"T{i}", float(metrics[f"temp_{i}"])) for i in probes if f"temp_{i}" in metrics]


def _derate(maximum: float, factors: list[tuple[str, float]], off: bool) -> tuple[float, str]:
    if off:
        return 0.0, "bms"
    name, factor = min(factors, key=lambda item: item[1], default=("max", 1.0))
    if factor >= 1.0:
        return maximum, "max"
    return maximum * max(0.0, factor), name


class ChargeController:
    """One battery's charge-control state: feed it every successful metrics and tick it."""

    def __init__(self, settings: ChargeSettings) -> None:
        self.settings = settings
        self.metrics: dict[str, Number] | None = None
        self.fresh_at: float | None = None
        self.mode: Mode = "bulk"
        self.penalty_v = 0.0
        self.absorbed_s = 0.0
        self.last_at: float | None = None
        self.ccl_a = 0.0
        self.dcl_a = 0.0

    def feed(self, metrics: Mapping[str, Number], now: float) -> Limits:
        """A successful read's metrics, at monotonic time `now`."""
        # Absorption time counts from read to read: ticks in between must not shorten it.
        since_read = 0.0 if self.fresh_at is None else max(0.0, now - self.fresh_at)
        self.metrics = dict(metrics)
        self.fresh_at = now
        return self._step(now, since_read=since_read)

    def tick(self, now: float) -> Limits:
        """No new data: the limits as they stand at `now` (blocked once the grace is over)."""
        return self._step(now, since_read=None)

    def stale(self, now: float) -> bool:
        return self.fresh_at is None or now - self.fresh_at > self.settings.stale_grace_s

    def _step(self, now: float, *, since_read: float | None) -> Limits:
        """`since_read`: seconds since the previous read when this is a new read, else None."""
        s = self.settings
        dt = 0.0 if self.last_at is None else max(0.0, now - self.last_at)
        self.last_at = now
        age = None if self.fresh_at is None else now - self.fresh_at
        if self.metrics is None or self.stale(now):
            # Zero at once, and the ramp starts from zero when data comes back.
            self.ccl_a = self.dcl_a = 0.0
            self.absorbed_s = 0.0
            return Limits.blocked(
                self._target_cvl(),
                has_data=self.metrics is not None,
                penalty_v=self.penalty_v,
                age_s=age,
            )
        m = self.metrics
        cells = cell_values(m)
        if since_read is not None:
            self._update_penalty(cells)
            self._update_mode(m, since_read)
        temps = [t for _, t in temperatures(m, s.temperature_probes)]
        soc = float(m["soc"]) if "soc" in m else None
        charge_factors: list[tuple[str, float]] = []
        discharge_factors: list[tuple[str, float]] = []
        if cells:
            charge_factors.append(
                ("cell_voltage", interpolate(s.charge_cell_voltage_table, max(cells)))
            )
            discharge_factors.append(
                ("cell_voltage", interpolate(s.discharge_cell_voltage_table, min(cells)))
            )
        if temps:
            charge_factors.append(
                ("temperature", min(interpolate(s.charge_temperature_table, t) for t in temps))
            )
            discharge_factors.append(
                ("temperature", min(interpolate(s.discharge_temperature_table, t) for t in temps))
            )
        if soc is not None:
            charge_factors.append(("soc", interpolate(s.charge_soc_table, soc)))
            discharge_factors.append(("soc", interpolate(s.discharge_soc_table, soc)))
        charge_off = m.get("charging") == 0 or m.get("charging_switch") == 0
        discharge_off = m.get("discharging") == 0 or m.get("discharging_switch") == 0
        ccl, charge_by = _derate(s.max_charge_current_a, charge_factors, charge_off)
        dcl, discharge_by = _derate(s.max_discharge_current_a, discharge_factors, discharge_off)
        self.ccl_a = self._ramp(self.ccl_a, ccl, dt)
        self.dcl_a = self._ramp(self.dcl_a, dcl, dt)
        # Still climbing towards the tables' value: the ramp is what limits now.
        charge_by = "ramp" if self.ccl_a < ccl else charge_by
        discharge_by = "ramp" if self.dcl_a < dcl else discharge_by
        return Limits(
            cvl_v=self._target_cvl(),
            ccl_a=round(self.ccl_a, 2),
            dcl_a=round(self.dcl_a, 2),
            mode=self.mode,
            allow_charge=not charge_off and self.ccl_a > 0,
            allow_discharge=not discharge_off and self.dcl_a > 0,
            charge_limited_by=charge_by,
            discharge_limited_by=discharge_by,
            penalty_v=round(self.penalty_v, 3),
            age_s=age,
        )

    def _ramp(self, current: float, target: float, dt: float) -> float:
        if target <= current:
            return target
        return min(target, current + self.settings.ramp_a_per_s * dt)

    def _cells(self) -> int:
        return int(self.metrics.get("cell_count", 0)) if self.metrics else 0

    def _target_cvl(self) -> float | None:
        cells = self._cells()
        if cells <= 0:
            return None
        s = self.settings
        per_cell = s.cell_voltage_float_v if self.mode == "float" else s.cell_voltage_max_v
        return round(max(cells * s.cell_voltage_min_v, cells * per_cell - self.penalty_v), 3)

    def _update_penalty(self, cells: list[float]) -> None:
        s = self.settings
        if not cells:
            return
        overshoot = sum(max(0.0, v - s.cell_voltage_limit_v) for v in cells)
        if overshoot > 0:
            # Held at its highest while it lasts: lowering the CVL pulls the cell back under
            # the limit, and giving the penalty back at once would push it over again.
            self.penalty_v = min(s.penalty_max_v, max(self.penalty_v, overshoot))
        elif max(cells) < s.cell_voltage_limit_v - s.penalty_hysteresis_v:
            self.penalty_v = 0.0

    def _update_mode(self, m: Mapping[str, Number], dt: float) -> None:
        s = self.settings
        cells = self._cells()
        soc = m.get("soc")
        if self.mode == "float":
            if soc is not None and soc < s.rebulk_soc_pct:
                self.mode = "bulk"
                self.absorbed_s = 0.0
            return
        voltage = m.get("total_voltage")
        target = cells * s.cell_voltage_max_v - self.penalty_v
        at_target = voltage is not None and voltage >= target - s.absorption_tolerance_v
        if not at_target:
            self.mode = "bulk"
            self.absorbed_s = 0.0
            return
        if self.mode == "bulk":
            self.mode = "absorption"
            return  # the time starts counting from the first read at the target
        delta = m.get("cell_v_delta")
        if delta is not None and delta <= s.float_cell_delta_v:
            self.absorbed_s += dt
        if self.absorbed_s >= s.absorption_time_s:
            self.mode = "float"
            self.absorbed_s = 0.0
