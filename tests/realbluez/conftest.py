"""The real-BlueZ tier: one VM boot per test run, every scenario inside it. The VM starts when
collection ends and runs beside the rest of the suite; its tests run last and wait for it.

Runs by default. `BLUEZ_JK_REALBLUEZ=0` leaves it out on a developer's machine; a host
without QEMU, a kernel image, bluetoothd or the `realbluez` extra skips it with the reason.
Under CI (`CI=true`) neither is allowed: the tier must run, a skip fails the run.
Knobs: REALBLUEZ_READS (100), REALBLUEZ_GATEWAY_S (300), REALBLUEZ_ONLY (labels, `|`-separated),
REALBLUEZ_ACCEL (kvm|tcg), REALBLUEZ_DEBUG (bluetoothd -d; a core pattern into the work
dir), REALBLUEZ_WEDGE (run the wedged-controller probe on the real rig too, where it kills
bluetoothd 5.66), REALBLUEZ_BTMON (every controller's HCI traffic into hci.btsnoop in the work
dir, for `btmon -r`),
REALBLUEZ_DEADLINE_S (2400: the whole VM run; it only stops a hung VM, `vm.deadline_s`).
"""

from __future__ import annotations

import os
import tempfile
import threading
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
    "REALBLUEZ_BTMON",
)


def _skip_or_fail(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"real-BlueZ tier must run under CI but cannot: {reason}", pytrace=False)
    pytest.skip(f"REAL-BLUEZ TIER SKIPPED: {reason}")


def _why_not() -> str | None:
    """Why this host does not run the tier, or None when it does."""
    if os.environ.get("BLUEZ_JK_REALBLUEZ") == "0":
        return "BLUEZ_JK_REALBLUEZ=0"
    missing = vm.missing_prerequisites()
    if missing:
        return (
            "missing "
            + "; ".join(missing)
            + " (BLUEZ_JK_REALBLUEZ_SETUP=1 bash tools/setup.sh installs them)"
        )
    return None


class _Background:
    """The VM run, started when collection ends and waited for by the first real-BlueZ test.

    The rest of the suite mostly waits on events (about a quarter of 2 cores), the VM is
    CPU-bound under TCG: side by side the whole run takes about as long as the longer of the
    two instead of their sum."""

    def __init__(self) -> None:
        work = Path(tempfile.mkdtemp(prefix="bluez-jk-realbluez-"))
        env = {k: os.environ[k] for k in ENV_KNOBS if k in os.environ}
        self.launch = vm.Launch(work, env, vm.deadline_s())
        self.launch.start()
        self.thread = threading.Thread(target=self.launch.wait, name="realbluez-vm", daemon=True)
        self.thread.start()

    def result(self) -> vm.Run:
        self.thread.join()
        return self.launch.collect()

    def cancel(self) -> None:
        self.launch.stop.set()
        self.thread.join(60)


_BACKGROUND: list[_Background] = []


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The real-BlueZ tests go last: by the time they wait for the VM it has had the whole
    # rest of the suite to run in.
    items.sort(key=lambda item: "real_run" in getattr(item, "fixturenames", ()))


def pytest_collection_finish(session: pytest.Session) -> None:
    wanted = any("real_run" in getattr(i, "fixturenames", ()) for i in session.items)
    if wanted and not session.config.option.collectonly and _why_not() is None:
        _BACKGROUND.append(_Background())


def pytest_sessionfinish() -> None:
    # An early end (-x, Ctrl-C, a crash of the run) must not leave QEMU behind.
    while _BACKGROUND:
        _BACKGROUND.pop().cancel()


@pytest.fixture(scope="session")
def real_run() -> vm.Run:
    reason = _why_not()
    if reason is not None:
        _skip_or_fail(reason)
    background = _BACKGROUND[0] if _BACKGROUND else _Background()
    if not _BACKGROUND:
        _BACKGROUND.append(background)
    run = background.result()
    table.RESULTS["real"] = run.outcomes
    table.RESULTS["meta"] = [
        {"work": str(run.work), "accel": run.accel, "boot_s": run.boot_s, "total_s": run.total_s}
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
