"""The same scenarios against our simulator, and the two columns compared.

The simulator is the fast tier; real BlueZ is the judge. A scenario whose outcome differs
between them fails here unless the difference is understood and listed in
`table.KNOWN_DIFFERENCES` (and in docs/bluez.md section 8)."""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from typing import Any

import pytest

from tests.fixtures.bluez import SimHandle
from tests.realbluez import table, vm
from tests.realbluez.labels import (
    after_gateway_labels,
    probe_labels,
    reads,
    real_labels,
    selected,
    standard_labels,
)
from tests.realbluez.pairing import lost_bond
from tests.realbluez.probes import all_probes
from tests.realbluez.scenarios import Outcome, run_steps, standard
from tests.realbluez.sim_rig import SimRig

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def sim_outcomes() -> dict[str, dict[str, Any]]:
    handle = SimHandle(devices=SimRig.device_args(), timing="fast").start()
    outcomes: list[Outcome] = []
    try:
        rig = SimRig(handle, tempfile.mkdtemp(prefix="bluez-jk-sim-locks-"))
        only = os.environ.get("REALBLUEZ_ONLY", "")
        with pytest.MonkeyPatch.context() as mp:
            # The in-process Reader finds the bus and the lock dir like the tools do.
            mp.setenv("DBUS_SYSTEM_BUS_ADDRESS", handle.bus_address)
            mp.setenv("BLUEZ_JK_LOCK_DIR", rig.env["BLUEZ_JK_LOCK_DIR"])
            asyncio.run(run_steps(rig, standard(reads()), outcomes.append, only))
    finally:
        handle.stop()
    # The probes compare single calls, so the simulator plays BlueZ's own timing for them.
    handle = SimHandle(devices=SimRig.device_args(), timing="real").start()
    try:
        rig = SimRig(handle, tempfile.mkdtemp(prefix="bluez-jk-sim-locks-"))
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("DBUS_SYSTEM_BUS_ADDRESS", handle.bus_address)
            asyncio.run(run_steps(rig, [*all_probes(), lost_bond], outcomes.append, only))
    finally:
        handle.stop()
    table.RESULTS["sim"] = [json.loads(o.to_json()) for o in outcomes]
    return {o.scenario: json.loads(o.to_json()) for o in outcomes}


@pytest.mark.timeout(900)
@pytest.mark.parametrize("label", [*standard_labels(), *probe_labels(), *after_gateway_labels()])
def test_on_the_simulator(sim_outcomes: dict[str, dict[str, Any]], label: str) -> None:
    if not selected(label):
        pytest.skip("not in REALBLUEZ_ONLY")
    outcome = sim_outcomes.get(label)
    assert outcome is not None, f"{label!r} did not report"
    assert outcome["ok"], f"{outcome['summary']}\n{json.dumps(outcome['details'], default=str)}"


def kind(outcome: dict[str, Any]) -> str:
    """What is compared: the verdict and, for a failed read, the error type."""
    err = outcome.get("details", {}).get("error")
    error_type = err.get("type") if isinstance(err, dict) else None
    return f"{'pass' if outcome['ok'] else 'FAIL'}/{error_type or '-'}"


@pytest.mark.timeout(vm.deadline_s() + 120)
def test_no_unexplained_difference(
    sim_outcomes: dict[str, dict[str, Any]], real_run: vm.Run
) -> None:
    real = {o["scenario"]: o for o in real_run.outcomes}
    differences = []
    for label in [*standard_labels(), *probe_labels(), *after_gateway_labels()]:
        if not selected(label) or label not in real or label not in sim_outcomes:
            continue
        if label in table.KNOWN_DIFFERENCES:
            continue
        sim_steps = sim_outcomes[label]["details"].get("steps")
        real_steps = real[label]["details"].get("steps")
        if sim_steps is not None and sim_steps != real_steps:
            differences.append(f"{label}:\n  simulator {sim_steps}\n  real      {real_steps}")
        elif kind(sim_outcomes[label]) != kind(real[label]):
            differences.append(
                f"{label}: simulator {kind(sim_outcomes[label])} "
                f"({sim_outcomes[label]['summary']}), real {kind(real[label])} "
                f"({real[label]['summary']})"
            )
    assert not differences, "unexplained differences:\n" + "\n".join(differences)
    assert set(real_labels()) >= set(standard_labels())
