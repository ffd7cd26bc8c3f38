"""A fake clock and a fake reader that let the scheduler run hours in milliseconds."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from bluez_jk.errors import Timeout
from bluez_jk.reader import ReadRequest
from bluez_jk.reading import Reading, new_reading


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0
        self._tick = asyncio.Event()

    def now(self) -> float:
        return self.t

    async def sleep_until(self, deadline: float, wake: asyncio.Event) -> None:
        while self.t < deadline - 1e-9 and not wake.is_set():
            tick = asyncio.ensure_future(self._tick.wait())
            woken = asyncio.ensure_future(wake.wait())
            try:
                await asyncio.wait({tick, woken}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                tick.cancel()
                woken.cancel()

    async def settle(self) -> None:
        for _ in range(30):
            await asyncio.sleep(0)

    async def advance(self, seconds: float, step: float = 0.05) -> None:
        end = self.t + seconds
        while self.t < end - 1e-9:
            self.t = min(end, self.t + step)
            tick, self._tick = self._tick, asyncio.Event()
            tick.set()
            await self.settle()


@dataclass
class Call:
    name: str
    adapter: str | None
    start: float
    end: float | None = None
    ok: bool = True


@dataclass
class FakeReader:
    clock: FakeClock
    duration_s: float = 1.0
    failing: set[str] = field(default_factory=set)
    fail_duration_s: float | None = None
    calls: list[Call] = field(default_factory=list)
    active: dict[str | None, int] = field(default_factory=lambda: defaultdict(int))
    overlaps: int = 0
    cancelled: list[str] = field(default_factory=list)
    follows: list[ReadRequest] = field(default_factory=list)

    async def read(
        self, req: ReadRequest, *, capture: Callable[[bytes], None] | None = None
    ) -> Reading:
        call = Call(req.name, req.adapter, self.clock.now())
        self.calls.append(call)
        self.active[req.adapter] += 1
        if self.active[req.adapter] > 1:
            self.overlaps += 1
        failing = req.name in self.failing
        duration = self.duration_s
        if failing and self.fail_duration_s is not None:
            duration = self.fail_duration_s
        try:
            await self.clock.sleep_until(call.start + duration, asyncio.Event())
        except asyncio.CancelledError:
            self.cancelled.append(req.name)
            raise
        finally:
            self.active[req.adapter] -= 1
            call.end = self.clock.now()
        reading = new_reading(req.name, req.address, req.adapter)
        if failing:
            call.ok = False
            reading["error"] = Timeout("no answer", stage="collect").to_info()
        else:
            reading["connected"] = True
            reading["protocol"] = "JK02_32S"
            reading["got"] = {"device_info": True, "cell_info": True, "settings": False}
            reading["status"]["last_update"] = 1771097625.5
            reading["status"]["cell_info"] = {"voltages": [3.3, 3.31], "total_voltage": 6.61}
            reading["status"]["device_info"] = {"serial_number": f"SN{req.name}", "sw_rev": "19"}
        return reading

    async def follow(
        self, req: ReadRequest, on_reading: Callable[[Reading], None], interval_s: float
    ) -> None:
        self.follows.append(req)
        try:
            while True:
                await self.clock.sleep_until(self.clock.now() + interval_s, asyncio.Event())
                reading = new_reading(req.name, req.address, req.adapter)
                on_reading(reading)
        except asyncio.CancelledError:
            self.cancelled.append(req.name)
            raise

    def starts(self, name: str) -> list[float]:
        return [c.start for c in self.calls if c.name == name]
