"""Every simulator fault against the reader: transient forms end in a complete read within
timeout_s, persistent ones in their documented error type within timeout_s + 2 s, and every
run leaves the device released and no fds or match rules behind (docs/design.md, "Recovery
policy")."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from bluez_jk.reader import Reader, ReadRequest
from tests.fixtures.bluez import SimHandle
from tests.integration.reader.conftest import (
    ADDRESS,
    FAST,
    assert_device_released,
    assert_reader_clean,
    open_fds,
)

pytestmark = pytest.mark.integration

TRANSIENT = [
    "uncached:1",
    "in-progress:2",
    "connect-abort:2",
    "notify-acquired:1",
    "bad-crc:1",
    "bad-crc:3",
    "drop-mid-frame:1",
    "no-services:1",
    "junk",
    "slow",
    "stale-cache",
    "left-connected",
    "stop-discovery-rejected",
]

PERSISTENT = [
    ("not-advertising", "DeviceNotFound"),
    ("in-progress", "InProgress"),
    ("connect-abort", "ConnectFailed"),
    ("no-services", "ServicesNotResolved"),
    ("notify-acquired", "NotifyAcquired"),
    ("drop-mid-frame", "Disconnected"),
    ("bad-crc", "ProtocolError"),
    ("silent", "Timeout"),
    # BlueZ 5.66 pairs on its own when the CCCD write is refused; without an agent StartNotify
    # (auto's choice there) has no answer: a Timeout that names pairing (issue 12 pairs).
    ("auth-required", "AuthenticationRequired"),
]


async def _read(
    sim_factory: Callable[..., SimHandle],
    monkeypatch: pytest.MonkeyPatch,
    fault: str | list[str],
    timeout_s: float,
) -> tuple[SimHandle, dict[str, object], float]:
    sim = sim_factory(faults=[fault] if isinstance(fault, str) else fault)
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", sim.bus_address)
    async with Reader(timing=FAST) as reader:
        await reader.get_bus()
        fds_before = open_fds()
        started = time.monotonic()
        reading = await reader.read(
            ReadRequest(name="jk1", address=ADDRESS, timeout_s=timeout_s, scan_timeout_s=1.5)
        )
        elapsed = time.monotonic() - started
        await assert_reader_clean(sim, reader)
        assert open_fds() <= fds_before
    return sim, dict(reading), elapsed


@pytest.mark.parametrize("fault", TRANSIENT)
async def test_transient_fault_ends_in_a_complete_read(
    sim_factory: Callable[..., SimHandle], monkeypatch: pytest.MonkeyPatch, fault: str
) -> None:
    timeout_s = 8.0 if fault == "slow" else 4.0
    sim, reading, elapsed = await _read(sim_factory, monkeypatch, fault, timeout_s)
    assert reading["error"] is None, reading["error"]
    assert reading["got"] == {"device_info": True, "cell_info": True, "settings": True}
    assert reading["connected"] is True
    assert elapsed < timeout_s
    assert_device_released(sim)


@pytest.mark.parametrize(("fault", "error_type"), PERSISTENT)
async def test_persistent_fault_ends_in_its_error(
    sim_factory: Callable[..., SimHandle],
    monkeypatch: pytest.MonkeyPatch,
    fault: str,
    error_type: str,
) -> None:
    timeout_s = 2.5
    sim, reading, elapsed = await _read(sim_factory, monkeypatch, fault, timeout_s)
    error = reading["error"]
    assert isinstance(error, dict)
    assert error["type"] == error_type, error
    assert elapsed < timeout_s + 2.0
    if fault == "drop-mid-frame":
        got = reading["got"]
        assert isinstance(got, dict)
        assert got["device_info"] is True  # decoded before the first drop, kept to the end
    if fault == "notify-acquired":
        # The simulated foreign holder keeps its socket; everything of ours is gone.
        sim.clear_faults()
        props = sim.device_props(ADDRESS)
        assert props["Connected"] is False
        assert props["notify_sessions"] == []
    else:
        assert_device_released(sim)


async def test_a_wedged_acquire_notify_is_named_with_the_cure(
    sim_factory: Callable[..., SimHandle], monkeypatch: pytest.MonkeyPatch
) -> None:
    """BlueZ 5.66 never answers an AcquireNotify whose CCCD write the BMS refused and keeps
    FFE1 "Notify acquired" for good (the real-BlueZ tier shows it): NotifyStuck, with the
    restart hint, for that read and for the next one whatever its mode; a bluetoothd restart
    cures it."""
    sim = sim_factory()
    sim.set_fault("auth-required", count=1, address=ADDRESS)  # not re-armed by restart()
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", sim.bus_address)
    async with Reader(timing=FAST) as reader:
        first = await reader.read(
            ReadRequest(name="jk1", address=ADDRESS, timeout_s=4.0, notify_mode="acquire")
        )
        second = await reader.read(ReadRequest(name="jk1", address=ADDRESS, timeout_s=4.0))
    for reading in (first, second):
        error = reading["error"]
        assert error is not None
        assert error["type"] == "NotifyStuck", error
        assert "systemctl restart bluetooth" in error["message"]
    props = sim.device_props(ADDRESS)
    assert props["Connected"] is False
    # Kept: BlueZ 5.66 crashes when a wedged temporary device expires (docs/bluez.md fact 16).
    assert props["Trusted"] is True
    sim.restart()
    async with Reader(timing=FAST) as reader:
        cured = await reader.read(ReadRequest(name="jk1", address=ADDRESS, timeout_s=4.0))
    assert cured["error"] is None, cured["error"]


async def test_a_refused_subscription_times_out_naming_pairing(
    sim_factory: Callable[..., SimHandle], monkeypatch: pytest.MonkeyPatch
) -> None:
    sim, reading, _ = await _read(sim_factory, monkeypatch, "auth-required", 3.0)
    error = reading["error"]
    assert isinstance(error, dict)
    assert error["stage"] == "subscribe"
    assert "pair" in error["message"]
    assert sim.device_props(ADDRESS)["NotifyAcquired"] is False


async def test_rejected_stop_discovery_is_retried(
    sim_factory: Callable[..., SimHandle], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Reader keeps its bus, so a discovery session left running would scan forever."""
    sim, reading, _ = await _read(
        sim_factory, monkeypatch, ["uncached", "stop-discovery-rejected:1"], 4.0
    )
    assert reading["error"] is None, reading["error"]
    events = sim.log()
    starts = [e for e in events if e["event"] == "discovery_start"]
    stops = [e for e in events if e["event"] == "discovery_stop"]
    assert starts
    assert [e["reason"] for e in stops] == ["stop"]
    assert_device_released(sim)
