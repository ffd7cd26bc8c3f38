"""`Reader.run_session`, the one error boundary of read, follow and the verified write: what a
conversation with the subscribed BMS raises comes back in the Reading, with the stage reached,
and the device is released."""

from __future__ import annotations

import pytest

from bluez_jk.errors import ProtocolError
from bluez_jk.reader import Link, Reader, ReadRequest, SessionStage, Unrecoverable, handshake
from tests.fixtures.bluez import SimHandle
from tests.integration.reader.conftest import ADDRESS, assert_device_released

pytestmark = pytest.mark.integration

REQ = ReadRequest(name="jk1", address=ADDRESS, timeout_s=5)


async def test_an_unexpected_error_is_a_typed_error_at_the_stage_reached(
    sim: SimHandle, reader: Reader
) -> None:
    async def broken(link: Link) -> None:
        await handshake(link)
        link.enter(SessionStage.WRITE)
        raise RuntimeError("a bug in a conversation")

    reading = await reader.run_session(REQ, broken)
    error = reading["error"]
    assert error is not None
    assert error["type"] == "BusError"
    assert error["stage"] == "write"
    assert "a bug in a conversation" in error["message"]
    assert reading["got"]["cell_info"] is True  # what was read before the failure is kept
    assert reading["connected"] is True
    assert_device_released(sim)


async def test_unrecoverable_ends_the_session_without_a_retry(
    sim: SimHandle, reader: Reader
) -> None:
    tries = 0

    async def refusing(link: Link) -> None:
        nonlocal tries
        tries += 1
        raise Unrecoverable(ProtocolError("not for this layout", stage="write"))

    connects_before = _connects(sim)
    reading = await reader.run_session(REQ, refusing)
    assert tries == 1
    assert reading["error"] is not None
    assert reading["error"]["type"] == "ProtocolError"
    assert reading["error"]["message"] == "not for this layout"
    assert _connects(sim) == connects_before + 1
    assert_device_released(sim)


def _connects(sim: SimHandle) -> int:
    return sum(e["event"] == "connected" for e in sim.log())
