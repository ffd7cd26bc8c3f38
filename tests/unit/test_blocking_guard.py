"""The blocking-call guard of tests/conftest.py is on: bluez_jk code that blocks on a loop's
thread fails the test, the same code off the loop passes."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import pytest
from blockbuster import BlockingError

from bluez_jk.gateway.state import write_atomic
from tests.fixtures.blocking import BLOCKING_MARK, blocking_calls_in, guarded_command


async def test_a_blocking_call_on_the_loop_fails(tmp_path: Path) -> None:
    with pytest.raises(BlockingError):
        write_atomic(tmp_path / "state.json", b"{}")  # mkdir, write, two fsyncs
    assert not (tmp_path / "state.json").exists()


async def test_the_same_call_on_a_worker_thread_passes(tmp_path: Path) -> None:
    await asyncio.to_thread(write_atomic, tmp_path / "state.json", b"{}")
    assert (tmp_path / "state.json").read_bytes() == b"{}"


def test_without_a_loop_nothing_is_checked(tmp_path: Path) -> None:
    write_atomic(tmp_path / "state.json", b"{}")
    assert (tmp_path / "state.json").exists()


def test_a_guarded_program_reports_what_it_swallowed(tmp_path: Path) -> None:
    root = Path(__file__).parents[2]
    done = subprocess.run(
        guarded_command("tests.fixtures.blocking_probe", str(tmp_path / "state.json")),
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert blocking_calls_in(done.stderr) == [f"{BLOCKING_MARK}os.mkdir"]
