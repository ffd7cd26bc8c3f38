"""The adapter_recovery policy, decision by decision (gateway/adapter_health.py)."""

from __future__ import annotations

import pytest

from bluez_jk.errors import AdapterNotFound, Busy, ConnectFailed, JkError, Timeout
from bluez_jk.gateway.adapter_health import AdapterHealth, Outcome, outcome
from bluez_jk.reading import new_reading

N = 3
INTERVAL_S = 600.0


def health() -> AdapterHealth:
    return AdapterHealth.for_devices(
        {"a1": "hci0", "a2": "hci0", "b1": "hci1", "d1": None},
        after_failures=N,
        min_interval_s=INTERVAL_S,
    )


def fail(h: AdapterHealth, device: str, times: int, result: Outcome = "failed") -> None:
    for _ in range(times):
        h.record(device, result)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (None, "ok"),
        (Timeout("x", stage="connect"), "failed"),
        (ConnectFailed("x", stage="connect"), "failed"),
        (AdapterNotFound("x", stage="adapter"), "absent"),
        (Busy("x", stage="lock"), "neutral"),
    ],
)
def test_outcome_of_a_reading(error: JkError | None, expected: Outcome) -> None:
    reading = new_reading("a1", "C8:47:80:37:02:E8", "hci0")
    if error is not None:
        reading["error"] = error.to_info()
    assert outcome(reading) == expected


# (failures of a1, failures of a2, busy, seconds since the last cycle or None) -> decision
CASES = [
    ((N, N, False, None), "cycle"),
    ((N + 4, N, False, None), "cycle"),
    ((N, N - 1, False, None), "healthy"),  # one device still below N: not the adapter
    ((0, N + 9, False, None), "healthy"),  # a healthy neighbour proves the adapter works
    ((N, N, True, None), "busy"),
    ((N, N, False, INTERVAL_S - 1), "too_soon"),
    ((N, N, False, INTERVAL_S), "cycle"),
]


@pytest.mark.parametrize(("case", "decision"), CASES)
def test_decision_table(case: tuple[int, int, bool, float | None], decision: str) -> None:
    a1, a2, busy, since = case
    h = health()
    now = 10_000.0
    if since is not None:
        h.cycled("hci0", now - since, ok=True)
    fail(h, "a1", a1)
    fail(h, "a2", a2)
    verdict = h.verdict("hci0", now, busy=busy)
    assert verdict.decision == decision, verdict.reason
    assert verdict.devices == ("a1", "a2")


def test_a_success_in_between_starts_the_count_again() -> None:
    h = health()
    fail(h, "a1", N - 1)
    h.record("a1", "ok")
    fail(h, "a1", N - 1)
    fail(h, "a2", N)
    assert h.verdict("hci0", 0.0).decision == "healthy"


def test_neutral_errors_neither_count_nor_reset() -> None:
    h = health()
    fail(h, "a1", N - 1)
    h.record("a1", "neutral")
    fail(h, "a1", 1)
    fail(h, "a2", N)
    assert h.verdict("hci0", 0.0).decision == "cycle"


def test_a_gone_adapter_is_not_cycled_until_it_is_back_and_fails_again() -> None:
    h = health()
    fail(h, "a1", N)
    fail(h, "a2", N, "absent")
    assert h.verdict("hci0", 0.0).decision == "absent"
    fail(h, "a2", N)  # back, and failing on the radio again
    assert h.verdict("hci0", 0.0).decision == "cycle"


def test_adapters_are_independent_and_the_default_adapter_is_its_own_key() -> None:
    h = health()
    fail(h, "a1", N)
    fail(h, "a2", N)
    fail(h, "b1", N - 1)
    assert h.verdict("hci1", 0.0).decision == "healthy"
    fail(h, "d1", N)
    assert h.verdict(None, 0.0).decision == "cycle"
    assert h.verdict("hci0", 0.0).decision == "cycle"


def test_a_successful_cycle_counts_and_resets_a_failed_one_only_waits() -> None:
    h = health()
    fail(h, "a1", N)
    fail(h, "a2", N)
    h.cycled("hci0", 100.0, ok=False)
    assert h.cycles("hci0") == 0
    assert h.verdict("hci0", 101.0).decision == "too_soon"
    assert h.verdict("hci0", 100.0 + INTERVAL_S).decision == "cycle"
    h.cycled("hci0", 100.0 + INTERVAL_S, ok=True)
    assert h.cycles("hci0") == 1
    assert h.failures["a1"] == h.failures["a2"] == 0
    assert h.cycles("hci1") == 0


def test_moving_a_device_starts_its_count_afresh() -> None:
    h = health()
    fail(h, "a1", N)
    fail(h, "a2", N)
    h.place("a2", "hci1")
    assert h.verdict("hci0", 0.0).decision == "cycle"  # a1 alone, failing
    assert h.failures["a2"] == 0
    assert h.verdict("hci1", 0.0).decision == "healthy"


def test_disabled_and_unused_adapters_are_never_cycled() -> None:
    off = AdapterHealth.for_devices(
        {"a1": "hci0"}, after_failures=1, min_interval_s=10.0, enabled=False
    )
    fail(off, "a1", 5)
    assert off.verdict("hci0", 0.0).decision == "disabled"
    assert health().verdict("hci7", 0.0).decision == "healthy"
