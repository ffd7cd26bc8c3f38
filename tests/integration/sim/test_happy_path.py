"""The simulator's normal behaviour, seen by a plain dbus-fast client."""

from __future__ import annotations

import pytest

from bluez_jk.protocol.stream import StreamDecoder
from tests.fixtures.bluez import SimHandle
from tests.integration.sim.client import ADDRESS, CHAR, CHAR1, DEV, DEVICE1, client, is_prop

pytestmark = pytest.mark.integration


async def test_startnotify_handshake_gives_all_three_frames(sim: SimHandle) -> None:
    async with client(sim.bus_address) as c:
        start = len(c.signals)
        await c.call(DEV, DEVICE1, "Connect")
        # Connect replies before services are resolved (docs/bluez.md fact 2).
        connected = next(i for i, m in enumerate(c.signals) if is_prop(m, DEV, "Connected", True))
        assert connected >= start
        assert not any(is_prop(m, DEV, "ServicesResolved", True) for m in c.signals)
        await c.wait_prop(DEV, "ServicesResolved", True)
        await c.call(CHAR, CHAR1, "StartNotify")
        assert (await c.props(CHAR, CHAR1))["Notifying"] is True
        await c.write(0x97)
        await c.write(0x96)
        decoder = StreamDecoder()
        decoded = []

        def frames() -> set[str]:
            for chunk in c.values()[len(decoded) :]:
                decoded.append(chunk)
                decoder.feed(chunk)
            return {k for k, v in decoder.got.items() if v}

        await c.wait_signal(lambda _m: frames() == {"device_info", "settings", "cell_info"})
        assert decoder.protocol == "JK02_32S"
        assert not decoder.errors
        assert max(len(v) for v in decoded) <= 131 - 3
        cells = decoder.status["cell_info"]["voltages"]
        assert len(cells) == 16
        assert all(2.5 < v < 3.7 for v in cells)
        await c.call(DEV, DEVICE1, "Disconnect")
        props = await c.props(DEV, DEVICE1)
        assert props["Connected"] is False
    events = [e["event"] for e in sim.log() if e.get("address") == ADDRESS]
    assert events[:3] == ["device_added", "connect_call", "connected"]
    assert "disconnected" in events
