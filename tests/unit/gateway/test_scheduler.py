"""Scheduling logic with a fake reader and a fake clock."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import statistics
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from bluez_jk.gateway.config import DeviceConfig
from bluez_jk.gateway.scheduler import AdapterGate, DeviceState, Scheduler, backoff_s
from bluez_jk.reading import Reading, new_reading
from tests.unit.gateway.fakes import FakeClock, FakeReader


def device(name: str, adapter: str | None, interval: float = 10.0, **kw: object) -> DeviceConfig:
    index = int(name[-1])
    settings: dict[str, object] = {"timeout_s": 5.0, **kw}
    return DeviceConfig(
        name=name,
        address=f"C8:47:80:37:02:E{index}",
        adapter=adapter,
        poll_interval_s=interval,
        **settings,  # type: ignore[arg-type]
    )


@asynccontextmanager
async def running(
    devices: list[DeviceConfig], reader: FakeReader, clock: FakeClock
) -> AsyncIterator[tuple[Scheduler, list[tuple[str, Reading]]]]:
    seen: list[tuple[str, Reading]] = []

    def on_reading(state: DeviceState, reading: Reading) -> None:
        seen.append((state.name, reading))

    scheduler = Scheduler(reader, devices, on_reading, clock=clock, rng=random.Random(7))
    task = asyncio.create_task(scheduler.run())
    await clock.settle()
    try:
        yield scheduler, seen
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def test_backoff_doubles_and_is_capped() -> None:
    assert [backoff_s(10, k) for k in range(6)] == [10, 10, 20, 40, 80, 80]
    assert backoff_s(60, 10) == 300
    assert backoff_s(0.5, 100) == 4.0


async def test_each_device_on_its_own_interval_with_bounded_jitter() -> None:
    clock = FakeClock()
    reader = FakeReader(clock, duration_s=1.0)
    devices = [device("jk1", "hci0", 10), device("jk2", "hci1", 4)]
    async with running(devices, reader, clock) as (_, seen):
        await clock.advance(100)
    for name, interval in (("jk1", 10), ("jk2", 4)):
        starts = reader.starts(name)
        gaps = [b - a for a, b in itertools.pairwise(starts)]
        # Jitter: at most 5 % of the interval (and 0.5 s) either way, averaging out.
        spread = min(0.5, interval / 20) + 0.06
        assert all(interval - spread <= g <= interval + spread for g in gaps)
        assert abs(statistics.mean(gaps) - interval) < spread / 2
    # Every read that ran to its end was recorded (the one cut by the shutdown was not).
    assert len(seen) == len(reader.calls) - len(reader.cancelled)
    assert reader.overlaps == 0


async def test_one_read_per_adapter_adapters_in_parallel() -> None:
    clock = FakeClock()
    reader = FakeReader(clock, duration_s=3.0)
    devices = [device("jk1", "hci0", 2), device("jk2", "hci0", 2), device("jk3", "hci1", 2)]
    async with running(devices, reader, clock):
        await clock.advance(60)
    assert reader.overlaps == 0
    # Reads on hci0 and hci1 did overlap in time: the adapters work in parallel.
    hci0 = [(c.start, c.end) for c in reader.calls if c.adapter == "hci0" and c.end]
    hci1 = [(c.start, c.end) for c in reader.calls if c.adapter == "hci1" and c.end]
    assert any(a0 < b1 and a1 < b0 for a0, b0 in hci0 for a1, b1 in hci1)
    # Two 3 s reads on one adapter share it: each still reads about every 6 s.
    assert len(reader.starts("jk1")) >= 8
    assert len(reader.starts("jk2")) >= 8


async def test_failing_device_backs_off_and_never_delays_healthy_ones() -> None:
    clock = FakeClock()
    reader = FakeReader(clock, duration_s=1.0, failing={"jk2"}, fail_duration_s=5.0)
    devices = [device("jk1", "hci0", 5), device("jk2", "hci0", 5), device("jk3", "hci1", 5)]
    async with running(devices, reader, clock) as (scheduler, _):
        await clock.advance(300)
        assert scheduler.devices["jk2"].consecutive_failures >= 5
    failing = reader.starts("jk2")
    gaps = [b - a for a, b in itertools.pairwise(failing)]
    assert gaps[-1] >= 40 - 0.1  # capped at 8 x the interval
    assert len(failing) < 15
    # The other adapter is untouched; the neighbour on hci0 waits at most one failing read.
    for name, slack in (("jk3", 0.56), ("jk1", 5.56)):
        starts = reader.starts(name)
        gaps = [b - a for a, b in itertools.pairwise(starts)]
        assert max(gaps) <= 5 + slack, (name, gaps)


async def test_recovers_by_itself_when_the_fault_clears() -> None:
    clock = FakeClock()
    reader = FakeReader(clock, failing={"jk1"})
    async with running([device("jk1", "hci0", 2)], reader, clock) as (scheduler, seen):
        await clock.advance(60)
        assert scheduler.devices["jk1"].consecutive_failures > 3
        reader.failing.clear()
        await clock.advance(17)  # at most one capped backoff (16 s) away
        state = scheduler.devices["jk1"]
        assert state.consecutive_failures == 0
        assert seen[-1][1]["error"] is None


async def test_cmd_read_now_and_coalesced_with_a_read_in_flight() -> None:
    clock = FakeClock()
    reader = FakeReader(clock, duration_s=2.0)
    async with running([device("jk1", "hci0", 100)], reader, clock) as (scheduler, _):
        await clock.advance(5)  # first read done (start jitter <= 2 s)
        assert len(reader.calls) == 1
        assert scheduler.request_read("jk1") is True
        await clock.settle()
        assert len(reader.calls) == 2
        assert reader.calls[-1].start == clock.now()  # at once, not on the next tick
        # While that read runs, further requests join it.
        assert scheduler.request_read("jk1") is False
        assert scheduler.request_read("jk1") is False
        await clock.advance(10)
        assert len(reader.calls) == 2


async def test_pause_releases_the_link_at_once_and_resumes() -> None:
    clock = FakeClock()
    reader = FakeReader(clock, duration_s=5.0)
    async with running([device("jk1", "hci0", 10)], reader, clock) as (scheduler, seen):
        await clock.advance(2.5)  # a read is in flight
        assert reader.active["hci0"] == 1
        scheduler.pause("jk1", 1)
        await clock.settle()
        assert reader.cancelled == ["jk1"]
        assert reader.active["hci0"] == 0
        count = len(reader.calls)
        assert scheduler.request_read("jk1") is True  # ignored while paused
        await clock.advance(55)
        assert len(reader.calls) == count
        scheduler.pause("jk1", 0)
        await clock.advance(0.1)
        assert len(reader.calls) == count + 1
        assert not seen or seen[-1][1]["name"] == "jk1"


async def test_reconfigure_changes_the_rate() -> None:
    clock = FakeClock()
    reader = FakeReader(clock, duration_s=0.5)
    async with running([device("jk1", "hci0", 30)], reader, clock) as (scheduler, _):
        await clock.advance(3)
        assert len(reader.calls) == 1
        scheduler.reconfigure("jk1", device("jk1", "hci1", 2))
        await clock.advance(20)
        assert len(reader.calls) >= 9
        assert reader.calls[-1].adapter == "hci1"


async def test_keep_connected_follows_and_restarts_on_reconfigure() -> None:
    clock = FakeClock()
    reader = FakeReader(clock)
    config = device("jk1", "hci0", 1, keep_connected=True)
    async with running([config], reader, clock) as (scheduler, seen):
        await clock.advance(10)
        assert len(reader.follows) == 1
        assert len(seen) >= 7
        assert scheduler.request_read("jk1") is False  # the stream already delivers
        scheduler.reconfigure("jk1", device("jk1", "hci0", 2, keep_connected=True))
        await clock.advance(5)
        assert reader.cancelled == ["jk1"]
        assert [r.adapter for r in reader.follows] == ["hci0", "hci0"]


async def test_a_reader_that_raises_becomes_an_error_reading() -> None:
    clock = FakeClock()

    class Broken(FakeReader):
        async def read(self, req, *, capture=None):  # type: ignore[no-untyped-def]
            raise RuntimeError("bug")

    reader = Broken(clock)
    async with running([device("jk1", "hci0", 1)], reader, clock) as (scheduler, seen):
        await clock.advance(10)
        assert seen
        assert all(r["error"] and r["error"]["type"] == "BusError" for _, r in seen)
        assert scheduler.devices["jk1"].attempts == len(seen)


async def test_gate_serves_healthy_devices_first() -> None:
    gate = AdapterGate()
    order: list[str] = []
    release = asyncio.Event()

    async def holder() -> None:
        async with gate.turn():
            await release.wait()

    async def user(name: str, priority: int) -> None:
        async with gate.turn(priority):
            order.append(name)

    first = asyncio.create_task(holder())
    await asyncio.sleep(0)
    tasks = [
        asyncio.create_task(user("failing", 1)),
        asyncio.create_task(user("healthy-a", 0)),
        asyncio.create_task(user("healthy-b", 0)),
    ]
    cancelled = asyncio.create_task(user("cancelled", 0))
    await asyncio.sleep(0)
    cancelled.cancel()
    await asyncio.sleep(0)
    release.set()
    await asyncio.gather(first, *tasks)
    assert order == ["healthy-a", "healthy-b", "failing"]
    assert not gate.held


async def test_gate_never_starves_a_failing_device_behind_busy_healthy_ones() -> None:
    """Two healthy devices always due again (they queue anew as soon as they are served): the
    failing one still gets its turn after being overtaken MAX_OVERTAKEN times."""
    gate = AdapterGate()
    order: list[str] = []
    stop = asyncio.Event()

    async def healthy(name: str) -> None:
        while not stop.is_set():
            async with gate.turn(0):
                order.append(name)
                await asyncio.sleep(0)

    async def failing() -> None:
        async with gate.turn(1):
            order.append("failing")
        stop.set()

    busy = [asyncio.create_task(healthy("a")), asyncio.create_task(healthy("b"))]
    await asyncio.sleep(0)
    waiting = asyncio.create_task(failing())
    await asyncio.wait_for(waiting, 5)
    await asyncio.gather(*busy)
    # Ahead of it: the holder and the waiter it found (2), one more taking a turn between
    # its arrival and its queueing, then the later arrivals it lets pass.
    assert order.index("failing") <= 3 + AdapterGate.MAX_OVERTAKEN, order
    assert not gate.held


async def test_gate_recovery_goes_ahead_of_a_starved_waiter() -> None:
    gate = AdapterGate()
    order: list[str] = []
    releases = [asyncio.Event() for _ in range(4)]

    async def user(name: str, priority: int, release: asyncio.Event | None = None) -> None:
        async with gate.turn(priority):
            order.append(name)
            if release is not None:
                await release.wait()

    tasks = [asyncio.create_task(user("h0", 0, releases[0]))]
    await asyncio.sleep(0)
    tasks.append(asyncio.create_task(user("failing", 1)))
    for k in (1, 2):  # two later healthy arrivals overtake it
        tasks.append(asyncio.create_task(user(f"h{k}", 0, releases[k])))
        await asyncio.sleep(0)
        releases[k - 1].set()
        await asyncio.sleep(0)
    tasks.append(asyncio.create_task(user("recovery", -1)))
    await asyncio.sleep(0)
    releases[2].set()
    await asyncio.gather(*tasks)
    assert order == ["h0", "h1", "h2", "recovery", "failing"]


async def test_a_slow_adapter_still_reads_its_failing_device() -> None:
    """Reads of 5 s on a 2 s interval keep the healthy devices of hci1 always due (what a
    bluetoothd restart did to the VM's gateway); the failing jk3 is still tried every few
    turns, not starved for minutes."""
    clock = FakeClock()
    reader = FakeReader(clock, duration_s=5.0, failing={"jk3"})
    devices = [device("jk1", "hci1", 2), device("jk2", "hci1", 2), device("jk3", "hci1", 2)]
    async with running(devices, reader, clock):
        await clock.advance(300, step=0.5)
    tries = reader.starts("jk3")
    # Its backoff is capped at 16 s for a 2 s interval; the wait for its turn adds at most
    # MAX_OVERTAKEN + 1 reads of 5 s.
    assert len(tries) >= 300 / 45, tries
    assert max(b - a for a, b in itertools.pairwise(tries)) < 45, tries
    assert reader.overlaps == 0


async def test_a_bug_in_one_device_loop_never_stops_the_others() -> None:
    clock = FakeClock()
    reader = FakeReader(clock, duration_s=0.2)
    calls = {"n": 0}

    def on_reading(state: DeviceState, reading: Reading) -> None:
        pass

    scheduler = Scheduler(
        reader, [device("jk1", "hci0", 1), device("jk2", "hci1", 1)], on_reading, clock=clock
    )
    original = scheduler._read

    async def buggy(state: DeviceState) -> None:
        if state.name == "jk1" and calls["n"] < 2:
            calls["n"] += 1
            raise KeyError("bug")
        await original(state)

    scheduler._read = buggy  # type: ignore[method-assign]
    task = asyncio.create_task(scheduler.run())
    try:
        await clock.advance(20, step=0.1)
        assert len(reader.starts("jk2")) >= 17  # never interrupted
        assert len(reader.starts("jk1")) >= 5  # restarted after each bug
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_a_silent_bms_does_not_starve_its_healthy_neighbour() -> None:
    # Issue 18, item 3: 2 s poll, 20 s timeout, one BMS silent. Counted from the start of a
    # 20 s read, the capped 16 s backoff made the failing device due again the moment it let
    # go, and the healthy one got a read in only now and then.
    clock = FakeClock()
    reader = FakeReader(clock, duration_s=0.5, failing={"jk2"}, fail_duration_s=20.0)
    devices = [
        device("jk1", "hci0", 2, timeout_s=20.0),
        device("jk2", "hci0", 2, timeout_s=20.0),
    ]
    async with running(devices, reader, clock):
        await clock.advance(90, step=0.1)
    healthy = reader.starts("jk1")
    assert len(healthy) >= 15, healthy
    failing = [c for c in reader.calls if c.name == "jk2" and c.end is not None]
    # The backoff runs from the end of each failed read: never due the moment it let go.
    for done, following in itertools.pairwise(failing):
        assert following.start - (done.end or 0) >= 2 - 0.11
    assert reader.overlaps == 0


class SilentFollower(FakeReader):
    """A kept link that delivers one Reading and then nothing (a hung stream)."""

    swallow_cancel: bool = False

    async def follow(self, req, on_reading, interval_s):  # type: ignore[no-untyped-def]
        self.follows.append(req)
        reading = new_reading(req.name, req.address, req.adapter)
        on_reading(reading)
        while True:
            try:
                await self.clock.sleep_until(self.clock.now() + 3600, asyncio.Event())
            except asyncio.CancelledError:
                self.cancelled.append(req.name)
                if not self.swallow_cancel:
                    raise


async def test_keep_connected_without_readings_is_an_error_and_reconnects() -> None:
    # Issue 18, item 1: a stream that stops delivering must not leave the device looking
    # alive; the scheduler gives the session up, records an error Reading and reconnects.
    clock = FakeClock()
    reader = SilentFollower(clock)
    config = device("jk1", "hci0", 1, keep_connected=True)
    async with running([config], reader, clock) as (scheduler, seen):
        await clock.advance(30)
        assert len(seen) == 1
        assert seen[0][1]["error"] is None
        await clock.advance(10)  # max(3 x 1 s, 5 s) + 30 s grace has passed
        errors = [r for _, r in seen if r["error"] is not None]
        assert errors
        assert errors[0]["error"]["type"] == "Timeout"
        assert reader.cancelled == ["jk1"]
        assert len(reader.follows) == 2  # a new session after the failure backoff
        assert scheduler.devices["jk1"].attempts == 3  # first, error, first of the new one


async def test_watchdog_sees_a_kept_device_whose_reader_hangs() -> None:
    clock = FakeClock()
    reader = SilentFollower(clock)
    reader.swallow_cancel = True  # cancellation cannot end it: a truly hung reader
    config = device("jk1", "hci0", 1, keep_connected=True)
    scheduler = Scheduler(reader, [config], lambda s, r: None, clock=clock)
    task = asyncio.create_task(scheduler.run())
    try:
        await clock.advance(30)
        assert scheduler.stuck() == []
        await clock.advance(120, step=0.5)
        assert scheduler.stuck() == ["jk1"]
    finally:
        task.cancel()
        reader.swallow_cancel = False
        with contextlib.suppress(asyncio.CancelledError):
            await task
