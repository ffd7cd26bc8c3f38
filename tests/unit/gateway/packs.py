"""Metrics of a made-up pack, in the shape `metrics.to_metrics` publishes (docs/mqtt.md)."""

from __future__ import annotations

from bluez_jk.gateway.charge_control import Number


def pack_metrics(
    cells: list[float] | None = None,
    *,
    soc: float = 50,
    temps: tuple[float, ...] = (25.0,),
    current: float = 0.0,
    capacity: float = 280.0,
    charging: int = 1,
    discharging: int = 1,
    total_voltage: float | None = None,
    ts: float = 1795964304.0,
) -> dict[str, Number]:
    cells = cells if cells is not None else [3.30] * 16
    voltage = round(sum(cells), 3) if total_voltage is None else total_voltage
    low, high = min(cells), max(cells)
    out: dict[str, Number] = {
        "ts": ts,
        "total_voltage": voltage,
        "current": current,
        "power": round(voltage * current, 3),
        "soc": soc,
        "soh": 100,
        "capacity_remain": round(capacity * soc / 100, 3),
        "capacity_nominal": capacity,
        "cycles": 12,
        "charging": charging,
        "discharging": discharging,
        "charging_switch": charging,
        "discharging_switch": discharging,
        "balancer_switch": 1,
        "balancing": 0,
        "cell_count": len(cells),
        "cell_v_min": low,
        "cell_v_max": high,
        "cell_v_delta": round(high - low, 3),
        "cell_v_min_cell": cells.index(low) + 1,
        "cell_v_max_cell": cells.index(high) + 1,
        "temp_mos": 30.0,
    }
    for index, voltage_v in enumerate(cells, start=1):
        out[f"cell_v_{index:02d}"] = voltage_v
    for index, temp in enumerate(temps, start=1):
        out[f"temp_{index}"] = temp
    return out


def with_cell(voltage: float, index: int = 5, count: int = 16, rest: float = 3.30) -> list[float]:
    """`count` cells at `rest` volts except cell `index` (1-based)."""
    cells = [rest] * count
    cells[index - 1] = voltage
    return cells
