"""`jk-ble-write` as a process: one JSON object on stdout in every case, exit 0/1/2, the audit
record (source `cli`) in the output and in --state-dir, dry run writes nothing, a refused or
malformed request never reaches the bus, an ignored write exits 1 with `verified: false`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.bluez import SimHandle
from tests.integration.reader.conftest import ADDRESS, assert_device_released

pytestmark = pytest.mark.integration

WRITE = [sys.executable, "-m", "bluez_jk.cli.write"]
REQUESTS = (0x96, 0x97)


def run(argv: list[str], env: dict[str, str], timeout_s: float = 30) -> tuple[int, Any]:
    done = subprocess.run(
        [*WRITE, *argv], check=False, env=env, capture_output=True, text=True, timeout=timeout_s
    )
    assert "Traceback" not in done.stderr, done.stderr
    assert done.stdout.count("\n") == 1, done.stdout
    payload = json.loads(done.stdout)
    assert isinstance(payload, dict)
    return done.returncode, payload


def register_writes(sim: SimHandle) -> list[int]:
    return [e["code"] for e in sim.log() if e["event"] == "write" and e.get("code") not in REQUESTS]


def test_write_off_and_on_verified_with_audit(sim: SimHandle, tmp_path: Path) -> None:
    state = tmp_path / "state"
    base = ["--address", ADDRESS, "--timeout", "10", "--state-dir", str(state)]
    rc, out = run([*base, "--set", "charging=off"], sim.env)
    assert rc == 0, out
    assert (out["ok"], out["verified"], out["before"], out["after"]) == (True, True, 1, 0)
    assert out["audit"]["source"] == "cli"
    assert out["audit"]["outcome"] == "verified"
    rc, out = run([*base, "--set", "charging=true"], sim.env)
    assert (rc, out["after"]) == (0, 1)
    lines = [json.loads(x) for x in (state / "audit.jsonl").read_text().splitlines()]
    assert [line["outcome"] for line in lines] == ["verified", "verified"]
    assert register_writes(sim) == [0x1D, 0x1D]
    assert_device_released(sim)


def test_dry_run_reads_checks_and_writes_nothing(sim: SimHandle) -> None:
    rc, out = run(["--address", ADDRESS, "--set", "max_charge_current=50", "--dry-run"], sim.env)
    assert rc == 0, out
    assert (out["ok"], out["dry_run"], out["before"]) == (True, True, 100.0)
    assert out["frame"].startswith("aa5590eb0c04")
    assert register_writes(sim) == []


@pytest.mark.parametrize(
    ("argv", "reason"),
    [
        (["--set", "max_charge_current=150"], "out_of_safety_bounds"),
        (["--set", "max_charge_current=5000"], "out_of_bms_range"),
        (["--set", "cell_ovp=3.6"], "invalid_request"),
        (["--set", "charging=maybe"], "invalid_request"),
        (["--set", "charging"], "invalid_request"),
        ([], "invalid_request"),
    ],
)
def test_refused_requests_exit_2_and_never_connect(
    sim: SimHandle, argv: list[str], reason: str
) -> None:
    rc, out = run(["--address", ADDRESS, *argv], sim.env)
    assert (rc, out["ok"], out["reason"]) == (2, False, reason)
    assert out["error"]
    assert not [e for e in sim.log() if e["event"] == "connect_call"]


def test_an_ignored_write_exits_1_not_verified(sim: SimHandle) -> None:
    sim.set_fault("ignore-writes")
    rc, out = run(["--address", ADDRESS, "--set", "discharging=false"], sim.env)
    assert (rc, out["verified"], out["reason"]) == (1, False, "not_verified")
    assert out["audit"]["outcome"] == "not_verified"


def test_config_allow_list_applies(sim: SimHandle, tmp_path: Path) -> None:
    config = {
        "state_dir": str(tmp_path / "state"),
        "devices": [
            {"name": "jk1", "address": ADDRESS, "control": {"allow": ["balancing"]}},
        ],
    }
    path = tmp_path / "gw.json"
    path.write_text(json.dumps(config))
    rc, out = run(["--config", str(path), "--name", "jk1", "--set", "charging=false"], sim.env)
    assert (rc, out["reason"]) == (2, "not_allowed")
    audit = (tmp_path / "state" / "audit.jsonl").read_text().splitlines()
    assert json.loads(audit[0])["outcome"] == "refused"
    assert register_writes(sim) == []


def test_version_and_help() -> None:
    done = subprocess.run([*WRITE, "--version"], check=False, capture_output=True, text=True)
    assert done.returncode == 0
    assert done.stdout.startswith("jk-ble-write ")
    done = subprocess.run([*WRITE, "--help"], check=False, capture_output=True, text=True)
    assert done.returncode == 0
    assert "--dry-run" in done.stdout
    assert "charging" in done.stdout
