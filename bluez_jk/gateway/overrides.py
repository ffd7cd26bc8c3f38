"""Which stored runtime overrides (`cmd/config`) apply at start, and why others do not.

Rules (README, "Runtime configuration over MQTT"):
- `allow_remote_config: false` ignores every stored override (they stay in the state file and
  apply again once remote configuration is turned back on);
- the config file wins where the operator changed a key after the override: each override
  remembers the file's value it replaced, and a different file value now drops it;
- two devices never end up with one address: an override that would cause that is dropped.
Pure: the gateway logs the notes and saves what was dropped.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bluez_jk.gateway.config import DeviceConfig

Overrides = dict[str, dict[str, Any]]


@dataclass
class Resolution:
    effective: Overrides = field(default_factory=dict)  # what applies, per device
    kept: Overrides = field(default_factory=dict)  # what stays stored, per device
    kept_bases: Overrides = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    changed: set[str] = field(default_factory=set)  # devices whose stored entry shrank


def resolve(
    devices: Mapping[str, DeviceConfig],
    stored: Mapping[str, Mapping[str, Any]],
    bases: Mapping[str, Mapping[str, Any]],
    *,
    allowed: bool,
) -> Resolution:
    out = Resolution()
    for name, values in stored.items():
        out.kept[name] = dict(values)
        out.kept_bases[name] = dict(bases.get(name, {}))
    if not allowed:
        for name, values in sorted(stored.items()):
            if values and name in devices:
                out.notes.append(
                    f"ignored (allow_remote_config: false) device={name} values={dict(values)}"
                )
        return out
    for name, device in devices.items():
        values = dict(stored.get(name, {}))
        base = bases.get(name, {})
        for key in list(values):
            if key in base and base[key] != getattr(device, key):
                out.notes.append(
                    f"dropped, the config file changed since device={name} key={key} "
                    f"file={getattr(device, key)!r} stored={values[key]!r}"
                )
                del values[key]
        out.effective[name] = values
    addresses = Counter(
        out.effective[name].get("address", device.address) for name, device in devices.items()
    )
    for name, device in devices.items():
        address = out.effective[name].get("address")
        if address is not None and address != device.address and addresses[address] > 1:
            out.notes.append(
                f"dropped, another device has that address device={name} key=address "
                f"stored={address!r}"
            )
            del out.effective[name]["address"]
    for name, values in out.effective.items():
        if values != out.kept.get(name, {}):
            out.changed.add(name)
            out.kept[name] = values
            out.kept_bases[name] = {
                k: v for k, v in out.kept_bases.get(name, {}).items() if k in values
            }
        if values:
            out.notes.append(f"in force device={name} values={values}")
    return out
