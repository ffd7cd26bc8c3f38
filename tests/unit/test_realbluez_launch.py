"""The real-BlueZ tier's VM launch (tests/realbluez/vm.py), with a stand-in for QEMU: the part
that runs beside the other tests opens no fd (the reader tests compare their fd tables), the
whole run leaks none, and an early end of the session stops the guest at once."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from tests.realbluez import vm


def open_fds() -> set[int]:
    return {int(fd) for fd in os.listdir("/proc/self/fd")}


def stand_in(script: str) -> list[str]:
    return ["sh", "-c", script]


@pytest.fixture(autouse=True)
def _tcg(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REALBLUEZ_ACCEL", "tcg")  # no KVM probe


def test_a_finished_guest_is_collected_and_nothing_is_left_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "run"
    script = (
        f'touch {work}/booted; echo \'{{"scenario": "s", "ok": true}}\' > '
        f"{work}/results.jsonl; touch {work}/done"
    )
    monkeypatch.setattr(vm, "_command", lambda *_: stand_in(script))
    before = open_fds()
    launch = vm.Launch(work, {}, deadline_s=60)
    launch.start()
    assert open_fds() == before  # the console fd is the child's alone
    seen: list[set[int]] = []

    def watch() -> None:
        while waiter.is_alive():
            seen.append(open_fds())
            time.sleep(0.01)

    waiter = threading.Thread(target=launch.wait)
    waiter.start()
    watch()
    waiter.join()
    assert all(fds == before for fds in seen)
    run = launch.collect()
    assert open_fds() == before
    assert run.complete
    assert run.exit_code == 0
    assert run.boot_s is not None
    assert run.outcomes == [{"scenario": "s", "ok": True}]


def test_stop_ends_a_running_guest_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "run"
    monkeypatch.setattr(vm, "_command", lambda *_: stand_in(f"touch {work}/booted; sleep 600"))
    launch = vm.Launch(work, {}, deadline_s=900)
    launch.start()
    waiter = threading.Thread(target=launch.wait)
    waiter.start()
    deadline = time.monotonic() + 30
    while not (work / "booted").exists():
        assert time.monotonic() < deadline, "the stand-in never started"
        time.sleep(0.05)
    launch.stop.set()
    waiter.join(60)
    assert not waiter.is_alive()
    run = launch.collect()
    assert not run.complete
    assert run.exit_code not in (None, 0)
