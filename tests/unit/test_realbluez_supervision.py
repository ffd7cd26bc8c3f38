"""The rig's supervision timeout (`RigLink.check_supervision`, tests/realbluez/peer.py): a
connection whose other end forgot it ends after SUPERVISION_TIMEOUT_S on the end that kept it,
as on the air; a connection both ends hold is never touched."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

pytest.importorskip("bumble")

from tests.realbluez.peer import SUPERVISION_TIMEOUT_S, RigLink


@dataclass
class FakeConnection:
    handle: int
    self_address: str
    peer_address: str


@dataclass(eq=False)
class FakeController:
    name: str
    le_connections: dict[str, FakeConnection] = field(default_factory=dict)
    ended: list[tuple[str, int]] = field(default_factory=list)

    def on_le_disconnected(self, connection: FakeConnection, reason: int) -> None:
        self.ended.append((connection.peer_address, reason))
        del self.le_connections[connection.peer_address]


def connect(central: FakeController, peripheral: FakeController, c: str, p: str) -> None:
    central.le_connections[p] = FakeConnection(1, c, p)
    peripheral.le_connections[c] = FakeConnection(1, p, c)


def rig() -> tuple[RigLink, FakeController, FakeController, FakeController]:
    link = RigLink()
    host, bms1, bms2 = FakeController("hci0"), FakeController("jk1"), FakeController("jk2")
    for controller in (host, bms1, bms2):
        link.add_controller(controller)  # type: ignore[arg-type]
    return link, host, bms1, bms2


def test_a_half_connection_ends_after_the_supervision_timeout_and_a_whole_one_never() -> None:
    link, host, bms1, bms2 = rig()
    connect(host, bms1, "HOST", "BMS1")
    connect(host, bms2, "HOST", "BMS2")
    del host.le_connections["BMS2"]  # the host's controller was reset: bms2 is left alone
    link.check_supervision(100.0)
    link.check_supervision(100.0 + SUPERVISION_TIMEOUT_S - 0.5)
    assert bms2.ended == []
    link.check_supervision(100.0 + SUPERVISION_TIMEOUT_S)
    assert bms2.ended == [("HOST", 0x08)]  # Connection Timeout
    assert (bms1.ended, host.ended) == ([], [])
    assert link.supervision_timeouts == 1
    for t in range(10):
        link.check_supervision(200.0 + t)
    assert (bms1.ended, host.ended) == ([], [])  # the whole connection lives on


def test_the_central_end_too_and_a_connection_made_whole_again_is_spared() -> None:
    link, host, bms1, _ = rig()
    host.le_connections["BMS1"] = FakeConnection(3, "HOST", "BMS1")  # the board never took it
    link.check_supervision(0.0)
    bms1.le_connections["HOST"] = FakeConnection(1, "BMS1", "HOST")  # ... and then it did
    link.check_supervision(1.0)
    link.check_supervision(SUPERVISION_TIMEOUT_S + 2)
    assert host.ended == []
    del bms1.le_connections["HOST"]
    link.check_supervision(SUPERVISION_TIMEOUT_S + 3)
    link.check_supervision(2 * SUPERVISION_TIMEOUT_S + 3)
    assert host.ended == [("BMS1", 0x08)]
