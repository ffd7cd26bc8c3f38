"""The scenario labels a run is expected to report, from the same knobs the guest reads."""

from __future__ import annotations

import os

from tests.realbluez.gateway_run import RESTART_LABEL, gateway_label
from tests.realbluez.pairing import lost_bond
from tests.realbluez.probes import all_probes
from tests.realbluez.scenarios import env_int, flatten, label_of, standard


def reads() -> int:
    return env_int("REALBLUEZ_READS", 100)


def standard_labels() -> list[str]:
    return [label_of(s) for s in flatten(standard(reads()))]


def probe_labels() -> list[str]:
    return [label_of(p) for p in all_probes()]


def after_gateway_labels() -> list[str]:
    """Run last on the rig: the lost bond can crash bluetoothd 5.66 (docs/bluez.md fact 19)."""
    return [label_of(lost_bond)]


def real_labels() -> list[str]:
    return [
        *standard_labels(),
        *probe_labels(),
        gateway_label(env_int("REALBLUEZ_GATEWAY_S", 300)),
        RESTART_LABEL,
        *after_gateway_labels(),
    ]


def selected(label: str) -> bool:
    only = os.environ.get("REALBLUEZ_ONLY", "")
    return not only or any(part in label for part in only.split("|"))
