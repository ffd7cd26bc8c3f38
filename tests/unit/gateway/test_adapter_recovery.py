"""The scheduler carries out adapter_recovery: a wedged adapter is power-cycled once, with no
read on it in flight, and its devices are read again at once; a healthy one never is."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest

from bluez_jk.errors import AdapterNotFound
from bluez_jk.gateway.config import AdapterRecoveryConfig, DeviceConfig
from bluez_jk.gateway.scheduler import DeviceState, Scheduler
from bluez_jk.reader import ReadRequest
from bluez_jk.reading import Reading
from tests.unit.gateway.fakes import FakeClock, FakeReader
from tests.unit.gateway.test_scheduler import device

N = 5


@dataclass
class WedgeReader(FakeReader):
    """Every read on a wedged adapter fails until `power_cycle` of that adapter."""

    wedged: set[str | None] = field(default_factory=set)
    cycles: list[tuple[str | None, float, int]] = field(default_factory=list)
    flaky: float = 0.0  # chance that a read on another adapter fails
    rng: random.Random = field(default_factory=lambda: random.Random(3))
    gone: set[str | None] = field(default_factory=set)

    async def read(self, req: ReadRequest, *, capture: object = None) -> Reading:
        failing = req.adapter in self.wedged or (
            req.adapter not in self.gone and self.rng.random() < self.flaky
        )
        if failing:
            self.failing.add(req.name)
        else:
            self.failing.discard(req.name)
        reading = await super().read(req)
        if req.adapter in self.gone:
            reading["error"] = AdapterNotFound("no adapter", stage="adapter").to_info()
        return reading

    async def power_cycle(self, adapter: str | None) -> str:
        # A read on the adapter in flight now would break the promise.
        self.cycles.append((adapter, self.clock.now(), self.active[adapter]))
        if adapter in self.gone:
            raise AdapterNotFound(f"no adapter {adapter}", stage="adapter")
        await self.clock.sleep_until(self.clock.now() + 1.0, asyncio.Event())
        self.wedged.discard(adapter)
        return adapter or "hci0"


@asynccontextmanager
async def running(
    devices: list[DeviceConfig], reader: WedgeReader, clock: FakeClock, **recovery: object
) -> AsyncIterator[Scheduler]:
    def on_reading(state: DeviceState, reading: Reading) -> None:
        pass

    scheduler = Scheduler(
        reader,
        devices,
        on_reading,
        clock=clock,
        rng=random.Random(7),
        power=reader,
        recovery=AdapterRecoveryConfig(**recovery),  # type: ignore[arg-type]
    )
    task = asyncio.create_task(scheduler.run())
    await clock.settle()
    try:
        yield scheduler
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def two_adapters() -> list[DeviceConfig]:
    return [
        device("jk1", "hci0", 2),
        device("jk2", "hci0", 2),
        device("jk3", "hci1", 2),
        device("jk4", "hci1", 2),
    ]


async def test_a_wedged_adapter_is_cycled_once_and_its_devices_recover() -> None:
    clock = FakeClock()
    reader = WedgeReader(clock, wedged={"hci0"})
    async with running(two_adapters(), reader, clock) as scheduler:
        await clock.advance(200)
        assert [(a, busy) for a, _, busy in reader.cycles] == [("hci0", 0)]
        at = reader.cycles[0][1]
        for name in ("jk1", "jk2"):
            before = [c for c in reader.calls if c.name == name and c.start < at]
            assert len(before) == N  # exactly N failed reads each, then the cycle
            after = [c for c in reader.calls if c.name == name and c.start > at]
            # Read at once: after the 1 s cycle, and the neighbour's 1 s read at most.
            assert after[0].ok
            assert after[0].start - at <= 2.0 + 0.1
            assert scheduler.devices[name].consecutive_failures == 0
        assert scheduler.health.cycles("hci0") == 1
        assert scheduler.health.cycles("hci1") == 0
    assert reader.overlaps == 0


async def test_a_wedge_that_returns_waits_for_the_minimum_interval() -> None:
    clock = FakeClock()
    reader = WedgeReader(clock, wedged={"hci0"})
    devices = [device("jk1", "hci0", 2)]
    async with running(devices, reader, clock, min_interval_s=300.0) as scheduler:
        await clock.advance(60)  # 5 failed reads with backoff: 2 + 2 + 4 + 8 + 16 s
        assert len(reader.cycles) == 1
        reader.wedged.add("hci0")
        await clock.advance(180)
        assert len(reader.cycles) == 1  # N failures again, but within 300 s
        await clock.advance(200)
        assert len(reader.cycles) == 2
        assert reader.cycles[1][1] - reader.cycles[0][1] >= 300.0
        assert scheduler.health.cycles("hci0") == 2


async def test_a_healthy_adapter_with_random_faults_is_never_cycled() -> None:
    clock = FakeClock()
    reader = WedgeReader(clock, wedged={"hci0"}, flaky=0.3)
    async with running(two_adapters(), reader, clock) as scheduler:
        await clock.advance(900)
        flaky_failures = [c for c in reader.calls if c.adapter == "hci1" and not c.ok]
        assert len(flaky_failures) > 10  # the faults did happen
    assert {a for a, _, _ in reader.cycles} == {"hci0"}
    assert scheduler.health.cycles("hci1") == 0


async def test_a_gone_adapter_is_not_cycled_and_reads_resume_when_it_is_back() -> None:
    clock = FakeClock()
    reader = WedgeReader(clock, gone={"hci0"})
    async with running(two_adapters(), reader, clock) as scheduler:
        await clock.advance(200)
        assert reader.cycles == []
        assert scheduler.devices["jk1"].last_error_type == "AdapterNotFound"
        reader.gone.clear()
        await clock.advance(20)  # at most one capped backoff (16 s) away
        assert scheduler.devices["jk1"].consecutive_failures == 0
        assert scheduler.devices["jk2"].consecutive_failures == 0


async def test_disabled_recovery_never_cycles() -> None:
    clock = FakeClock()
    reader = WedgeReader(clock, wedged={"hci0"})
    async with running(two_adapters(), reader, clock, enabled=False):
        await clock.advance(300)
    assert reader.cycles == []


async def test_a_failed_cycle_is_retried_after_the_minimum_interval_only() -> None:
    clock = FakeClock()
    reader = WedgeReader(clock, wedged={"hci0"})

    async def refuse(adapter: str | None) -> str:
        reader.cycles.append((adapter, clock.now(), reader.active[adapter]))
        raise AdapterNotFound("NotReady", stage="adapter")

    reader.power_cycle = refuse  # type: ignore[method-assign]
    async with running(two_adapters(), reader, clock, min_interval_s=100.0) as scheduler:
        await clock.advance(350)
    starts = [t for _, t, _ in reader.cycles]
    assert 2 <= len(starts) <= 4
    assert all(b - a >= 100.0 for a, b in itertools.pairwise(starts))
    assert scheduler.health.cycles("hci0") == 0
