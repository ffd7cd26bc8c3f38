"""The real-BlueZ tier: one VM boot per test run (session fixture), every scenario inside it.

Runs by default. `BLUEZ_JK_REALBLUEZ=0` leaves it out on a developer's machine; a host
without QEMU, a kernel image, bluetoothd or the `realbluez` extra skips it with the reason.
Under CI (`CI=true`) neither is allowed: the tier must run, a skip fails the run.
Knobs: REALBLUEZ_READS (100), REALBLUEZ_GATEWAY_S (300), REALBLUEZ_ONLY (labels, `|`-separated),
REALBLUEZ_ACCEL (kvm|tcg), REALBLUEZ_DEBUG (bluetoothd -d), REALBLUEZ_WEDGE (run the
wedged-controller probe on the real rig too, where it kills bluetoothd 5.66),
REALBLUEZ_DEADLINE_S (1500: the whole VM run; it only stops a hung VM, so it is far over the
10-16 minutes the run takes on 2 cores - 962 s once on a slow machine, where 1080 s left too
little room for a second busy process).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import pytest

from tests.realbluez import table, vm

ENV_KNOBS = (
    "REALBLUEZ_READS",
    "REALBLUEZ_GATEWAY_S",
    "REALBLUEZ_ONLY",
    "REALBLUEZ_DEBUG",
    "REALBLUEZ_WEDGE",
)


def _skip_or_fail(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"real-BlueZ tier must run under CI but cannot: {reason}", pytrace=False)
    pytest.skip(f"REAL-BLUEZ TIER SKIPPED: {reason}")


@pytest.fixture(scope="session")
def real_run() -> vm.Run:
    if os.environ.get("BLUEZ_JK_REALBLUEZ") == "0":
        _skip_or_fail("BLUEZ_JK_REALBLUEZ=0")
    missing = vm.missing_prerequisites()
    if missing:
        _skip_or_fail(
            "missing "
            + "; ".join(missing)
            + " (BLUEZ_JK_REALBLUEZ_SETUP=1 bash tools/setup.sh installs them)"
        )
    work = Path(tempfile.mkdtemp(prefix="bluez-jk-realbluez-"))
    env = {k: os.environ[k] for k in ENV_KNOBS if k in os.environ}
    run = vm.run(work, env, deadline_s=float(os.environ.get("REALBLUEZ_DEADLINE_S", "1500")))
    table.RESULTS["real"] = run.outcomes
    table.RESULTS["meta"] = [
        {"work": str(work), "accel": run.accel, "boot_s": run.boot_s, "total_s": run.total_s}
    ]
    if not run.outcomes:
        pytest.fail(
            f"the VM produced no result (accel {run.accel}, exit {run.exit_code}); console:\n"
            + run.console[-3000:],
            pytrace=False,
        )
    return run


def pytest_terminal_summary(terminalreporter: Any) -> None:
    text = table.render()
    if text:
        terminalreporter.write_sep("=", "real-BlueZ tier: scenario table")
        terminalreporter.write_line(text)
