"""Issue 18, item 11: after the D-Bus daemon restarts, closing the dropped connection must
retrieve its cause, or asyncio logs "Future exception was never retrieved ... EOFError"."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest

from bluez_jk.reader import Reader, ReadRequest
from tests.fixtures.bluez import SimHandle
from tests.integration.reader.conftest import ADDRESS

pytestmark = pytest.mark.integration


async def test_no_unretrieved_future_after_a_bus_restart(sim: SimHandle, reader: Reader) -> None:
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        req = ReadRequest(name="jk1", address=ADDRESS, timeout_s=5)
        assert (await reader.read(req))["error"] is None
        await asyncio.to_thread(sim.restart_bus)
        reading = await reader.read(req)
        assert reading["error"] is None, reading["error"]
        for _ in range(3):  # the dropped connection and its futures are garbage now
            gc.collect()
            await asyncio.sleep(0.05)
    finally:
        loop.set_exception_handler(previous)
    messages = [str(c.get("message")) for c in reported]
    assert not any("never retrieved" in m for m in messages), messages
