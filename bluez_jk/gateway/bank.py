"""A bank of packs wired in parallel, as one virtual battery (pure; docs/mqtt.md, "Banks").

Parallel packs share one voltage and add up their currents and capacities. Only members with
fresh data count: a stale member's old numbers are left out, never averaged in. What the bank
can take is what its usable members can take: a member whose BMS has charging (discharging)
switched off, or whose data is stale, adds nothing to the bank's CCL (DCL) and is named in the
bank's status with the reason.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bluez_jk.gateway.charge_control import ALL_PROBES, Limits, Number, temperatures
from bluez_jk.gateway.victron import Extremes, Modules

STALE_MODES = ("stale", "no_data")


@dataclass(frozen=True)
class Member:
    """One pack as the bank sees it at this moment."""

    name: str
    metrics: Mapping[str, Number] | None  # the last successful read's metrics
    online: bool  # the last read succeeded
    limits: Limits  # the pack's own charge control, at this moment
    warnings: Mapping[str, bool] = field(default_factory=dict)
    probes: tuple[int, ...] = ALL_PROBES  # its cell probes that count

    @property
    def fresh(self) -> bool:
        return self.metrics is not None and self.limits.mode not in STALE_MODES


@dataclass(frozen=True)
class BankView:
    metrics: dict[str, Number]
    status: dict[str, Any]  # the `raw` summary
    limits: Limits
    modules: Modules
    extremes: Extremes
    warnings: dict[str, bool]
    online: bool


def weighted(values: Sequence[tuple[float, float | None]]) -> float | None:
    """The mean of (value, weight) pairs weighted by capacity; unweighted when any weight is
    missing or zero (a pack whose capacity is unknown must not count for nothing)."""
    if not values:
        return None
    weights = [w for _, w in values]
    if any(w is None or w <= 0 for w in weights):
        return sum(v for v, _ in values) / len(values)
    total = sum(w for w in weights if w is not None)
    return sum(v * (w or 0.0) for v, w in values) / total


def _capacity(metrics: Mapping[str, Number]) -> float | None:
    value = metrics.get("capacity_nominal", metrics.get("nominal_capacity"))
    return float(value) if value is not None else None


def charge_exclusion(member: Member) -> str | None:
    """Why the member adds nothing to the bank's CCL, or None when it counts."""
    if not member.fresh:
        return "stale"
    if member.limits.charge_limited_by == "bms":
        return "charging off"
    return None


def discharge_exclusion(member: Member) -> str | None:
    if not member.fresh:
        return "stale"
    if member.limits.discharge_limited_by == "bms":
        return "discharging off"
    return None


def _extreme(
    fresh: Sequence[tuple[int, Member]], key: str, cell_key: str, lowest: bool
) -> tuple[float, int, int] | None:
    """(value, member position, cell) of the lowest/highest `key` across members."""
    found = [
        (float(m.metrics[key]), index, int(m.metrics.get(cell_key, 0)))
        for index, m in fresh
        if m.metrics is not None and key in m.metrics
    ]
    if not found:
        return None
    return min(found) if lowest else max(found, key=lambda item: (item[0], -item[1]))


def _bank_limits(fresh: list[Member], members: Sequence[Member]) -> Limits:
    chargers = [m for m in fresh if charge_exclusion(m) is None]
    dischargers = [m for m in fresh if discharge_exclusion(m) is None]
    voltages = [m.limits for m in (chargers or fresh) if m.limits.cvl_v is not None]
    leader = min(voltages, key=lambda limits: limits.cvl_v or 0.0, default=None)
    ccl = round(sum(m.limits.ccl_a for m in chargers), 2)
    dcl = round(sum(m.limits.dcl_a for m in dischargers), 2)
    excluded_c = [m.name for m in members if charge_exclusion(m) is not None]
    excluded_d = [m.name for m in members if discharge_exclusion(m) is not None]
    if not fresh:
        return Limits.blocked(
            leader.cvl_v if leader else None,
            has_data=any(m.metrics is not None for m in members),
            penalty_v=0.0,
            age_s=None,
        )
    ages = [m.limits.age_s for m in fresh if m.limits.age_s is not None]
    return Limits(
        cvl_v=leader.cvl_v if leader else None,
        ccl_a=ccl,
        dcl_a=dcl,
        mode=leader.mode if leader else "bulk",
        allow_charge=ccl > 0,
        allow_discharge=dcl > 0,
        charge_limited_by=f"without {','.join(excluded_c)}" if excluded_c else "members",
        discharge_limited_by=f"without {','.join(excluded_d)}" if excluded_d else "members",
        penalty_v=leader.penalty_v if leader else 0.0,
        age_s=max(ages) if ages else None,
    )


def _pack_sums(data: Sequence[Mapping[str, Number]]) -> dict[str, Number]:
    """What parallel packs add up to: one voltage, summed currents and capacities, SOC and
    SOH weighted by capacity."""
    out: dict[str, Number] = {}
    if not data:
        return out
    out["ts"] = max(float(d.get("ts", 0.0)) for d in data)
    voltages = [float(d["total_voltage"]) for d in data if "total_voltage" in d]
    if voltages:
        out["total_voltage"] = round(sum(voltages) / len(voltages), 3)
    for key in ("current", "power", "capacity_remain", "capacity_nominal"):
        values = [float(d[key]) for d in data if key in d]
        if values:
            out[key] = round(sum(values), 3)
    if "power" in out:
        out["charging_power"] = round(max(0.0, out["power"]), 3)
        out["discharging_power"] = round(max(0.0, -out["power"]), 3)
    for key in ("soc", "soh"):
        mean = weighted([(float(d[key]), _capacity(d)) for d in data if key in d])
        if mean is not None:
            out[key] = round(mean, 1)
    counts = {int(d["cell_count"]) for d in data if "cell_count" in d}
    if len(counts) == 1:
        out["cell_count"] = counts.pop()
    if any("balancing" in d for d in data):
        out["balancing"] = int(any(d.get("balancing") for d in data))
    return out


Probe = tuple[float, int, str]  # (C, member position, probe id)


def _probes(fresh: Sequence[tuple[int, Member]]) -> tuple[Probe | None, Probe | None]:
    """The coldest and the warmest cell probe across members."""
    probes = [
        (t, index, probe)
        for index, m in fresh
        if m.metrics is not None
        for probe, t in temperatures(m.metrics, m.probes)
    ]
    cold = min(probes, default=None)
    hot = max(probes, key=lambda p: (p[0], -p[1]), default=None)
    return cold, hot


def aggregate(name: str, members: Sequence[Member]) -> BankView:
    """The bank's metrics, `raw` summary, limits and Victron inputs from its members."""
    fresh = [(i, m) for i, m in enumerate(members, start=1) if m.fresh]
    fresh_members = [m for _, m in fresh]
    out = _pack_sums([m.metrics for m in fresh_members if m.metrics is not None])
    low = _extreme(fresh, "cell_v_min", "cell_v_min_cell", lowest=True)
    high = _extreme(fresh, "cell_v_max", "cell_v_max_cell", lowest=False)
    if low and high:
        out["cell_v_min"], out["cell_v_min_member"], out["cell_v_min_cell"] = low
        out["cell_v_max"], out["cell_v_max_member"], out["cell_v_max_cell"] = high
        out["cell_v_delta"] = round(high[0] - low[0], 3)
    cold, hot = _probes(fresh)
    if cold and hot:
        out["temp_min"], out["temp_min_member"] = cold[0], cold[1]
        out["temp_max"], out["temp_max_member"] = hot[0], hot[1]
    limits = _bank_limits(fresh_members, members)
    excluded_charge = {m.name: r for m in members if (r := charge_exclusion(m))}
    excluded_discharge = {m.name: r for m in members if (r := discharge_exclusion(m))}
    out["members"] = len(members)
    out["members_online"] = sum(m.online for m in members)
    out["members_fresh"] = len(fresh_members)
    out["members_charging"] = len(members) - len(excluded_charge)
    out["members_discharging"] = len(members) - len(excluded_discharge)
    if limits.mode not in STALE_MODES:
        out["cvl"] = limits.cvl_v if limits.cvl_v is not None else 0.0
        out["ccl"] = limits.ccl_a
        out["dcl"] = limits.dcl_a
    names = [m.name for m in members]

    def cell(found: tuple[float, int, int] | None) -> dict[str, Any] | None:
        return found and {"member": names[found[1] - 1], "cell": found[2], "voltage": found[0]}

    def probe(found: Probe | None) -> dict[str, Any] | None:
        return found and {"member": names[found[1] - 1], "probe": found[2], "value": found[0]}

    status: dict[str, Any] = {
        "name": name,
        "members": names,
        "online": {m.name: m.online for m in members},
        "stale": [m.name for m in members if not m.fresh],
        "excluded_from_charge": excluded_charge,
        "excluded_from_discharge": excluded_discharge,
        "limits": {"cvl": limits.cvl_v, "ccl": limits.ccl_a, "dcl": limits.dcl_a,
                   "mode": limits.mode},
        "min_cell": cell(low),
        "max_cell": cell(high),
        "min_temperature": probe(cold),
        "max_temperature": probe(hot),
    }  # fmt: skip
    extremes = Extremes(
        min_cell=f"{names[low[1] - 1]}:C{low[2]}" if low else None,
        max_cell=f"{names[high[1] - 1]}:C{high[2]}" if high else None,
        min_temp=f"{names[cold[1] - 1]}:{cold[2]}" if cold else None,
        max_temp=f"{names[hot[1] - 1]}:{hot[2]}" if hot else None,
        min_temp_c=cold[0] if cold else None,
        max_temp_c=hot[0] if hot else None,
    )
    modules = Modules(
        online=len(fresh_members),
        offline=len(members) - len(fresh_members),
        blocking_charge=len(excluded_charge),
        blocking_discharge=len(excluded_discharge),
    )
    warnings: dict[str, bool] = {}
    for m in fresh_members:
        for key, value in m.warnings.items():
            warnings[key] = warnings.get(key, False) or bool(value)
    return BankView(
        metrics=out,
        status=status,
        limits=limits,
        modules=modules,
        extremes=extremes,
        warnings=warnings,
        online=all(m.online for m in members),
    )
