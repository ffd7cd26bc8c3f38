"""Every scenario against real bluetoothd 5.66 and the real kernel stack (one VM per run)."""

from __future__ import annotations

import json

import pytest

from tests.realbluez import vm
from tests.realbluez.labels import real_labels, selected


# The first test waits for the whole VM run (session fixture).
@pytest.mark.timeout(vm.deadline_s() + 120)
@pytest.mark.parametrize("label", real_labels())
def test_on_real_bluez(real_run: vm.Run, label: str) -> None:
    if not selected(label):
        pytest.skip("not in REALBLUEZ_ONLY")
    found = [o for o in real_run.outcomes if o["scenario"] == label]
    assert found, (
        f"{label!r} did not report: the VM run ended early (complete={real_run.complete}, "
        f"{real_run.total_s:.0f} s, logs in {real_run.work}); console tail:\n"
        + real_run.console[-2000:]
    )
    outcome = found[0]
    assert outcome["ok"], (
        f"{outcome['summary']}\n{json.dumps(outcome['details'], indent=1, default=str)[:3000]}"
        f"\n(logs: {real_run.work})"
    )
