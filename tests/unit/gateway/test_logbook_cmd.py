"""cmd/logbook in the gateway, driven directly with the fake reader and clock: requests at the
same time share one read, a paused device is refused with the entries kept, and a request in
flight at shutdown is still answered."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bluez_jk.gateway.service import Gateway
from bluez_jk.reader import ReadRequest
from bluez_jk.reading import LogbookEntry, Reading
from tests.unit.gateway.fakes import FakeClock, FakeReader
from tests.unit.gateway.test_commands import answers, make_config

ENTRIES: list[LogbookEntry] = [
    {"t": 10, "code": 1, "event": "boot"},
    {"t": 20, "code": 7, "event": "remote_charge_off"},
]
ON = {"logbook": {"enabled": True, "interval_s": 0}}


class LogbookReader(FakeReader):
    """The fake reader, answering a logbook request with ENTRIES."""

    async def read(
        self, req: ReadRequest, *, capture: Callable[[bytes], None] | None = None
    ) -> Reading:
        reading = await super().read(req, capture=capture)
        if req.logbook:
            reading["logbook"] = {"status": "ok", "message": None, "entries": list(ENTRIES)}
        return reading


def make(state_dir: Path) -> tuple[Gateway, LogbookReader, FakeClock]:
    clock = FakeClock()
    reader = LogbookReader(clock)
    return Gateway(make_config(state_dir, **ON), reader, clock=clock), reader, clock


async def until(clock: FakeClock, done: Callable[[], bool]) -> None:
    """Advance the fake clock (reads) and give worker threads (file I/O) real time."""
    deadline = time.monotonic() + 20
    while not done():
        assert time.monotonic() < deadline, "not done within 20 s"
        await clock.advance(0.1)
        await asyncio.sleep(0.005)


def results(gateway: Gateway) -> list[dict[str, Any]]:
    return answers(gateway.links["jk1"], "cmd/logbook")


def published(gateway: Gateway) -> list[dict[str, Any]]:
    link = gateway.links["jk1"]
    return [json.loads(m.payload) for m in link._queue if m.topic == "b/jk/jk1/logbook"]


async def test_requests_at_the_same_time_share_one_read(tmp_path: Path) -> None:
    gateway, reader, clock = await asyncio.to_thread(make, tmp_path)
    gateway.handle_message("b/jk/jk1/cmd/logbook", b"")
    gateway.handle_message("b/jk/jk1/cmd/logbook", b'{"read": true}')
    await until(clock, lambda: len(results(gateway)) == 2)
    assert len(reader.calls) == 1
    assert all(r["ok"] and r["count"] == 2 for r in results(gateway))
    assert [(e["t"], e["code"]) for e in published(gateway)] == [(10, 1), (20, 7)]
    gateway.handle_message("b/jk/jk1/cmd/logbook", b"")
    await until(clock, lambda: len(results(gateway)) == 3)
    assert len(reader.calls) == 2
    assert results(gateway)[-1]["new"] == 0
    assert len(published(gateway)) == 2


async def test_a_paused_device_is_refused_with_the_entries_kept(tmp_path: Path) -> None:
    gateway, reader, clock = await asyncio.to_thread(make, tmp_path)
    gateway.handle_message("b/jk/jk1/cmd/logbook", b"")
    await until(clock, lambda: len(results(gateway)) == 1)
    gateway.scheduler.pause("jk1", 5)
    gateway.handle_message("b/jk/jk1/cmd/logbook", b"")
    await until(clock, lambda: len(results(gateway)) == 2)
    refused = results(gateway)[-1]
    assert (refused["ok"], refused["read"], refused["count"]) == (False, False, 2)
    assert "paused" in refused["error"]
    assert len(reader.calls) == 1


async def test_a_request_in_flight_at_shutdown_is_answered(tmp_path: Path) -> None:
    gateway, reader, clock = await asyncio.to_thread(make, tmp_path)
    reader.duration_s = 1000.0
    gateway.handle_message("b/jk/jk1/cmd/logbook", b"")
    await until(clock, lambda: bool(reader.calls))
    await gateway.logbook.close(1.0)
    assert reader.cancelled == ["jk1"]
    assert [r["error"] for r in results(gateway)] == ["cancelled: the gateway is stopping"]
