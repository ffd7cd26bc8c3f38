"""`Reader.follow`: stays connected, hands out Readings from the BMS's own stream, gives the
adapter lock back while it only listens, reconnects after a drop, cleans up when cancelled."""

from __future__ import annotations

import asyncio

import pytest

from bluez_jk.adapter_lock import AdapterLock
from bluez_jk.reader import Reader, ReadRequest
from bluez_jk.reading import Reading
from tests.fixtures.bluez import SimHandle
from tests.integration.reader.conftest import (
    ADDRESS,
    assert_device_released,
    assert_reader_clean,
    open_fds,
)

pytestmark = pytest.mark.integration


async def test_follow_streams_reconnects_and_cleans_up(sim: SimHandle, reader: Reader) -> None:
    readings: list[Reading] = []
    arrived = asyncio.Event()

    def on_reading(reading: Reading) -> None:
        readings.append(reading)
        arrived.set()

    async def next_reading(timeout_s: float = 5.0) -> Reading:
        arrived.clear()
        async with asyncio.timeout(timeout_s):
            await arrived.wait()
        return readings[-1]

    fds_before = open_fds()
    req = ReadRequest(name="jk1", address=ADDRESS, timeout_s=5)
    task = asyncio.create_task(reader.follow(req, on_reading, interval_s=0.2))
    try:
        first = await next_reading()
        assert first["error"] is None
        assert first["got"]["cell_info"] is True
        # While it only listens, another BLE operation on the adapter may run.
        async with AdapterLock("hci0", timeout_s=1):
            pass
        connects_before = sum(e["event"] == "connected" for e in sim.log())
        await asyncio.to_thread(sim.drop_link, ADDRESS)
        # Readings go on after the drop, from a new connection.
        for _ in range(20):
            reading = await next_reading()
            if sum(e["event"] == "connected" for e in sim.log()) > connects_before:
                break
        else:
            pytest.fail("follow did not reconnect after the drop")
        assert reading["error"] is None
        reading = await next_reading()
        assert reading["error"] is None
        assert reading["connected"] is True
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert_device_released(sim)
    await assert_reader_clean(sim, reader)
    assert open_fds() <= fds_before
